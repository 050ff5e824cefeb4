//! The command line: `demo`, `serve`, `check`, `providers` and `link`, and their exit codes (0 success, 1 invalid config or
//! input, 2 runtime failure).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::account::Identifier;
use crate::config::{self, ConfigProblems, Settings};
use crate::server::{self, Application};
use crate::store::Store;
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(name = "callback-gate", version, about = "The browser side of OAuth connection flows.")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole flow on this machine with no set-up: a demo provider and a demo app page.
    Demo {
        /// Port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Keep the demo's database in this folder instead of a temporary one.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Run the service.
    Serve {
        /// Config file (default: $CALLBACK_GATE_CONFIG, else ./callback-gate.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate the config and print each connection's redirect URI.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print every provider preset: its name, display name and kind.
    Providers,
    /// Print a fresh authorization link.
    Link {
        #[arg(long)]
        connection: String,
        #[arg(long)]
        identifier: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

const INVALID: u8 = 1;
const RUNTIME: u8 = 2;

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() { ExitCode::from(INVALID) } else { ExitCode::SUCCESS };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(telemetry::flush_log_lines)
        .on_thread_stop(telemetry::flush_log_lines)
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: could not start the async runtime: {err}");
            return ExitCode::from(RUNTIME);
        }
    };
    runtime.block_on(run(cli.command))
}

fn load(path: Option<PathBuf>) -> Result<Settings, ExitCode> {
    config::load(&config::config_path(path)).map_err(|problems| report_problems(&problems))
}

fn report_problems(problems: &ConfigProblems) -> ExitCode {
    eprintln!("{problems}");
    ExitCode::from(INVALID)
}

async fn run(command: Command) -> ExitCode {
    match command {
        Command::Check { config } => check(config),
        Command::Providers => providers(),
        Command::Serve { config } => serve(config).await,
        Command::Link { connection, identifier, config } => link(config, &connection, &identifier).await,
        Command::Demo { port, data } => {
            telemetry::init(LogFormat::choose(false));
            match crate::demo::run(port, data).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(crate::demo::DemoError::Config(problems)) => report_problems(&problems),
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::from(RUNTIME)
                }
            }
        }
    }
}

fn check(path: Option<PathBuf>) -> ExitCode {
    let path = config::config_path(path);
    let settings = match config::load(&path) {
        Ok(settings) => settings,
        Err(problems) => return report_problems(&problems),
    };
    for warning in &settings.warnings {
        eprintln!("warning: {warning}");
    }
    println!("{}: valid ({:?} mode, {} connection(s))", path.display(), settings.mode, settings.connections.len());
    println!("Register these redirect URIs in each provider's console, exactly as written:");
    for connection in &settings.connections {
        if connection.kind.is_oauth() {
            println!("  {} ({}): {}", connection.name, connection.provider, connection.redirect_uri);
        } else {
            println!(
                "  {} ({}): no redirect URI; users give a credential on the hosted form",
                connection.name, connection.provider
            );
        }
    }
    ExitCode::SUCCESS
}

/// One preset per line, in columns: name, display name, kind.
fn providers() -> ExitCode {
    let presets = crate::catalog::presets();
    let name_width = presets.iter().map(|p| p.name.len()).max().unwrap_or(0);
    let display_width = presets.iter().map(|p| p.display_name.chars().count()).max().unwrap_or(0);
    for preset in presets {
        println!("{:name_width$}  {:display_width$}  {}", preset.name, preset.display_name, preset.kind.as_str());
    }
    ExitCode::SUCCESS
}

async fn serve(path: Option<PathBuf>) -> ExitCode {
    let settings = match load(path) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    telemetry::init(LogFormat::choose(settings.mode == config::Mode::Production));
    for warning in &settings.warnings {
        tracing::warn!(target: "callback_gate::config", "{warning}");
    }
    let listener = match server::bind(&settings.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(RUNTIME);
        }
    };
    let (listen, mode, public_url) = (settings.listen.clone(), settings.mode, settings.public_url.to_string());
    let app = match Application::build(settings, listener, axum::Router::new()).await {
        Ok(app) => app,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(RUNTIME);
        }
    };
    tracing::info!(target: "callback_gate::server", listen = %listen, port = app.port(), mode = ?mode, public_url = %public_url, "callback-gate is ready");
    match app.run_until(server::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(RUNTIME)
        }
    }
}

async fn link(path: Option<PathBuf>, connection: &str, identifier: &str) -> ExitCode {
    let settings = match load(path) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    if settings.connection(connection).is_none() {
        eprintln!("error: no connection named \"{}\" is configured", telemetry::escape(connection));
        return ExitCode::from(INVALID);
    }
    let identifier = match Identifier::parse(identifier) {
        Ok(identifier) => identifier,
        Err(err) => {
            eprintln!("error: identifier {err}");
            return ExitCode::from(INVALID);
        }
    };
    let store = match Store::connect(settings.database_url.expose()).await {
        Ok(store) => store,
        Err(err) => {
            eprintln!("error: could not open the store: {err}");
            return ExitCode::from(RUNTIME);
        }
    };
    let minted = crate::flow::mint_link(&settings, &store, connection, &identifier, None).await;
    store.close().await;
    match minted {
        Ok((link, expires_at)) => {
            println!("{link}");
            eprintln!("expires at {}", telemetry::rfc3339(expires_at));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: could not store the link: {err}");
            ExitCode::from(RUNTIME)
        }
    }
}

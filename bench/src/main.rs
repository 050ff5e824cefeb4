//! callback-gate-bench: the cost of a connection, measured against the machine's ceiling.
//!
//! `cargo run --release --manifest-path bench/Cargo.toml` builds callback-gate in release, then measures, in one
//! run, a minimal axum handler (the ceiling), failure pages, complete flows (at a fixed rate and as concurrency
//! grows), a slow provider, idle keep-alive connections and start-up; it writes `results.md` and `results.json`
//! under `bench/out/` and prints the Markdown. `-- --smoke` runs every scenario briefly against a debug build and
//! fails if any of them did not work (it asserts no timing).
//!
//! The same binary also plays the ceiling server and the mock provider as child processes (`ceiling`,
//! `provider`), so each is measured as a process of its own.

mod browser;
mod ceiling;
mod flow_floor;
mod load;
mod process;
mod profile;
mod provider;
mod report;
mod scenario;
mod servers;
mod webhooks;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::scenario::{Bench, ReportHeader, Settings};
use crate::servers::{Backend, PostgresAdmin};

#[derive(Debug, Parser)]
#[command(name = "callback-gate-bench", about = "Load benchmark of callback-gate against the machine's ceiling.")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    #[command(flatten)]
    run: RunOptions,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Serve the ceiling (a minimal axum handler) on a loopback port; used by the harness itself.
    #[command(hide = true)]
    Ceiling {
        /// Also serve `/floor`, logging one line per request to this file.
        #[arg(long)]
        log_file: Option<PathBuf>,
    },
    /// Serve the mock OAuth provider on a loopback port; used by the harness itself.
    #[command(hide = true)]
    Provider {
        /// How long the token endpoint waits before answering.
        #[arg(long, default_value_t = 0)]
        token_delay_ms: u64,
    },
    /// Serve the flow floor (a flow's five steps from memory) on a loopback port; used by the harness itself.
    #[command(hide = true)]
    FlowFloor {
        /// The mock provider's base URL.
        #[arg(long)]
        provider: String,
    },
    /// Webhook delivery: mint `--events` links (each writes one event) and time each event from the API's answer
    /// to a local receiver's receipt; prints the throughput and latency, and writes them to OUT/webhooks.md.
    Webhooks {
        /// Use this callback-gate binary instead of building one (release).
        #[arg(long)]
        gate_bin: Option<PathBuf>,
        /// Where the database, config, log and results go (default: bench/out/webhooks).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 2_000)]
        events: usize,
        /// Links minted at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Run callback-gate on a fresh PostgreSQL database on this server (as for the main run).
        #[arg(long, value_name = "URL")]
        database_url_admin: Option<String>,
    },
    /// Complete flows with N browsers on a fresh callback-gate (one row of the run's concurrency table), optionally
    /// profiled with `perf record` over the window.
    Flows {
        /// Use this callback-gate binary instead of building one (release).
        #[arg(long)]
        gate_bin: Option<PathBuf>,
        /// Where the database, config and log go (default: bench/out/flows).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 10)]
        browsers: usize,
        /// Seconds measured, after one second of warm-up.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Write a `perf record --call-graph dwarf` profile of callback-gate over the window to this file.
        #[arg(long)]
        perf_out: Option<PathBuf>,
        /// Run callback-gate on a fresh PostgreSQL database on this server (as for the main run).
        #[arg(long, value_name = "URL")]
        database_url_admin: Option<String>,
        /// Run the flows against the flow floor instead of callback-gate: the same requests answered from memory
        /// by a minimal service, what the machine, the harness and the provider cost a flow on their own.
        #[arg(long, conflicts_with_all = ["gate_bin", "database_url_admin", "perf_out"])]
        flow_floor: bool,
    },
    /// Instructions callback-gate spends on each step of a flow, counted by `valgrind --tool=callgrind` (one
    /// browser, SQLite): repeatable for the same binary, whatever else the machine is doing.
    Callgrind {
        /// Use this callback-gate binary instead of building one (release).
        #[arg(long)]
        gate_bin: Option<PathBuf>,
        /// Where the database, config, log and callgrind's files go (default: bench/out).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Flows counted.
        #[arg(long, default_value_t = 200)]
        flows: usize,
        /// Complete flows run before counting.
        #[arg(long, default_value_t = 20)]
        warmup: usize,
        /// Fail when the callback step costs more instructions per flow than this (CI's budget, `bench/instructions`).
        #[arg(long)]
        max_callback_instructions: Option<u64>,
    },
    /// Closed-loop load on one running server, for profiling it: `GET` the failure-page callbacks (or `--path`)
    /// on keep-alive connections and print the rate and latency.
    Load {
        /// The server, on loopback, e.g. 127.0.0.1:8080.
        #[arg(long)]
        addr: std::net::SocketAddr,
        /// A fixed path instead of the failure-page callbacks (missing and unknown state).
        #[arg(long)]
        path: Option<String>,
        /// The status every answer must have.
        #[arg(long, default_value_t = 400)]
        expect: u16,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
}

#[derive(Debug, Args)]
struct RunOptions {
    /// Every scenario, briefly, against a debug build of callback-gate: checks the harness works, times nothing.
    #[arg(long)]
    smoke: bool,
    /// Use this callback-gate binary instead of building one.
    #[arg(long)]
    gate_bin: Option<PathBuf>,
    /// Where results, configs, databases and logs go (default: bench/out/full or bench/out/smoke).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seconds measured per scenario, after its warm-up.
    #[arg(long)]
    window: Option<f64>,
    /// Keep-alive connections of the closed-loop request load (ceiling and failure pages).
    #[arg(long)]
    connections: Option<usize>,
    /// Offered rate of the fixed-rate flow scenario, flows per second.
    #[arg(long)]
    flow_rate: Option<f64>,
    /// Concurrent browsers of the closed-loop flow scenarios, comma-separated.
    #[arg(long, value_delimiter = ',')]
    browsers: Option<Vec<usize>>,
    /// Browsers whose callbacks wait on the slow token endpoint at once.
    #[arg(long)]
    slow_flows: Option<usize>,
    /// Delay of the slow token endpoint, in milliseconds.
    #[arg(long)]
    slow_delay_ms: Option<u64>,
    /// Idle keep-alive connections held open for the memory measurement.
    #[arg(long)]
    idle_connections: Option<usize>,
    /// Run callback-gate on PostgreSQL instead of SQLite: every scenario gets a fresh database created with psql on
    /// the server this admin URL reaches (postgres://user:password@host:port/postgres; the password may instead
    /// come from PGPASSWORD). The role needs CREATEDB.
    #[arg(long, value_name = "URL")]
    database_url_admin: Option<String>,
}

impl RunOptions {
    fn settings(&self) -> Settings {
        let mut settings = if self.smoke {
            Settings {
                smoke: true,
                warmup: Duration::from_millis(200),
                window: Duration::from_secs(1),
                connections: 4,
                flow_rate: 20.0,
                flow_cap: 100,
                sweep: vec![1, 10],
                slow_browsers: 20,
                slow_delay: Duration::from_millis(300),
                slow_failure_rate: 50.0,
                slow_health_rate: 20.0,
                idle_connections: 20,
                startup_runs: 2,
            }
        } else {
            Settings {
                smoke: false,
                warmup: Duration::from_secs(1),
                window: Duration::from_secs(10),
                connections: 32,
                flow_rate: 500.0,
                flow_cap: 5_000,
                sweep: vec![1, 10, 100, 1_000],
                slow_browsers: 1_000,
                slow_delay: Duration::from_secs(2),
                slow_failure_rate: 200.0,
                slow_health_rate: 100.0,
                idle_connections: 1_000,
                startup_runs: 5,
            }
        };
        if let Some(window) = self.window {
            settings.window = Duration::from_secs_f64(window.max(0.1));
        }
        if let Some(connections) = self.connections {
            settings.connections = connections.max(1);
        }
        if let Some(rate) = self.flow_rate {
            settings.flow_rate = rate.max(1.0);
        }
        if let Some(browsers) = &self.browsers {
            settings.sweep = browsers.iter().copied().filter(|&b| b > 0).collect();
        }
        if let Some(flows) = self.slow_flows {
            settings.slow_browsers = flows.max(1);
        }
        if let Some(ms) = self.slow_delay_ms {
            settings.slow_delay = Duration::from_millis(ms.max(1));
        }
        if let Some(idle) = self.idle_connections {
            settings.idle_connections = idle;
        }
        settings
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: could not start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match cli.role {
        Some(Role::Ceiling { log_file }) => serve(runtime.block_on(ceiling::serve(log_file.as_deref()))),
        Some(Role::FlowFloor { provider }) => serve(runtime.block_on(flow_floor::serve(provider))),
        Some(Role::Provider { token_delay_ms }) => {
            serve(runtime.block_on(provider::serve(Duration::from_millis(token_delay_ms))))
        }
        Some(Role::Load { addr, .. }) if !addr.ip().is_loopback() => {
            eprintln!("error: load is only ever sent to this machine's loopback addresses, not {addr}");
            ExitCode::from(2)
        }
        Some(Role::Load { addr, path, expect, connections, seconds }) => {
            let measured = runtime.block_on(scenario::profile_load(addr, path, expect, connections, seconds));
            println!("{measured}");
            ExitCode::SUCCESS
        }
        Some(Role::Webhooks { gate_bin, out, events, concurrency, database_url_admin }) => {
            match run_webhooks(gate_bin, out, events, concurrency, database_url_admin, &runtime) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Role::Flows { gate_bin, out, browsers, seconds, perf_out, database_url_admin, flow_floor }) => {
            let outcome = (|| {
                let repo = repository_root();
                let out = out.unwrap_or_else(|| repo.join("bench").join("out").join("flows"));
                std::fs::create_dir_all(&out).map_err(|err| format!("{}: {err}", out.display()))?;
                let backend = match &database_url_admin {
                    None => Backend::Sqlite,
                    Some(admin) => Backend::Postgres(PostgresAdmin::connect(admin)?),
                };
                let (binary, _) = match gate_bin {
                    Some(path) => (path, String::new()),
                    None if flow_floor => (PathBuf::new(), String::new()),
                    None => build_gate(&repo, true)?,
                };
                let mut settings = cli.run.settings();
                settings.window = Duration::from_secs_f64(seconds.max(0.1));
                let bench = Bench::new(settings, binary, out, backend);
                runtime.block_on(profile::flows(&bench, browsers.max(1), perf_out, flow_floor))
            })();
            report_text(outcome)
        }
        Some(Role::Callgrind { gate_bin, out, flows, warmup, max_callback_instructions }) => {
            let outcome = (|| {
                let repo = repository_root();
                let out = out.unwrap_or_else(|| repo.join("bench").join("out"));
                std::fs::create_dir_all(&out).map_err(|err| format!("{}: {err}", out.display()))?;
                let (binary, _) = match gate_bin {
                    Some(path) => (path, String::new()),
                    None => build_gate(&repo, true)?,
                };
                runtime.block_on(profile::callgrind(&binary, &out, flows, warmup, max_callback_instructions))
            })();
            report_text(outcome)
        }
        None => match run(&cli.run, &runtime) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Prints a measurement's text, or its error.
fn report_text(outcome: Result<String, String>) -> ExitCode {
    match outcome {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn serve(result: std::io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}

/// Tells the harness which port a server role listens on.
pub fn announce(port: u16) {
    use std::io::Write;
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening {port}");
    let _ = stdout.flush();
}

/// Resolves on SIGTERM or SIGINT.
pub async fn terminated() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn run(options: &RunOptions, runtime: &tokio::runtime::Runtime) -> Result<(), String> {
    let settings = options.settings();
    let repo = repository_root();
    let mode = if settings.smoke { "smoke" } else { "full" };
    let out = options.out.clone().unwrap_or_else(|| repo.join("bench").join("out").join(mode));
    std::fs::create_dir_all(&out).map_err(|err| format!("{}: {err}", out.display()))?;
    let limit = process::raise_open_files_limit();
    let needed = settings.slow_browsers.max(settings.idle_connections).max(*settings.sweep.iter().max().unwrap_or(&1));
    if (limit as usize) < needed * 3 + 256 {
        return Err(format!("the open-file limit is {limit}; {needed} browsers need at least {}", needed * 3 + 256));
    }

    let backend = match &options.database_url_admin {
        None => Backend::Sqlite,
        Some(admin) => Backend::Postgres(PostgresAdmin::connect(admin)?),
    };
    let (gate_binary, profile) = match &options.gate_bin {
        Some(path) => (path.clone(), "given binary".to_owned()),
        None => build_gate(&repo, !settings.smoke)?,
    };
    let header = ReportHeader {
        mode: mode.into(),
        commit: commit(&repo),
        gate_binary: profile,
        command: std::env::args().map(|arg| without_password(&arg)).collect::<Vec<_>>().join(" "),
    };
    let bench = Bench::new(settings, gate_binary, out.clone(), backend);
    let report = runtime.block_on(bench.run(header))?;

    let markdown = report.markdown();
    let json = serde_json::to_string_pretty(&report).map_err(|err| err.to_string())?;
    std::fs::write(out.join("results.md"), &markdown).map_err(|err| err.to_string())?;
    std::fs::write(out.join("results.json"), json).map_err(|err| err.to_string())?;
    println!("{markdown}");
    eprintln!("[bench] results in {}", out.display());
    if report.mode == "smoke" {
        report.works().map_err(|problems| format!("the smoke run found problems:\n{problems}"))?;
        eprintln!("[bench] smoke run: every scenario worked");
    }
    Ok(())
}

fn run_webhooks(
    gate_bin: Option<PathBuf>,
    out: Option<PathBuf>,
    events: usize,
    concurrency: usize,
    database_url_admin: Option<String>,
    runtime: &tokio::runtime::Runtime,
) -> Result<(), String> {
    let repo = repository_root();
    let out = out.unwrap_or_else(|| repo.join("bench").join("out"));
    std::fs::create_dir_all(&out).map_err(|err| format!("{}: {err}", out.display()))?;
    let backend = match &database_url_admin {
        None => Backend::Sqlite,
        Some(admin) => Backend::Postgres(PostgresAdmin::connect(admin)?),
    };
    let (binary, profile) = match gate_bin {
        Some(path) => (path, "given binary".to_owned()),
        None => build_gate(&repo, true)?,
    };
    eprintln!("[bench] webhooks: {events} events, {concurrency} links minted at once, {}", backend.describe());
    let measured = runtime.block_on(webhooks::run(&binary, &out, &backend, events, concurrency))?;
    let markdown = format!(
        "# Webhook delivery\n\ncommit {}, {profile}, {}\n\n{}",
        commit(&repo),
        process::machine(),
        measured.markdown()
    );
    std::fs::write(out.join("webhooks.md"), &markdown).map_err(|err| err.to_string())?;
    println!("{markdown}");
    if measured.duplicates > 0 {
        return Err(format!("{} events were delivered more than once", measured.duplicates));
    }
    Ok(())
}

/// A command-line argument as the report shows it: a URL's password left out (`--database-url-admin`).
fn without_password(arg: &str) -> String {
    match url::Url::parse(arg) {
        Ok(url) if url.password().is_some() => servers::without_password(&url),
        _ => arg.to_owned(),
    }
}

/// The service's repository: this package lives in its `bench/` folder.
fn repository_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or_else(|| manifest.to_path_buf(), Path::to_path_buf)
}

/// Builds callback-gate and returns its binary: `cargo build --release` for a full run; for a smoke run, the
/// debug binary exactly as `cargo test` builds it (with the dev-dependencies' features), so that after the test
/// suites the smoke run builds nothing.
fn build_gate(repo: &Path, release: bool) -> Result<(PathBuf, String), String> {
    let mut command = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(repo);
    if release {
        command.args(["build", "--locked", "--release", "--bin", "callback-gate"]);
    } else {
        command.args(["test", "--locked", "--no-run"]);
    }
    eprintln!("[bench] building callback-gate ({})", if release { "release" } else { "dev profile" });
    let status = command.status().map_err(|err| format!("cargo build: {err}"))?;
    if !status.success() {
        return Err(format!("cargo build of callback-gate failed: {status}"));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo.join("target"), |dir| repo.join(dir));
    let binary = target.join(if release { "release" } else { "debug" }).join("callback-gate");
    if !binary.exists() {
        return Err(format!("no binary at {} after the build", binary.display()));
    }
    Ok((binary, if release { "release build".into() } else { "debug build".into() }))
}

fn commit(repo: &Path) -> String {
    std::process::Command::new("git")
        .current_dir(repo)
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

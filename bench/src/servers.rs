//! The processes under measurement: callback-gate itself (its real binary, configured like the integration tests
//! configure it), and this harness's own ceiling server and mock provider re-run as child processes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::browser::CONNECTION;
use crate::load;
use crate::process::{self, Memory};

/// The client secret of the generated connection, passed in the environment like a real one.
const CLIENT_SECRET_ENV: &str = "BENCH_CLIENT_SECRET";

/// A child process serving HTTP on loopback.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
}

impl Server {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn memory(&self) -> Memory {
        process::memory(self.pid)
    }

    /// SIGTERM, then up to ten seconds for in-flight requests to finish, then SIGKILL.
    pub async fn stop(mut self) {
        // SAFETY: kill only sends a signal to our own child, identified by the pid we spawned.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// Starts this harness's binary in one of its server roles (`ceiling` or `provider ...`), and reads the port it
/// announces.
pub async fn spawn_role(args: &[&str]) -> Result<Server, String> {
    let exe = std::env::current_exe().map_err(|err| format!("own executable: {err}"))?;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("spawn {args:?}: {err}"))?;
    let pid = child.id().ok_or("the child exited at once")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .map_err(|_| format!("{args:?} did not announce its port within 10 s"))?
        .map_err(|err| format!("{args:?}: {err}"))?
        .ok_or_else(|| format!("{args:?} exited before announcing its port"))?;
    let port: u16 = line
        .strip_prefix("listening ")
        .and_then(|port| port.trim().parse().ok())
        .ok_or_else(|| format!("{args:?} announced {line:?}"))?;
    Ok(Server { child, pid, addr: SocketAddr::from(([127, 0, 0, 1], port)) })
}

/// A running callback-gate and what the harness needs to drive it.
pub struct Gate {
    pub server: Server,
    pub api_key: String,
    /// From spawning the process to its first `200` from `/readyz`.
    pub ready_after: Duration,
}

/// Where callback-gate keeps its store: a fresh SQLite file per scenario (the default), or a fresh PostgreSQL
/// database per scenario on a server the harness administers (`--database-url-admin`).
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(PostgresAdmin),
}

impl Backend {
    /// The backend's name, for the report.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres(_) => "PostgreSQL",
        }
    }

    /// One line for the report: the backend and, for PostgreSQL, the server and its durability settings.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite => "SQLite, a fresh database file per scenario".into(),
            Self::Postgres(admin) => {
                let settings = admin
                    .query(
                        &admin.url,
                        "SELECT 'PostgreSQL ' || current_setting('server_version') || ', fsync ' || current_setting('fsync') \
                         || ', synchronous_commit ' || current_setting('synchronous_commit') || ', full_page_writes ' \
                         || current_setting('full_page_writes')",
                    )
                    .unwrap_or_else(|err| format!("PostgreSQL (settings unknown: {err})"));
                format!("{settings}, at {}, a fresh database per scenario", admin.shown())
            }
        }
    }
}

/// A PostgreSQL server on which the harness creates a fresh database for every scenario, through `psql`.
#[derive(Debug, Clone)]
pub struct PostgresAdmin {
    /// The admin URL, password included (taken from `PGPASSWORD` when the URL has none).
    url: url::Url,
}

/// Prefix of the databases the harness creates; a database of the same name from an earlier run is dropped first.
const DATABASE_PREFIX: &str = "callback_gate_bench_";

impl PostgresAdmin {
    /// Checks the admin URL's form and that `psql` can reach the server with it.
    pub fn connect(admin_url: &str) -> Result<Self, String> {
        let mut url = url::Url::parse(admin_url).map_err(|err| format!("--database-url-admin is not a URL ({err})"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") || url.host_str().is_none_or(str::is_empty) {
            return Err("--database-url-admin must be postgres://user:password@host:port/database".into());
        }
        if url.password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            let _ = url.set_password(Some(&password));
        }
        let admin = Self { url };
        admin
            .query(&admin.url, "SELECT 1")
            .map_err(|err| format!("the PostgreSQL server at {}: {err}", admin.shown()))?;
        Ok(admin)
    }

    /// The admin URL with its password left out, for logs and reports.
    pub fn shown(&self) -> String {
        without_password(&self.url)
    }

    /// Drops the scenario's database from an earlier run if there is one, creates it afresh, and returns its URL.
    fn fresh_database(&self, scenario: &str) -> Result<url::Url, String> {
        let name: String = std::iter::once(DATABASE_PREFIX)
            .chain(std::iter::once(scenario))
            .collect::<String>()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .collect();
        for sql in [format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"), format!("CREATE DATABASE \"{name}\"")] {
            self.query(&self.url, &sql).map_err(|err| format!("{sql}: {err}"))?;
        }
        let mut database = self.url.clone();
        database.set_path(&format!("/{name}"));
        Ok(database)
    }

    /// The size of a database as PostgreSQL counts it (`pg_database_size`: its catalogs included).
    fn database_bytes(&self, database: &url::Url) -> Option<u64> {
        self.query(database, "SELECT pg_database_size(current_database())").ok()?.parse().ok()
    }

    /// Runs one statement with `psql` and returns its unaligned output. The password goes through `PGPASSWORD`,
    /// not the command line.
    fn query(&self, database: &url::Url, sql: &str) -> Result<String, String> {
        let output = std::process::Command::new("psql")
            .args(["--no-psqlrc", "--quiet", "--no-align", "--tuples-only", "--set", "ON_ERROR_STOP=1"])
            .arg("--dbname")
            .arg(without_password(database))
            .arg("--command")
            .arg(sql)
            .env("PGPASSWORD", database.password().unwrap_or_default())
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("psql: {err} (the PostgreSQL backend needs psql on the PATH)"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

/// A URL with its password left out.
pub fn without_password(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_password(None);
    shown.to_string()
}

/// Everything needed to start callback-gate: its binary, a folder for its config, database and log, and the
/// provider it talks to.
#[derive(Clone)]
pub struct GateSetup {
    pub binary: PathBuf,
    pub dir: PathBuf,
    pub provider: String,
    pub api_key: String,
    pub secret_key: String,
    /// Whether the binary reads a `[limits]` section (per-client rate limits); see [`LIMITS`].
    pub limits: bool,
    /// The scenario's database: `None` for a SQLite file in `dir`, else its PostgreSQL URL (password included).
    postgres: Option<(PostgresAdmin, url::Url)>,
    /// `[webhooks]`: the receiver's URL and the `whsec_` signing secret, for the webhook measurement.
    pub webhooks: Option<(String, String)>,
    /// A command the binary runs under (`valgrind --tool=callgrind ...`), for the instruction count.
    pub wrapper: Vec<String>,
}

/// The environment variable the generated config names for the webhook signing secret.
const WEBHOOK_SECRET_ENV: &str = "BENCH_WEBHOOK_SECRET";

/// Per-client rate limits raised out of the way: every simulated browser connects from 127.0.0.1, where real
/// users come from many addresses. The limiter itself still runs on every request it guards.
const LIMITS: &str = r#"
[limits]
starts_per_minute = 100000000
callbacks_per_minute = 100000000
burst = 1000000
"#;

impl GateSetup {
    /// A setup with a fresh database for the scenario in `dir`: for PostgreSQL, one named after the folder.
    pub fn new(binary: &Path, dir: &Path, provider: &str, backend: &Backend) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
        let postgres = match backend {
            Backend::Sqlite => None,
            Backend::Postgres(admin) => {
                let scenario = dir.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
                Some((admin.clone(), admin.fresh_database(&scenario)?))
            }
        };
        let mut key = [0u8; 32];
        let mut api = [0u8; 24];
        getrandom(&mut key).map_err(|err| format!("/dev/urandom: {err}"))?;
        getrandom(&mut api).map_err(|err| format!("/dev/urandom: {err}"))?;
        Ok(Self {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            provider: provider.to_owned(),
            api_key: format!("bench-{}", hex(&api)),
            secret_key: STANDARD.encode(key),
            limits: true,
            postgres,
            webhooks: None,
            wrapper: Vec::new(),
        })
    }

    /// Asks the binary (`callback-gate check`) whether it accepts the config with a `[limits]` section, and drops
    /// the section for a binary that predates it.
    pub fn detect_limits(&mut self) -> Result<(), String> {
        let mut first_problem = None;
        for limits in [true, false] {
            self.limits = limits;
            let config = self.write_config(0).map_err(|err| format!("write config: {err}"))?;
            let mut command = std::process::Command::new(&self.binary);
            command.arg("check").arg("--config").arg(&config);
            self.environment(&mut command);
            let output = command.output().map_err(|err| format!("{} check: {err}", self.binary.display()))?;
            if output.status.success() {
                return Ok(());
            }
            first_problem.get_or_insert_with(|| String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Err(format!("callback-gate check refused the generated config:\n{}", first_problem.unwrap_or_default()))
    }

    /// The environment callback-gate reads: its secrets, and logging as production runs it (JSON, the default
    /// `info` level: one line per flow outcome, successes included). Unknown `CALLBACK_GATE_*` variables make the
    /// service refuse to start, so only the ones it reads are passed.
    fn environment<C: EnvCommand>(&self, command: &mut C) {
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("CALLBACK_GATE_") {
                command.remove(&name);
            }
        }
        command.set("CALLBACK_GATE_SECRET_KEY", &self.secret_key);
        command.set("CALLBACK_GATE_API_KEYS", &self.api_key);
        command.set("CALLBACK_GATE_LOG_FORMAT", "json");
        command.set("RUST_LOG", "info");
        command.set(CLIENT_SECRET_ENV, "bench-client-secret-0123456789");
        if let Some((_, secret)) = &self.webhooks {
            command.set(WEBHOOK_SECRET_ENV, secret);
        }
        // The config file names the database without its password; the full URL comes through the environment,
        // as callback-gate's README says to pass one with a password.
        if let Some((_, database)) = &self.postgres {
            command.set("CALLBACK_GATE_DATABASE_URL", database.as_str());
        }
    }

    /// The SQLite database file (unused on PostgreSQL).
    fn database_file(&self) -> PathBuf {
        self.dir.join("callback-gate.db")
    }

    /// The `database_url` written into the config file.
    fn database_url(&self) -> String {
        match &self.postgres {
            None => format!("sqlite://{}", self.database_file().display()),
            Some((_, database)) => without_password(database),
        }
    }

    /// The database's size now: the SQLite file, or PostgreSQL's `pg_database_size` (catalogs included).
    pub fn database_bytes(&self) -> u64 {
        match &self.postgres {
            None => std::fs::metadata(self.database_file()).map(|m| m.len()).unwrap_or(0),
            Some((admin, database)) => admin.database_bytes(database).unwrap_or(0),
        }
    }

    /// The config file, written for `port`.
    fn write_config(&self, port: u16) -> std::io::Result<PathBuf> {
        let address = format!("http://127.0.0.1:{port}");
        let document = format!(
            r#"# Generated by callback-gate-bench: development mode on loopback, a mock OAuth 2.0 provider.
public_url = "{address}"
listen = "127.0.0.1:{port}"
mode = "development"
database_url = "{database_url}"
token_timeout_seconds = 10

[app]
name = "Bench App"
return_url = "{address}/settings"
allowed_return_origins = ["{address}"]

[support]
email = "support@example.com"

[[connections]]
name = "{CONNECTION}"
provider = "oauth2"
client_id = "bench-client"
client_secret_env = "{CLIENT_SECRET_ENV}"
authorization_url = "{provider}/authorize"
token_url = "{provider}/token"
scopes = ["read", "write"]
user_verification = false
{limits}{webhooks}"#,
            database_url = self.database_url(),
            provider = self.provider,
            limits = if self.limits { LIMITS } else { "" },
            webhooks = match &self.webhooks {
                Some((url, _)) => format!("\n[webhooks]\nurl = \"{url}\"\nsecret_env = \"{WEBHOOK_SECRET_ENV}\"\n"),
                None => String::new(),
            },
        );
        let path = self.dir.join("callback-gate.toml");
        std::fs::write(&path, document)?;
        Ok(path)
    }

    /// Starts `callback-gate serve` on a free loopback port and waits until `/readyz` answers 200.
    pub async fn start(&self) -> Result<Gate, String> {
        let port = free_port().map_err(|err| format!("free port: {err}"))?;
        let config = self.write_config(port).map_err(|err| format!("write config: {err}"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("callback-gate.log"))
            .map_err(|err| format!("log file: {err}"))?;
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        command.arg("serve").arg("--config").arg(&config);
        self.environment(&mut command);
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).kill_on_drop(true);
        let spawned = Instant::now();
        let mut child = command.spawn().map_err(|err| format!("spawn {}: {err}", self.binary.display()))?;
        let pid = child.id().ok_or("callback-gate exited at once")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if let Ok(status) = load::get_once(addr, "/readyz").await
                && status.is_success()
            {
                break;
            }
            if let Ok(Some(exit)) = child.try_wait() {
                return Err(format!(
                    "callback-gate exited with {exit} before it was ready; see {}",
                    self.dir.join("callback-gate.log").display()
                ));
            }
            if spawned.elapsed() > Duration::from_secs(if self.wrapper.is_empty() { 30 } else { 120 }) {
                let _ = child.kill().await;
                return Err(format!("callback-gate was not ready within {} s", spawned.elapsed().as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ready_after = spawned.elapsed();
        Ok(Gate { server: Server { child, pid, addr }, api_key: self.api_key.clone(), ready_after })
    }
}

/// What [`GateSetup::environment`] needs of a command, sync or async.
trait EnvCommand {
    fn set(&mut self, name: &str, value: &str);
    fn remove(&mut self, name: &std::ffi::OsStr);
}

impl EnvCommand for std::process::Command {
    fn set(&mut self, name: &str, value: &str) {
        self.env(name, value);
    }
    fn remove(&mut self, name: &std::ffi::OsStr) {
        self.env_remove(name);
    }
}

impl EnvCommand for Command {
    fn set(&mut self, name: &str, value: &str) {
        self.env(name, value);
    }
    fn remove(&mut self, name: &std::ffi::OsStr) {
        self.env_remove(name);
    }
}

/// A loopback port nobody listens on right now (the small race with other programs is acceptable here).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn getrandom(buffer: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buffer)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

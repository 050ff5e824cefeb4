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
}

/// Per-client rate limits raised out of the way: every simulated browser connects from 127.0.0.1, where real
/// users come from many addresses. The limiter itself still runs on every request it guards.
const LIMITS: &str = r#"
[limits]
starts_per_minute = 100000000
callbacks_per_minute = 100000000
burst = 1000000
"#;

impl GateSetup {
    pub fn new(binary: &Path, dir: &Path, provider: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut key = [0u8; 32];
        let mut api = [0u8; 24];
        getrandom(&mut key)?;
        getrandom(&mut api)?;
        Ok(Self {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            provider: provider.to_owned(),
            api_key: format!("bench-{}", hex(&api)),
            secret_key: STANDARD.encode(key),
            limits: true,
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
    }

    pub fn database(&self) -> PathBuf {
        self.dir.join("callback-gate.db")
    }

    /// The config file, written for `port`.
    fn write_config(&self, port: u16) -> std::io::Result<PathBuf> {
        let address = format!("http://127.0.0.1:{port}");
        let document = format!(
            r#"# Generated by callback-gate-bench: development mode on loopback, a mock OAuth 2.0 provider.
public_url = "{address}"
listen = "127.0.0.1:{port}"
mode = "development"
database_url = "sqlite://{db}"
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
{limits}"#,
            db = self.database().display(),
            provider = self.provider,
            limits = if self.limits { LIMITS } else { "" },
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
        let mut command = Command::new(&self.binary);
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
            if spawned.elapsed() > Duration::from_secs(30) {
                let _ = child.kill().await;
                return Err("callback-gate was not ready within 30 s".into());
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

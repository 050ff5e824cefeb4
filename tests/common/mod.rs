//! Shared by the `cli`, `logs` and `demo` test binaries: running the real `callback-gate` binary with an explicit
//! environment, bounded in time, and never leaving a child process behind.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_callback-gate");

/// Text that must never reach a user or an operator: a panic or a backtrace hint.
pub const PANIC_MARKERS: [&str; 3] = ["panicked", "RUST_BACKTRACE", "stack backtrace"];

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("random source");
    bytes
}

/// A random lower-case hex string of `2 * N` characters, safe in URLs and forms without encoding.
pub fn random_hex<const N: usize>() -> String {
    random_bytes::<N>().iter().map(|b| format!("{b:02x}")).collect()
}

/// A valid `CALLBACK_GATE_SECRET_KEY`: base64 of 32 random bytes.
pub fn secret_key() -> String {
    STANDARD.encode(random_bytes::<32>())
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// An explicit environment for a child: nothing is inherited but `PATH` (and `TMPDIR` when asked).
#[derive(Debug, Clone, Default)]
pub struct Env(pub BTreeMap<String, String>);

impl Env {
    /// Just `PATH`.
    pub fn minimal() -> Self {
        let mut vars = BTreeMap::new();
        vars.insert("PATH".to_owned(), std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()));
        Self(vars)
    }

    pub fn set(mut self, name: &str, value: impl Into<String>) -> Self {
        self.0.insert(name.to_owned(), value.into());
        self
    }

    pub fn remove(mut self, name: &str) -> Self {
        self.0.remove(name);
        self
    }

    pub fn apply(&self, command: &mut Command) {
        command.env_clear();
        command.envs(&self.0);
    }
}

/// A `callback-gate` command with exactly `env`, run in `cwd`.
pub fn command(args: &[&str], cwd: &Path, env: &Env) -> Command {
    let mut command = Command::new(BIN);
    command.args(args).current_dir(cwd).stdin(Stdio::null());
    env.apply(&mut command);
    command
}

/// Kills its child when dropped unless the child has already exited: no test leaves a process behind, even when
/// an assertion fails half way.
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child")
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child().try_wait().expect("try_wait")
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM, as a process manager would.
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed: {status}");
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && matches!(child.try_wait(), Ok(None))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The non-empty lines of stderr.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| !l.trim().is_empty()).collect()
    }

    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().filter(|l| !l.trim().is_empty()).collect()
    }

    /// Panics with everything printed when the output shows a panic or a backtrace hint.
    pub fn assert_no_panic(&self) {
        for marker in PANIC_MARKERS {
            assert!(
                !self.stdout.contains(marker) && !self.stderr.contains(marker),
                "output mentions {marker:?}:\n{self}"
            );
        }
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `command` to completion with its output captured in files under `scratch` (so a chatty child can never
/// block on a full pipe), killing it if it takes longer than `timeout`.
pub fn run(mut command: Command, scratch: &Path, timeout: Duration) -> Output {
    let name = random_hex::<6>();
    let out_path = scratch.join(format!("{name}.stdout"));
    let err_path = scratch.join(format!("{name}.stderr"));
    command.stdout(File::create(&out_path).expect("stdout file")).stderr(File::create(&err_path).expect("stderr file"));
    let mut guard = ChildGuard::new(command.spawn().expect("spawn callback-gate"));
    let status = guard.wait_timeout(timeout);
    let read = |path: &PathBuf| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let _ = std::fs::remove_file(path);
        text
    };
    let (stdout, stderr) = (read(&out_path), read(&err_path));
    let Some(status) = status else {
        panic!("callback-gate did not finish within {timeout:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    };
    Output { status, stdout, stderr }
}

/// Decodes the HTML character references askama may write into attribute values.
pub fn html_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp..];
        let Some(semi) = after.find(';').filter(|s| *s <= 10) else {
            out.push('&');
            rest = &after[1..];
            continue;
        };
        let entity = &after[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The value of the attribute `attr` in the first tag of `html` that contains `marker` (e.g. `name="state"`).
pub fn attribute_of(html: &str, marker: &str, attr: &str) -> Option<String> {
    let at = html.find(marker)?;
    let start = html[..at].rfind('<')?;
    let end = at + html[at..].find('>')?;
    let tag = &html[start..end];
    let needle = format!(" {attr}=\"");
    let value_start = tag.find(&needle)? + needle.len();
    let value_end = value_start + tag[value_start..].find('"')?;
    Some(html_unescape(&tag[value_start..value_end]))
}

/// The reference shown on a failure page (`<code data-reference>CG-XXXX-XXXX</code>`).
pub fn reference_on(page: &str) -> Option<String> {
    let start = page.find("data-reference>")? + "data-reference>".len();
    let end = start + page[start..].find('<')?;
    Some(page[start..end].trim().to_owned())
}

/// The `data-code` of a failure page.
pub fn code_on(page: &str) -> Option<String> {
    let start = page.find("data-code=\"")? + "data-code=\"".len();
    let end = start + page[start..].find('"')?;
    Some(page[start..end].to_owned())
}

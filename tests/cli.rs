//! The command line as an operator meets it: `callback-gate check`, `serve` refusing what `check` rejects, config
//! path resolution, environment overrides and `link`. Every test runs the real binary with an explicit environment.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{Env, Output, command, random_bytes, run};
use tempfile::TempDir;

const TIMEOUT: Duration = Duration::from_secs(30);
const API_KEY: &str = "cli-test-api-key-0123456789";

/// A production config that `check` accepts: two presets and a generic OAuth 2.0 connection.
const VALID: &str = r#"
public_url = "https://app.example.com"
listen = "127.0.0.1:0"
mode = "production"
database_url = "sqlite://callback-gate.db"

[limits]
trusted_proxies = ["127.0.0.1"]   # the TLS-terminating proxy in front, on this host

[app]
name = "Acme Agents"
return_url = "https://app.example.com/settings/integrations"
allowed_return_origins = ["https://app.example.com"]
user_verify_url = "https://app.example.com/connect/verify"

[support]
email = "support@example.com"
url = "https://example.com/help"
status_page_url = "https://status.example.com"

[[connections]]
name = "gmail"
provider = "google"
client_id = "gmail-client-id"
client_secret_env = "GMAIL_CLIENT_SECRET"
scopes = ["https://www.googleapis.com/auth/gmail.readonly"]

[[connections]]
name = "github"
provider = "github"
client_id = "github-client-id"
client_secret_env = "GITHUB_CLIENT_SECRET"
scopes = ["repo"]

[[connections]]
name = "acme-crm"
provider = "oauth2"
client_id = "crm-client-id"
client_secret_env = "CRM_CLIENT_SECRET"
authorization_url = "https://crm.example.net/oauth/authorize"
token_url = "https://crm.example.net/oauth/token"
scopes = ["contacts.read"]
"#;

const CONNECTIONS: [&str; 3] = ["gmail", "github", "acme-crm"];

/// Everything a valid config needs from the environment.
fn env() -> Env {
    Env::minimal()
        .set("CALLBACK_GATE_SECRET_KEY", common::secret_key())
        .set("CALLBACK_GATE_API_KEYS", API_KEY)
        .set("GMAIL_CLIENT_SECRET", "gmail-secret-value")
        .set("GITHUB_CLIENT_SECRET", "github-secret-value")
        .set("CRM_CLIENT_SECRET", "crm-secret-value")
}

/// A scratch folder holding config files; commands run in a separate empty folder unless a test says otherwise.
struct Scratch {
    dir: TempDir,
    cwd: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let cwd = dir.path().join("cwd");
        std::fs::create_dir(&cwd).expect("cwd");
        Self { dir, cwd }
    }

    fn write(&self, name: &str, document: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, document).expect("write config");
        path
    }

    fn run_in(&self, cwd: &Path, args: &[&str], env: &Env) -> Output {
        let output = run(command(args, cwd, env), self.dir.path(), TIMEOUT);
        output.assert_no_panic();
        output
    }

    fn run(&self, args: &[&str], env: &Env) -> Output {
        self.run_in(&self.cwd, args, env)
    }

    /// `check --config FILE` on `document`.
    fn check(&self, document: &str, env: &Env) -> Output {
        let path = self.write(&format!("{}.toml", common::random_hex::<4>()), document);
        self.run(&["check", "--config", path_str(&path)], env)
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Asserts `check` refused the config with exit 1 and exactly the lines matching `expected` (one fragment per
/// problem, each fragment found in its own line).
fn assert_problems(output: &Output, expected: &[&str]) {
    assert_eq!(output.code(), Some(1), "invalid config must exit 1\n{output}");
    let lines = output.stderr_lines();
    assert_eq!(lines.len(), expected.len(), "expected one line per problem ({} problems)\n{output}", expected.len());
    let mut unmatched: Vec<&str> = lines.clone();
    for fragment in expected {
        let position = unmatched.iter().position(|line| line.contains(fragment));
        match position {
            Some(i) => {
                unmatched.remove(i);
            }
            None => panic!("no line names the problem {fragment:?}\n{output}"),
        }
    }
    assert!(!output.stdout.contains("valid ("), "an invalid config must not be reported valid\n{output}");
}

#[test]
fn a_valid_production_config_prints_each_redirect_uri() {
    let scratch = Scratch::new();
    let output = scratch.check(VALID, &env());
    assert_eq!(output.code(), Some(0), "{output}");
    for name in CONNECTIONS {
        let expected = format!("https://app.example.com/connect/callback/{name}");
        let printed =
            output.stdout_lines().into_iter().any(|line| line.split_whitespace().any(|word| word == expected));
        assert!(printed, "redirect URI {expected} not printed exactly\n{output}");
    }
    assert!(
        !output.stdout.contains("callback/gmail/") && !output.stdout.contains("//connect"),
        "redirect URIs must be exact\n{output}"
    );
    for secret in ["gmail-secret-value", "github-secret-value", "crm-secret-value", API_KEY] {
        assert!(
            !output.stdout.contains(secret) && !output.stderr.contains(secret),
            "check must not print secrets\n{output}"
        );
    }
}

#[test]
fn a_trailing_slash_on_public_url_does_not_change_the_redirect_uris() {
    let scratch = Scratch::new();
    let document =
        VALID.replace(r#"public_url = "https://app.example.com""#, r#"public_url = "https://app.example.com/""#);
    let output = scratch.check(&document, &env());
    assert_eq!(output.code(), Some(0), "{output}");
    assert!(output.stdout.contains("https://app.example.com/connect/callback/gmail"), "{output}");
    assert!(!output.stdout.contains("//connect"), "{output}");
}

#[test]
fn an_unknown_provider_preset_is_named() {
    let scratch = Scratch::new();
    let document = VALID.replace(r#"provider = "github""#, r#"provider = "githb""#);
    assert_problems(&scratch.check(&document, &env()), &["unknown provider \"githb\""]);
    let output = scratch.check(&document, &env());
    assert!(output.stderr.contains("did you mean github"), "the closest preset is named\n{output}");
}

#[test]
fn a_missing_preset_parameter_is_one_line_naming_it() {
    let scratch = Scratch::new();
    let document = VALID.replace(r#"provider = "github""#, r#"provider = "zendesk""#);
    assert_problems(&scratch.check(&document, &env()), &["needs params.subdomain"]);
    let fixed =
        document.replace(r#"provider = "zendesk""#, "provider = \"zendesk\"\nparams = { subdomain = \"acme\" }");
    let output = scratch.check(&fixed, &env());
    assert_eq!(output.code(), Some(0), "{output}");
}

#[test]
fn providers_prints_every_preset_with_its_display_name_and_kind() {
    let scratch = Scratch::new();
    let output = scratch.run(&["providers"], &Env::minimal());
    assert_eq!(output.code(), Some(0), "{output}");
    let lines = output.stdout.lines().collect::<Vec<_>>();
    assert!(lines.len() >= 50, "{} presets\n{output}", lines.len());
    let mut names = std::collections::BTreeSet::new();
    for line in &lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(words.len() >= 3, "name, display name and kind: {line:?}");
        assert!(["oauth2", "oidc", "api_key", "basic"].contains(words.last().unwrap()), "{line:?}");
        assert!(names.insert(words[0]), "{} is listed once", words[0]);
    }
    for (name, kind) in [("google", "oauth2"), ("slack", "oauth2"), ("stripe", "api_key")] {
        let line = lines.iter().find(|l| l.split_whitespace().next() == Some(name)).expect(name);
        assert!(line.ends_with(kind), "{line}");
    }
}

#[test]
fn a_missing_client_secret_variable_is_named() {
    let scratch = Scratch::new();
    let output = scratch.check(VALID, &env().remove("GITHUB_CLIENT_SECRET"));
    assert_problems(&output, &["GITHUB_CLIENT_SECRET"]);
    // An empty variable is no secret either.
    let output = scratch.check(VALID, &env().set("GITHUB_CLIENT_SECRET", ""));
    assert_problems(&output, &["GITHUB_CLIENT_SECRET"]);
}

#[test]
fn a_relative_public_url_is_refused() {
    let scratch = Scratch::new();
    let document = VALID.replace(r#"public_url = "https://app.example.com""#, r#"public_url = "/connect""#);
    assert_problems(&scratch.check(&document, &env()), &["public_url \"/connect\""]);
    let document = VALID.replace(r#"public_url = "https://app.example.com""#, r#"public_url = "app.example.com""#);
    assert_problems(&scratch.check(&document, &env()), &["public_url \"app.example.com\""]);
}

#[test]
fn a_non_http_public_url_is_refused() {
    let scratch = Scratch::new();
    let document =
        VALID.replace(r#"public_url = "https://app.example.com""#, r#"public_url = "ftp://app.example.com""#);
    let output = scratch.check(&document, &env());
    assert_problems(&output, &["public_url \"ftp://app.example.com\""]);
    assert!(output.stderr.contains("https"), "the line should say what to use\n{output}");
}

#[test]
fn plain_http_public_url_is_refused_in_production_only() {
    let scratch = Scratch::new();
    let document =
        VALID.replace(r#"public_url = "https://app.example.com""#, r#"public_url = "http://app.example.com""#);
    let output = scratch.check(&document, &env());
    assert_problems(&output, &["public_url \"http://app.example.com\""]);
    assert!(output.stderr.contains("production"), "the line should say why\n{output}");

    let development = document.replace(r#"mode = "production""#, r#"mode = "development""#);
    let output = scratch.check(&development, &env());
    assert_eq!(output.code(), Some(0), "http is fine in development mode\n{output}");
    assert!(output.stdout.contains("http://app.example.com/connect/callback/gmail"), "{output}");
}

#[test]
fn duplicate_connection_names_are_refused() {
    let scratch = Scratch::new();
    let document = VALID.replace(r#"name = "acme-crm""#, r#"name = "gmail""#);
    assert_problems(&scratch.check(&document, &env()), &["duplicate connection name \"gmail\""]);
}

#[test]
fn malformed_return_origins_are_refused() {
    let scratch = Scratch::new();
    for origin in ["https://app.example.com/path", "not a url", "https://app.example.com/?q=1", "app.example.com"] {
        let document = VALID.replace(
            r#"allowed_return_origins = ["https://app.example.com"]"#,
            &format!(r#"allowed_return_origins = ["https://app.example.com", "{origin}"]"#),
        );
        let output = scratch.check(&document, &env());
        assert_problems(&output, &[&format!("\"{origin}\"")]);
        assert!(output.stderr.contains("allowed_return_origins"), "{output}");
    }
    // A trailing slash is still an origin.
    let document = VALID.replace(
        r#"allowed_return_origins = ["https://app.example.com"]"#,
        r#"allowed_return_origins = ["https://app.example.com/"]"#,
    );
    assert_eq!(scratch.check(&document, &env()).code(), Some(0));
}

#[test]
fn production_requires_user_verify_url() {
    let scratch = Scratch::new();
    let document = VALID.replace("user_verify_url = \"https://app.example.com/connect/verify\"\n", "");
    assert!(!document.contains("user_verify_url"));
    assert_problems(&scratch.check(&document, &env()), &["user_verify_url"]);
    let development = document.replace(r#"mode = "production""#, r#"mode = "development""#);
    assert_eq!(scratch.check(&development, &env()).code(), Some(0));
}

/// `VALID` with `lines` added to its top-level keys.
fn with_top_level(lines: &str) -> String {
    VALID.replace(
        "database_url = \"sqlite://callback-gate.db\"\n",
        &format!("database_url = \"sqlite://callback-gate.db\"\n{lines}\n"),
    )
}

/// Expiries are computed as `now + ttl`, which panics when the sum is past the last representable date: every
/// duration key has an upper bound, checked before anything runs, whether the value comes from the file or from
/// the environment (where it may not even fit in 64 bits).
#[test]
fn ttls_have_upper_bounds() {
    let scratch = Scratch::new();
    let at_bounds = with_top_level("link_ttl_seconds = 2592000\nflow_ttl_seconds = 3600\ntoken_timeout_seconds = 20");
    let output = scratch.check(&at_bounds, &env());
    assert_eq!(output.code(), Some(0), "values at the bounds are accepted\n{output}");

    let above = with_top_level("link_ttl_seconds = 2592001\nflow_ttl_seconds = 3601\ntoken_timeout_seconds = 21");
    let output = scratch.check(&above, &env());
    assert_problems(&output, &["link_ttl_seconds", "flow_ttl_seconds", "token_timeout_seconds"]);
    for (key, bound, value) in [
        ("link_ttl_seconds", "2592000", "2592001"),
        ("flow_ttl_seconds", "3600", "3601"),
        ("token_timeout_seconds", "20", "21"),
    ] {
        let line = output.stderr_lines().into_iter().find(|l| l.contains(key)).expect("a line per key");
        assert!(line.contains(bound) && line.contains(value), "the line names the bound and the value: {line}");
    }

    // The largest integer TOML can write; `link` used to panic minting a link with it.
    let huge = with_top_level("link_ttl_seconds = 9223372036854775807");
    let output = scratch.check(&huge, &env());
    assert_problems(&output, &["link_ttl_seconds"]);
    let path = scratch.write("huge.toml", &huge);
    let output =
        scratch.run(&["link", "--connection", "gmail", "--identifier", "u", "--config", path_str(&path)], &env());
    assert_problems(&output, &["link_ttl_seconds"]);

    // From the environment, values too large for 64 bits, negative or not numbers at all.
    let path = scratch.write("config.toml", VALID);
    let check = ["check", "--config", path_str(&path)];
    for (variable, value, key) in [
        ("CALLBACK_GATE_LINK_TTL_SECONDS", "99999999999999999999", "link_ttl_seconds"),
        ("CALLBACK_GATE_FLOW_TTL_SECONDS", "18446744073709551616", "flow_ttl_seconds"),
        ("CALLBACK_GATE_TOKEN_TIMEOUT_SECONDS", "-5", "token_timeout_seconds"),
        ("CALLBACK_GATE_FLOW_TTL_SECONDS", "1e30", "flow_ttl_seconds"),
        ("CALLBACK_GATE_LINK_TTL_SECONDS", "0", "link_ttl_seconds"),
    ] {
        let output = scratch.run(&check, &env().set(variable, value));
        assert_problems(&output, &[key]);
        assert!(output.stderr.contains(value), "the line names the value {value}\n{output}");
    }

    // serve refuses them with the same line, before listening.
    let env = env().set("CALLBACK_GATE_LINK_TTL_SECONDS", "99999999999999999999");
    let checked = scratch.run(&check, &env);
    let served = scratch.run(&["serve", "--config", path_str(&path)], &env);
    assert_eq!(served.code(), Some(1), "{served}");
    assert_eq!(served.stderr_lines(), checked.stderr_lines());
}

/// The browser carries the `auth_request_id` to `app.user_verify_url`: in production it must travel over TLS and
/// to the app's own origin. Development stays lenient (the demo and local apps use http on loopback).
#[test]
fn production_refuses_a_plain_http_or_foreign_user_verify_url() {
    let scratch = Scratch::new();
    let with_verify_url = |url: &str| {
        VALID.replace(
            r#"user_verify_url = "https://app.example.com/connect/verify""#,
            &format!(r#"user_verify_url = "{url}""#),
        )
    };
    let plain = with_verify_url("http://app.example.com/connect/verify");
    let output = scratch.check(&plain, &env());
    assert_problems(&output, &["app.user_verify_url \"http://app.example.com/connect/verify\""]);
    assert!(output.stderr.contains("https"), "the line says what to use\n{output}");

    let foreign = with_verify_url("https://verify.example.net/connect/verify");
    let output = scratch.check(&foreign, &env());
    assert_problems(&output, &["app.user_verify_url \"https://verify.example.net/connect/verify\""]);
    assert!(output.stderr.contains("allowed_return_origins"), "the line says where it may be\n{output}");

    // Plain http on loopback, as a local app has it, is refused in production too.
    let output = scratch.check(&with_verify_url("http://127.0.0.1:3000/verify"), &env());
    assert_problems(&output, &["app.user_verify_url \"http://127.0.0.1:3000/verify\""]);

    for document in [plain, foreign, with_verify_url("http://127.0.0.1:3000/verify")] {
        let development = document.replace(r#"mode = "production""#, r#"mode = "development""#);
        let output = scratch.check(&development, &env());
        assert_eq!(output.code(), Some(0), "development mode accepts it\n{output}");
    }
}

/// A production connection without user verification is allowed (an app whose links never leave its backend may
/// want it), but `check` and `serve` say what it exposes.
#[test]
fn check_warns_about_production_connections_without_user_verification() {
    let scratch = Scratch::new();
    let unverified = VALID.replace("scopes = [\"repo\"]\n", "scopes = [\"repo\"]\nuser_verification = false\n");
    let output = scratch.check(&unverified, &env());
    assert_eq!(output.code(), Some(0), "a warning is not a refusal\n{output}");
    assert!(output.stdout.contains("valid ("), "{output}");
    let lines = output.stderr_lines();
    assert_eq!(lines.len(), 1, "one warning per such connection\n{output}");
    let warning = lines[0];
    assert!(warning.starts_with("warning: "), "{warning}");
    assert!(warning.contains("connection \"github\"") && warning.contains("user_verification = false"), "{warning}");
    assert!(
        warning.contains("authorization link") && warning.contains("their own"),
        "the warning says why it matters: {warning}"
    );

    // Verification on (the production default) or development mode: nothing to say.
    let output = scratch.check(VALID, &env());
    assert_eq!(output.code(), Some(0), "{output}");
    assert!(output.stderr.trim().is_empty(), "{output}");
    let development = unverified.replace(r#"mode = "production""#, r#"mode = "development""#);
    let output = scratch.check(&development, &env());
    assert_eq!(output.code(), Some(0), "{output}");
    assert!(output.stderr.trim().is_empty(), "{output}");

    // serve logs the same warning as it starts.
    let path = scratch.write("unverified.toml", &unverified);
    let log_path = scratch.dir.path().join("serve.log");
    let mut command = command(&["serve", "--config", path_str(&path)], &scratch.cwd, &env());
    command.stdout(std::process::Stdio::null()).stderr(std::fs::File::create(&log_path).expect("log file"));
    let mut serve = common::ChildGuard::new(command.spawn().expect("spawn serve"));
    let deadline = std::time::Instant::now() + TIMEOUT;
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("callback-gate is ready") {
            break log;
        }
        assert!(serve.try_wait().is_none(), "serve exited before it was ready\n{log}");
        assert!(std::time::Instant::now() < deadline, "serve was not ready in time\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    serve.terminate();
    let logged = log.lines().find(|line| line.contains("\"WARN\"") && line.contains("user_verification = false"));
    let logged = logged.unwrap_or_else(|| panic!("serve logs the warning at start-up\n{log}"));
    assert!(logged.contains("github") && logged.contains("authorization link"), "{logged}");
}

/// Listening on loopback or a private address behind an https `public_url` means a proxy in front; without
/// `trusted_proxies` every client counts as the proxy, so one busy minute refuses everyone.
#[test]
fn check_warns_about_an_https_service_behind_a_proxy_it_does_not_trust() {
    let scratch = Scratch::new();
    let untrusting = VALID.replace("trusted_proxies = [\"127.0.0.1\"]", "");
    for listen in ["127.0.0.1:0", "10.0.0.5:8080", "[::1]:0"] {
        let document = untrusting.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{listen}\""));
        let output = scratch.check(&document, &env());
        assert_eq!(output.code(), Some(0), "a warning is not a refusal\n{output}");
        assert!(output.stdout.contains("valid ("), "{output}");
        let lines = output.stderr_lines();
        assert_eq!(lines.len(), 1, "{output}");
        assert!(lines[0].starts_with("warning: ") && lines[0].contains("limits.trusted_proxies"), "{output}");
        assert!(lines[0].contains(listen), "the warning names the address: {output}");
    }
    // Listening on every interface, or plain http in development: nothing to say.
    let public = untrusting.replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"");
    let development = untrusting
        .replace(r#"mode = "production""#, r#"mode = "development""#)
        .replace(r#"public_url = "https://app.example.com""#, r#"public_url = "http://127.0.0.1:8080""#);
    for document in [public, development] {
        let output = scratch.check(&document, &env());
        assert_eq!(output.code(), Some(0), "{output}");
        assert!(output.stderr.trim().is_empty(), "{output}");
    }
}

#[test]
fn bad_trusted_proxies_are_one_line_each() {
    let scratch = Scratch::new();
    let document = VALID.replace(
        "trusted_proxies = [\"127.0.0.1\"]",
        r#"trusted_proxies = ["10.0.0.0/8", "10.0.0.0/40", "my-proxy", "fe80::1%eth0"]"#,
    );
    let output = scratch.check(&document, &env());
    assert_problems(
        &output,
        &[
            "limits.trusted_proxies[1] \"10.0.0.0/40\"",
            "limits.trusted_proxies[2] \"my-proxy\"",
            "limits.trusted_proxies[3] \"fe80::1%eth0\"",
        ],
    );
}

#[test]
fn the_old_trust_forwarded_for_key_names_its_replacement() {
    let scratch = Scratch::new();
    let document = VALID.replace("trusted_proxies = [\"127.0.0.1\"]", "trust_forwarded_for = true");
    let output = scratch.check(&document, &env());
    assert_problems(&output, &["limits.trust_forwarded_for"]);
    assert!(output.stderr.contains("instead"), "{output}");
    assert!(output.stderr.contains("limits.trusted_proxies"), "the line names the key to use\n{output}");
}

#[test]
fn a_missing_secret_key_is_refused() {
    let scratch = Scratch::new();
    let output = scratch.check(VALID, &env().remove("CALLBACK_GATE_SECRET_KEY"));
    assert_problems(&output, &["CALLBACK_GATE_SECRET_KEY"]);
}

#[test]
fn a_short_or_malformed_secret_key_is_refused() {
    let scratch = Scratch::new();
    let short = STANDARD.encode(random_bytes::<16>());
    let output = scratch.check(VALID, &env().set("CALLBACK_GATE_SECRET_KEY", short.clone()));
    assert_problems(&output, &["CALLBACK_GATE_SECRET_KEY"]);
    assert!(!output.stderr.contains(&short), "the key itself must not be printed\n{output}");

    let output = scratch.check(VALID, &env().set("CALLBACK_GATE_SECRET_KEY", "not base64 at all!"));
    assert_problems(&output, &["CALLBACK_GATE_SECRET_KEY"]);
}

#[test]
fn api_keys_are_required() {
    let scratch = Scratch::new();
    let output = scratch.check(VALID, &env().remove("CALLBACK_GATE_API_KEYS"));
    assert_problems(&output, &["CALLBACK_GATE_API_KEYS"]);
    let output = scratch.check(VALID, &env().set("CALLBACK_GATE_API_KEYS", " , "));
    assert_problems(&output, &["CALLBACK_GATE_API_KEYS"]);
    let output = scratch.check(VALID, &env().set("CALLBACK_GATE_API_KEYS", "short"));
    assert_problems(&output, &["CALLBACK_GATE_API_KEYS"]);
    assert!(!output.stderr.contains("short,") && !output.stderr.contains("\"short\""), "{output}");
}

/// Several problems at once: each on its own line, none hidden behind the first.
fn several_problems() -> (String, Env, Vec<&'static str>) {
    let document = VALID
        .replace(r#"public_url = "https://app.example.com""#, r#"public_url = "ftp://app.example.com""#)
        .replace("user_verify_url = \"https://app.example.com/connect/verify\"\n", "")
        .replace(r#"provider = "github""#, r#"provider = "githb""#)
        .replace(r#"name = "acme-crm""#, r#"name = "gmail""#)
        .replace(
            r#"allowed_return_origins = ["https://app.example.com"]"#,
            r#"allowed_return_origins = ["not a url"]"#,
        );
    let env = env().remove("CALLBACK_GATE_API_KEYS").remove("CALLBACK_GATE_SECRET_KEY");
    let expected = vec![
        "public_url \"ftp://app.example.com\"",
        "user_verify_url",
        "unknown provider \"githb\"",
        "duplicate connection name \"gmail\"",
        "\"not a url\"",
        "CALLBACK_GATE_API_KEYS",
        "CALLBACK_GATE_SECRET_KEY",
    ];
    (document, env, expected)
}

#[test]
fn several_problems_print_one_line_each() {
    let scratch = Scratch::new();
    let (document, env, expected) = several_problems();
    let output = scratch.check(&document, &env);
    assert_problems(&output, &expected);
}

#[test]
fn the_config_path_comes_from_the_flag_then_the_environment_then_the_current_folder() {
    let scratch = Scratch::new();
    let with_origin = |origin: &str| {
        VALID.replace(r#"public_url = "https://app.example.com""#, &format!(r#"public_url = "{origin}""#))
    };
    let flag_file = scratch.write("flag.toml", &with_origin("https://flag.example.com"));
    let env_file = scratch.write("env.toml", &with_origin("https://env.example.com"));
    std::fs::write(scratch.cwd.join("callback-gate.toml"), with_origin("https://cwd.example.com"))
        .expect("write ./callback-gate.toml");
    let with_env_var = env().set("CALLBACK_GATE_CONFIG", path_str(&env_file));

    // --config wins over everything.
    let output = scratch.run(&["check", "--config", path_str(&flag_file)], &with_env_var);
    assert_eq!(output.code(), Some(0), "{output}");
    assert!(output.stdout.contains("https://flag.example.com/connect/callback/gmail"), "{output}");

    // Then $CALLBACK_GATE_CONFIG.
    let output = scratch.run(&["check"], &with_env_var);
    assert_eq!(output.code(), Some(0), "{output}");
    assert!(output.stdout.contains("https://env.example.com/connect/callback/gmail"), "{output}");

    // Then ./callback-gate.toml in the current folder.
    let output = scratch.run(&["check"], &env());
    assert_eq!(output.code(), Some(0), "{output}");
    assert!(output.stdout.contains("https://cwd.example.com/connect/callback/gmail"), "{output}");

    // A relative --config is read from the current folder.
    let output = scratch.run(&["check", "--config", "callback-gate.toml"], &env());
    assert_eq!(output.code(), Some(0), "{output}");
    assert!(output.stdout.contains("https://cwd.example.com/connect/callback/gmail"), "{output}");
}

#[test]
fn a_missing_config_file_is_one_clear_line() {
    let scratch = Scratch::new();
    let missing = scratch.dir.path().join("nowhere.toml");

    let output = scratch.run(&["check", "--config", path_str(&missing)], &env());
    assert_problems(&output, &["nowhere.toml"]);
    assert!(output.stderr.contains("not found"), "{output}");

    let output = scratch.run(&["check"], &env().set("CALLBACK_GATE_CONFIG", path_str(&missing)));
    assert_problems(&output, &["nowhere.toml"]);

    // No flag, no variable, no ./callback-gate.toml.
    let output = scratch.run(&["check"], &env());
    assert_problems(&output, &["callback-gate.toml"]);
    assert!(output.stderr.contains("not found"), "{output}");
}

/// A folder is not a config file: the one line says so, rather than listing the keys an empty config lacks
/// (which sends the operator looking for typos in a file that was never read).
#[test]
fn a_folder_given_as_the_config_is_one_clear_line() {
    let scratch = Scratch::new();
    let folder = scratch.dir.path().join("conf.d");
    std::fs::create_dir(&folder).expect("folder");
    let output = scratch.run(&["check", "--config", path_str(&folder)], &env());
    assert_problems(&output, &["conf.d"]);
    let output = scratch.run(&["serve", "--config", path_str(&folder)], &env());
    assert_problems(&output, &["conf.d"]);
}

#[test]
fn environment_overrides_change_the_printed_redirect_uris() {
    let scratch = Scratch::new();
    let path = scratch.write("config.toml", VALID);
    let output = scratch.run(
        &["check", "--config", path_str(&path)],
        &env().set("CALLBACK_GATE_PUBLIC_URL", "https://other.example.com"),
    );
    assert_eq!(output.code(), Some(0), "{output}");
    for name in CONNECTIONS {
        let expected = format!("https://other.example.com/connect/callback/{name}");
        assert!(output.stdout.contains(&expected), "{expected} not printed\n{output}");
    }
    assert!(
        !output.stdout.contains("https://app.example.com/connect/callback/"),
        "the file's public_url must be overridden\n{output}"
    );

    // An override is validated like the file: a bad value is refused.
    let output = scratch.run(
        &["check", "--config", path_str(&path)],
        &env().set("CALLBACK_GATE_PUBLIC_URL", "ftp://other.example.com"),
    );
    assert_problems(&output, &["public_url \"ftp://other.example.com\""]);
}

#[test]
fn nested_environment_overrides_are_accepted() {
    let scratch = Scratch::new();
    let path = scratch.write("config.toml", VALID);
    let output =
        scratch.run(&["check", "--config", path_str(&path)], &env().set("CALLBACK_GATE_APP__NAME", "Other App"));
    assert_eq!(output.code(), Some(0), "{output}");

    // A nested override really reaches its key: it supplies a value the file lacks.
    let without = VALID.replace("user_verify_url = \"https://app.example.com/connect/verify\"\n", "");
    let path = scratch.write("without-verify.toml", &without);
    let output = scratch.run(&["check", "--config", path_str(&path)], &env());
    assert_problems(&output, &["user_verify_url"]);
    let output = scratch.run(
        &["check", "--config", path_str(&path)],
        &env().set("CALLBACK_GATE_APP__USER_VERIFY_URL", "https://app.example.com/verify"),
    );
    assert_eq!(output.code(), Some(0), "{output}");
}

/// Every key may be overridden from the environment, including string keys whose value looks like a number or
/// a boolean (an app called "2024").
#[test]
fn string_overrides_that_look_like_numbers_stay_strings() {
    let scratch = Scratch::new();
    let path = scratch.write("config.toml", VALID);
    for name in ["2024", "true"] {
        let output = scratch.run(&["check", "--config", path_str(&path)], &env().set("CALLBACK_GATE_APP__NAME", name));
        assert_eq!(output.code(), Some(0), "CALLBACK_GATE_APP__NAME={name} must be accepted\n{output}");
    }
}

#[test]
fn serve_refuses_what_check_refuses_with_the_same_lines() {
    let scratch = Scratch::new();
    let port = common::free_port();
    let listen = format!(r#"listen = "127.0.0.1:{port}""#);
    let (several, several_env, _) = several_problems();
    let cases: Vec<(String, Env)> = vec![
        (several, several_env),
        (VALID.replace(r#"provider = "github""#, r#"provider = "githb""#), env()),
        (VALID.to_owned(), env().remove("CALLBACK_GATE_SECRET_KEY")),
        (VALID.to_owned(), env().remove("GMAIL_CLIENT_SECRET")),
    ];
    for (document, env) in cases {
        let document = document.replace(r#"listen = "127.0.0.1:0""#, &listen);
        let path = scratch.write("config.toml", &document);
        let checked = scratch.run(&["check", "--config", path_str(&path)], &env);
        assert_eq!(checked.code(), Some(1), "{checked}");
        let served = scratch.run(&["serve", "--config", path_str(&path)], &env);
        assert_eq!(served.code(), Some(1), "serve must refuse an invalid config with exit 1\n{served}");
        assert_eq!(served.stderr_lines(), checked.stderr_lines(), "serve must print the same problems as check");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nothing may listen on the configured port"
        );
        assert!(!served.stderr.contains("ready"), "{served}");
    }
}

/// A development config with a SQLite database in `dir`.
fn development_config(dir: &Path) -> String {
    VALID
        .replace(r#"public_url = "https://app.example.com""#, r#"public_url = "http://localhost:8080""#)
        .replace(r#"mode = "production""#, r#"mode = "development""#)
        .replace(
            r#"database_url = "sqlite://callback-gate.db""#,
            &format!(r#"database_url = "sqlite://{}""#, dir.join("links.db").display()),
        )
}

#[test]
fn link_prints_a_fresh_authorization_link() {
    let scratch = Scratch::new();
    let path = scratch.write("config.toml", &development_config(scratch.dir.path()));
    let args = |identifier: &'static str| {
        vec!["link", "--connection", "gmail", "--identifier", identifier, "--config", path_str(&path)]
    };
    let output = scratch.run(&args("user_123"), &env());
    assert_eq!(output.code(), Some(0), "{output}");
    let lines = output.stdout_lines();
    assert_eq!(lines.len(), 1, "stdout is the link alone\n{output}");
    let link = lines[0].trim();
    let token =
        link.strip_prefix("http://localhost:8080/connect/start/").unwrap_or_else(|| panic!("not a start link: {link}"));
    assert!(!token.is_empty() && !token.contains('/'), "{link}");
    assert!(scratch.dir.path().join("links.db").exists(), "the link is stored in the configured database");

    // Each call mints a new link.
    let again = scratch.run(&args("user_123"), &env());
    assert_eq!(again.code(), Some(0), "{again}");
    assert_ne!(again.stdout.trim(), link, "links are fresh");

    // The environment override applies to links too.
    let output = scratch.run(&args("user_123"), &env().set("CALLBACK_GATE_PUBLIC_URL", "http://127.0.0.1:9999"));
    assert_eq!(output.code(), Some(0), "{output}");
    assert!(output.stdout.trim().starts_with("http://127.0.0.1:9999/connect/start/"), "{output}");
}

#[test]
fn link_refuses_an_unknown_connection_or_an_empty_identifier() {
    let scratch = Scratch::new();
    let path = scratch.write("config.toml", &development_config(scratch.dir.path()));
    let config = path_str(&path);

    let output =
        scratch.run(&["link", "--connection", "dropbox", "--identifier", "user_123", "--config", config], &env());
    assert_eq!(output.code(), Some(1), "{output}");
    assert!(output.stdout.trim().is_empty(), "no link for an unknown connection\n{output}");
    assert!(output.stderr.contains("dropbox"), "the line names the connection\n{output}");

    let output = scratch.run(&["link", "--connection", "gmail", "--identifier", "", "--config", config], &env());
    assert_eq!(output.code(), Some(1), "{output}");
    assert!(output.stdout.trim().is_empty(), "no link for an empty identifier\n{output}");
    assert!(output.stderr.contains("identifier"), "{output}");

    // An invalid config is refused before any link is minted.
    let output = scratch.run(
        &["link", "--connection", "gmail", "--identifier", "user_123", "--config", config],
        &env().remove("CALLBACK_GATE_SECRET_KEY"),
    );
    assert_problems(&output, &["CALLBACK_GATE_SECRET_KEY"]);
}

#[test]
fn runtime_failures_exit_2() {
    let scratch = Scratch::new();
    // The configured address is taken: serve cannot listen.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let document = development_config(scratch.dir.path())
        .replace(r#"listen = "127.0.0.1:0""#, &format!(r#"listen = "127.0.0.1:{port}""#));
    let path = scratch.write("config.toml", &document);
    let output = scratch.run(&["serve", "--config", path_str(&path)], &env());
    assert_eq!(output.code(), Some(2), "a port in use is a runtime failure\n{output}");
    assert!(output.stderr.contains(&port.to_string()), "the line names the address\n{output}");
    drop(taken);

    // The database cannot be created: link fails at run time, not as invalid input.
    let document = development_config(scratch.dir.path()).replace(
        &scratch.dir.path().join("links.db").display().to_string(),
        &scratch.dir.path().join("missing/folder/links.db").display().to_string(),
    );
    let path = scratch.write("config.toml", &document);
    let output = scratch
        .run(&["link", "--connection", "gmail", "--identifier", "user_123", "--config", path_str(&path)], &env());
    assert_eq!(output.code(), Some(2), "{output}");
    assert!(output.stdout.trim().is_empty(), "{output}");
}

#[test]
fn database_urls_of_other_kinds_or_without_a_database_are_refused_by_check() {
    let scratch = Scratch::new();
    for (url, problem) in [
        (
            "mysql://gate@db.example.com/gate",
            "database_url must start with sqlite:// (one instance, embedded) or postgres://",
        ),
        ("postgres://gate@db.example.com:5432/", "database_url names no database"),
        ("postgres://gate@db.example.com:notaport/gate", "database_url is not a PostgreSQL connection URL"),
    ] {
        let document =
            VALID.replace(r#"database_url = "sqlite://callback-gate.db""#, &format!(r#"database_url = "{url}""#));
        assert_problems(&scratch.check(&document, &env()), &[problem]);
    }
    // A PostgreSQL URL is checked for its form only: check does not connect.
    let document = VALID.replace(
        r#"database_url = "sqlite://callback-gate.db""#,
        r#"database_url = "postgres://gate:secret-password-123@db.invalid:5432/gate?sslmode=require""#,
    );
    let output = scratch.check(&document, &env());
    assert_eq!(output.code(), Some(0), "{output}");
    assert!(!output.to_string().contains("secret-password-123"), "{output}");
}

/// `serve` against the test PostgreSQL server (`TEST_POSTGRES_URL`, which `scripts/test` sets) with a
/// wrong password, a database that does not exist, and a server that is not there: one line each, exit 2.
#[test]
fn postgres_that_cannot_be_used_at_start_up_is_one_line_and_exit_2() {
    let admin = std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("TEST_POSTGRES_URL names no PostgreSQL server: run ./scripts/test, or set it to the URL `scripts/postgres start DIR` prints")
    });
    let url = url::Url::parse(&admin).expect("a URL");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
    let mut wrong_password = url.clone();
    wrong_password.set_password(Some("not-the-password-42")).expect("password");
    let mut missing = url.clone();
    missing.set_path("no_such_database");
    let mut unreachable = url.clone();
    unreachable.set_port(Some(closed)).expect("port");
    let scratch = Scratch::new();
    for (database_url, problem) in [
        (wrong_password, "password authentication failed"),
        (missing, "database \"no_such_database\" does not exist"),
        (unreachable, "Connection refused"),
    ] {
        let document = development_config(scratch.dir.path()).replace(
            &format!(r#"database_url = "sqlite://{}""#, scratch.dir.path().join("links.db").display()),
            &format!(r#"database_url = "{database_url}""#),
        );
        let path = scratch.write("config.toml", &document);
        let output = scratch.run(&["serve", "--config", path_str(&path)], &env());
        assert_eq!(output.code(), Some(2), "{output}");
        let lines = output.stderr_lines();
        assert_eq!(lines.len(), 1, "one line\n{output}");
        assert!(lines[0].starts_with("error: could not open the store:") && lines[0].contains(problem), "{output}");
        assert!(!output.to_string().contains(url.password().unwrap_or("?")), "no password in the output\n{output}");
        assert!(!output.to_string().contains("not-the-password-42"), "no password in the output\n{output}");
    }
}

/// The service's workers keep log lines in batches and write them when they go idle (src/telemetry/log_lines.rs):
/// every line of a burst reaches the log while the service still runs, each one whole, and so does the last line
/// at shutdown.
#[test]
fn serve_writes_every_line_of_a_burst_whole_while_it_runs() {
    use std::io::{Read as _, Write as _};

    const CLIENTS: usize = 8;
    const REQUESTS: usize = 40;
    let scratch = Scratch::new();
    let path = scratch.write("serve.toml", VALID);
    let log_path = scratch.dir.path().join("serve.log");
    let mut command = command(&["serve", "--config", path_str(&path)], &scratch.cwd, &env());
    command.stdout(std::process::Stdio::null()).stderr(std::fs::File::create(&log_path).expect("log file"));
    let mut serve = common::ChildGuard::new(command.spawn().expect("spawn serve"));
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = std::time::Instant::now() + TIMEOUT;
    let port = loop {
        let log = read_log();
        if let Some(ready) = log.lines().find(|line| line.contains("callback-gate is ready")) {
            let ready: serde_json::Value = serde_json::from_str(ready).expect("the ready line is JSON");
            break ready["port"].as_u64().expect("the ready line names the port");
        }
        assert!(serve.try_wait().is_none(), "serve exited before it was ready\n{log}");
        assert!(std::time::Instant::now() < deadline, "serve was not ready in time\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    };

    // Callbacks without `state`, from several clients at once so that the workers are busy while they log.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            std::thread::spawn(move || {
                (0..REQUESTS)
                    .map(|_| {
                        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port as u16)).expect("connect");
                        let request = format!(
                            "GET /connect/callback/gmail HTTP/1.1\r\nHost: app.example.com\r\n\
                             X-Forwarded-For: 192.0.2.{client}\r\nConnection: close\r\n\r\n"
                        );
                        stream.write_all(request.as_bytes()).expect("send");
                        let mut response = String::new();
                        stream.read_to_string(&mut response).expect("read");
                        response
                    })
                    .filter(|response| response.starts_with("HTTP/1.1 400"))
                    .count()
            })
        })
        .collect();
    let answered: usize = clients.into_iter().map(|client| client.join().expect("client")).sum();
    assert_eq!(answered, CLIENTS * REQUESTS, "every callback gets its failure page");

    let failures = |log: &str| log.lines().filter(|line| line.contains(r#""outcome":"state_missing""#)).count();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = read_log();
        if failures(&log) >= answered {
            break log;
        }
        assert!(std::time::Instant::now() < deadline, "{} of {answered} lines logged\n{log}", failures(&log));
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(serve.try_wait().is_none(), "the lines were written by the running service");
    assert_eq!(failures(&log), answered, "one line per failure");
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|err| panic!("{err}: a line is cut\n{line}"));
    }

    serve.terminate();
    assert!(serve.wait_timeout(TIMEOUT).is_some(), "serve stops on SIGTERM");
    let log = read_log();
    assert_eq!(failures(&log), answered, "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(last.contains("shutting down") || last.contains("stopped"), "the last line is the shutdown's\n{log}");
}

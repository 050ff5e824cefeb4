//! What the operator's log may hold. The real binary runs `serve` with JSON logs captured to a file, against a
//! wiremock token endpoint; the test drives happy and failing flows over HTTP, stops the service with SIGTERM,
//! then reads every line: each flow has its outcome event, no secret appears anywhere, and hostile provider text
//! cannot forge or hide a line.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{ChildGuard, Env, code_on, random_hex, reference_on};
use reqwest::StatusCode;
use reqwest::header::{LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use tempfile::TempDir;
use url::Url;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CONNECTION: &str = "mock";
const CLIENT_ID: &str = "log-test-client";
const COOKIE: &str = "callback-gate-browser";

/// A `callback-gate serve` subprocess with its log captured, and the wiremock provider it talks to.
struct Server {
    child: ChildGuard,
    base: String,
    api_key: String,
    secret_key: String,
    client_secret: String,
    provider: MockServer,
    api: reqwest::Client,
    log_path: PathBuf,
    stdout_path: PathBuf,
    _dir: TempDir,
}

fn client(cookies: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(cookies)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .expect("http client")
}

impl Server {
    async fn start() -> Self {
        let provider = MockServer::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let api_key = format!("log-api-key-{}", random_hex::<16>());
        let secret_key = common::secret_key();
        let client_secret = format!("log-client-secret-{}", random_hex::<16>());
        let log_path = dir.path().join("serve.log");
        let stdout_path = dir.path().join("serve.stdout");
        for _attempt in 0..3 {
            let port = common::free_port();
            let base = format!("http://127.0.0.1:{port}");
            let document = format!(
                r#"
public_url = "{base}"
listen = "127.0.0.1:{port}"
mode = "development"
database_url = "sqlite://{db}"
token_timeout_seconds = 3

[app]
name = "Log Test App"
return_url = "{base}/settings"
user_verify_url = "{base}/verify"

[support]
email = "support@example.com"

[[connections]]
name = "{CONNECTION}"
provider = "oauth2"
client_id = "{CLIENT_ID}"
client_secret_env = "MOCK_CLIENT_SECRET"
authorization_url = "{mock}/authorize"
token_url = "{mock}/token"
scopes = ["read", "write"]
user_verification = false
"#,
                db = dir.path().join("logs.db").display(),
                mock = provider.uri(),
            );
            let config = dir.path().join("callback-gate.toml");
            std::fs::write(&config, document).expect("write config");
            let env = Env::minimal()
                .set("CALLBACK_GATE_SECRET_KEY", secret_key.clone())
                .set("CALLBACK_GATE_API_KEYS", api_key.clone())
                .set("MOCK_CLIENT_SECRET", client_secret.clone())
                .set("CALLBACK_GATE_LOG_FORMAT", "json");
            let mut command =
                common::command(&["serve", "--config", config.to_str().expect("utf-8 path")], dir.path(), &env);
            command
                .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
                .stderr(std::fs::File::create(&log_path).expect("log file"));
            let mut child = ChildGuard::new(command.spawn().expect("spawn callback-gate serve"));
            let api = client(false);
            let deadline = Instant::now() + Duration::from_secs(20);
            let ready = loop {
                if child.try_wait().is_some() {
                    break false;
                }
                let probe = api.get(format!("{base}/readyz")).timeout(Duration::from_millis(500)).send().await;
                if probe.is_ok_and(|r| r.status() == StatusCode::OK) {
                    break true;
                }
                assert!(
                    Instant::now() < deadline,
                    "serve did not become ready within 20 s\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            if ready {
                return Self {
                    child,
                    base,
                    api_key,
                    secret_key,
                    client_secret,
                    provider,
                    api,
                    log_path,
                    stdout_path,
                    _dir: dir,
                };
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            // Another process may have taken the port between our probe and the service's bind: try another.
            assert!(log.contains("could not listen"), "serve exited before it was ready\n{log}");
        }
        panic!("serve could not bind a free port in three attempts");
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Mints a link through the API and starts its flow in a fresh browser.
    async fn begin(&self, identifier: &str) -> Flow {
        let response = self
            .api
            .post(self.url("/v1/authorization-links"))
            .bearer_auth(&self.api_key)
            .json(&json!({ "connection": CONNECTION, "identifier": identifier }))
            .send()
            .await
            .expect("mint link");
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        let link = body["link"].as_str().expect("link").to_owned();
        let link_token = link.rsplit('/').next().expect("link token").to_owned();
        let browser = client(true);
        let response = browser.get(&link).send().await.expect("open link");
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "the link redirects to the provider");
        let cookie = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix(&format!("{COOKIE}=")))
            .and_then(|v| v.split(';').next())
            .expect("browser-binding cookie")
            .to_owned();
        let location = response.headers()[LOCATION].to_str().expect("ascii").to_owned();
        let authorize = Url::parse(&location).expect("absolute provider URL");
        let state = authorize
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .expect("state in the authorization URL");
        Flow { browser, state, link_token, cookie }
    }

    async fn callback(&self, browser: &reqwest::Client, query: &str) -> reqwest::Response {
        self.callback_on(browser, CONNECTION, query).await
    }

    async fn callback_on(&self, browser: &reqwest::Client, connection: &str, query: &str) -> reqwest::Response {
        browser.get(self.url(&format!("/connect/callback/{connection}?{query}"))).send().await.expect("callback")
    }

    /// Follows the callback's 303 to the result page.
    async fn follow(&self, browser: &reqwest::Client, response: reqwest::Response) -> (StatusCode, String) {
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "the callback redirects to the result page");
        let location = response.headers()[LOCATION].to_str().expect("ascii").to_owned();
        assert!(location.starts_with("/connect/result/"), "unexpected location {location}");
        let page = browser.get(self.url(&location)).send().await.expect("result page");
        (page.status(), page.text().await.expect("body"))
    }

    /// The token endpoint answers `response` to the exchange of `code`, and only to it.
    async fn token_for(&self, code: &str, response: ResponseTemplate) {
        Mock::given(method("POST"))
            .and(path("/token"))
            .and(body_string_contains(format!("code={code}")))
            .respond_with(response)
            .expect(1)
            .mount(&self.provider)
            .await;
    }

    /// SIGTERM, then the exit status (graceful shutdown exits 0).
    async fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.child.terminate();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).expect("log file")
    }
}

struct Flow {
    browser: reqwest::Client,
    state: String,
    link_token: String,
    cookie: String,
}

fn unique(label: &str) -> String {
    format!("{label}-{}", random_hex::<16>())
}

/// Every line of the log as JSON; panics on a line that is not a JSON object.
fn json_lines(log: &str) -> Vec<serde_json::Map<String, Value>> {
    log.split('\n')
        .filter(|line| !line.is_empty())
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(map)) => map,
            _ => panic!("log line is not a JSON object: {line:?}"),
        })
        .collect()
}

/// The secrets a started flow holds: its state, the browser's cookie and the link's token.
fn remember(flow: &Flow, secrets: &mut Vec<(String, String)>) {
    secrets.push(("state".into(), flow.state.clone()));
    secrets.push(("browser cookie".into(), flow.cookie.clone()));
    secrets.push(("link token".into(), flow.link_token.clone()));
    if let Some((_, signature)) = flow.link_token.split_once('.') {
        secrets.push(("link signature".into(), signature.to_owned()));
    }
}

fn is_reference(value: &str) -> bool {
    callback_gate::telemetry::is_reference(value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log() {
    let mut server = Server::start().await;
    let mut secrets: Vec<(String, String)> = vec![
        ("client secret".into(), server.client_secret.clone()),
        ("API key".into(), server.api_key.clone()),
        ("secret key".into(), server.secret_key.clone()),
        ("Basic credentials".into(), STANDARD.encode(format!("{CLIENT_ID}:{}", server.client_secret))),
    ];
    // (outcome, reference shown to the user) for every flow that ended.
    let mut expected: Vec<(&str, Option<String>)> = Vec::new();

    // The happy path.
    let happy = server.begin("user_happy").await;
    remember(&happy, &mut secrets);
    let code = unique("code");
    let (access, refresh) = (unique("at-secret"), unique("rt-secret"));
    secrets.extend([
        ("code".into(), code.clone()),
        ("access token".into(), access.clone()),
        ("refresh token".into(), refresh.clone()),
    ]);
    server
        .token_for(
            &code,
            ResponseTemplate::new(200).set_body_json(json!({
                "access_token": access, "refresh_token": refresh, "token_type": "Bearer",
                "expires_in": 3600, "scope": "read write"
            })),
        )
        .await;
    let happy_query = format!("code={code}&state={}", happy.state);
    let response = server.callback(&happy.browser, &happy_query).await;
    let (status, page) = server.follow(&happy.browser, response).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("data-outcome=\"connected\""), "{page}");
    expected.push(("connected", None));

    // The user says no at the provider.
    let denied = server.begin("user_denied").await;
    remember(&denied, &mut secrets);
    let response = server
        .callback(
            &denied.browser,
            &format!("error=access_denied&error_description=The+user+said+no&state={}", denied.state),
        )
        .await;
    let (_, page) = server.follow(&denied.browser, response).await;
    assert_eq!(code_on(&page).as_deref(), Some("access_denied"));
    expected.push(("access_denied", reference_on(&page)));

    // The token endpoint refuses the code, and its error body carries token-shaped values.
    let grant = server.begin("user_grant").await;
    remember(&grant, &mut secrets);
    let code = unique("code");
    let (leak_access, leak_refresh) = (unique("leak-at"), unique("leak-rt"));
    secrets.extend([
        ("code".into(), code.clone()),
        ("leaked access token".into(), leak_access.clone()),
        ("leaked refresh token".into(), leak_refresh.clone()),
    ]);
    server
        .token_for(
            &code,
            ResponseTemplate::new(400).set_body_json(json!({
                "error": "invalid_grant",
                "error_description": "The authorization code is invalid",
                "access_token": leak_access,
                "refresh_token": leak_refresh,
            })),
        )
        .await;
    let response = server.callback(&grant.browser, &format!("code={code}&state={}", grant.state)).await;
    let (_, page) = server.follow(&grant.browser, response).await;
    assert_eq!(code_on(&page).as_deref(), Some("failed_to_exchange_token"));
    expected.push(("failed_to_exchange_token", reference_on(&page)));

    // The token endpoint fails.
    let broken = server.begin("user_broken").await;
    remember(&broken, &mut secrets);
    let code = unique("code");
    secrets.push(("code".into(), code.clone()));
    server.token_for(&code, ResponseTemplate::new(500).set_body_string("upstream exploded")).await;
    let response = server.callback(&broken.browser, &format!("code={code}&state={}", broken.state)).await;
    let (_, page) = server.follow(&broken.browser, response).await;
    assert_eq!(code_on(&page).as_deref(), Some("failed_to_exchange_token"));
    expected.push(("failed_to_exchange_token", reference_on(&page)));

    // A state that matches no flow.
    let (code, state) = (unique("code"), unique("state"));
    secrets.extend([("code".into(), code.clone()), ("unknown state".into(), state.clone())]);
    let response = server.callback(&happy.browser, &format!("code={code}&state={state}")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let page = response.text().await.expect("body");
    assert_eq!(code_on(&page).as_deref(), Some("state_invalid"));
    expected.push(("state_invalid", reference_on(&page)));

    // The happy callback replayed.
    let response = server.callback(&happy.browser, &happy_query).await;
    assert!(response.status().is_client_error(), "a replay is refused: {}", response.status());
    let page = response.text().await.expect("body");
    assert_eq!(code_on(&page).as_deref(), Some("flow_already_used"));
    expected.push(("flow_already_used", reference_on(&page)));

    // A wrong API key.
    let wrong_key = unique("wrong-api-key");
    secrets.push(("wrong API key".into(), wrong_key.clone()));
    let response = server
        .api
        .post(server.url("/v1/authorization-links"))
        .bearer_auth(&wrong_key)
        .json(&json!({ "connection": CONNECTION, "identifier": "user_x" }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // What the provider received: the PKCE verifiers and the client credentials.
    let received = server.provider.received_requests().await.expect("recording on");
    let mut verifiers = 0;
    for request in &received {
        for (key, value) in url::form_urlencoded::parse(&request.body) {
            if key == "code_verifier" {
                verifiers += 1;
                secrets.push(("PKCE verifier".into(), value.into_owned()));
            }
        }
        if let Some(authorization) = request.headers.get("authorization") {
            let value = authorization.to_str().expect("ascii");
            secrets.push(("Authorization header".into(), value.to_owned()));
        }
    }
    assert_eq!(verifiers, 3, "three codes were exchanged");
    server.provider.verify().await;

    let status = server.stop().await;
    let log = server.log();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "SIGTERM must shut down gracefully with exit 0 within 10 s (status {status:?})\n{log}"
    );

    // Nothing secret, anywhere: not in the log, not on stdout.
    let stdout = std::fs::read_to_string(&server.stdout_path).unwrap_or_default();
    for (label, secret) in &secrets {
        assert!(secret.len() >= 16, "{label} is too short to scan for: {secret:?}");
        assert!(!log.contains(secret.as_str()), "the log contains the {label} {secret:?}\n{log}");
        assert!(!stdout.contains(secret.as_str()), "stdout contains the {label}");
    }

    // Every line is JSON, and every flow has its one outcome event.
    let lines = json_lines(&log);
    assert!(!lines.is_empty(), "the log is empty");
    let events: Vec<_> = lines.iter().filter(|l| l.contains_key("outcome")).collect();
    for event in &events {
        assert_eq!(event["connection"], json!(CONNECTION), "{event:?}");
        assert!(event["latency_ms"].is_number(), "latency_ms is a number: {event:?}");
    }
    for (outcome, reference) in &expected {
        let found = events.iter().any(|event| {
            event["outcome"] == json!(outcome)
                && match reference {
                    Some(reference) => event.get("reference") == Some(&json!(reference)),
                    None => true,
                }
        });
        assert!(found, "no outcome event {outcome} (reference {reference:?})\n{log}");
        if let Some(reference) = reference {
            assert!(is_reference(reference), "the page shows a reference: {reference}");
        }
    }
    for event in events.iter().filter(|e| e["outcome"] != json!("connected")) {
        let reference = event.get("reference").and_then(Value::as_str).unwrap_or_default();
        assert!(is_reference(reference), "a failure event carries its reference: {event:?}");
    }
    assert!(events.iter().any(|e| e["outcome"] == json!("connected")));
    assert_eq!(events.len(), expected.len(), "exactly one outcome event per flow\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_provider_text_cannot_forge_or_hide_a_line() {
    let mut server = Server::start().await;
    let hostile = "first line\r\n{\"level\":\"ERROR\",\"message\":\"forged\"}\n\u{1b}[31mred\u{1b}[0m\u{2028}after\u{2029}end\u{202e}desrever\u{7}\u{0}";
    let encoded: String = url::form_urlencoded::byte_serialize(hostile.as_bytes()).collect();
    let escaped = callback_gate::telemetry::escape(hostile);

    // On a real flow: the error is recorded with its description.
    let flow = server.begin("user_hostile").await;
    let response = server
        .callback(
            &flow.browser,
            &format!("error=access_denied&error_description={encoded}&error_uri={encoded}&state={}", flow.state),
        )
        .await;
    let (_, page) = server.follow(&flow.browser, response).await;
    assert_eq!(code_on(&page).as_deref(), Some("access_denied"));
    let denied_reference = reference_on(&page).expect("reference");

    // Without a state: still logged with the description.
    let response = server.callback(&flow.browser, &format!("error=access_denied&error_description={encoded}")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let page = response.text().await.expect("body");
    assert_eq!(code_on(&page).as_deref(), Some("state_missing"));

    // A hostile connection name in the path.
    let response = server.callback_on(&flow.browser, "evil%0D%0Aline%1B%5B31m%E2%80%A8", "code=x&state=y").await;
    assert!(response.status().is_client_error(), "{}", response.status());

    let status = server.stop().await;
    let log = server.log();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "graceful shutdown\n{log}");

    // No raw control or line-breaking character inside any line.
    for (i, line) in log.split('\n').enumerate() {
        for (c, name) in [
            ('\r', "CR"),
            ('\u{1b}', "ESC"),
            ('\u{7}', "BEL"),
            ('\u{0}', "NUL"),
            ('\u{2028}', "LINE SEPARATOR"),
            ('\u{2029}', "PARAGRAPH SEPARATOR"),
            ('\u{202e}', "RIGHT-TO-LEFT OVERRIDE"),
        ] {
            assert!(!line.contains(c), "log line {i} holds a raw {name}: {line:?}");
        }
    }
    let lines = json_lines(&log);
    assert!(!lines.iter().any(|l| l.get("message") == Some(&json!("forged"))), "a line was forged\n{log}");

    // The escaped form is there, readable.
    let denied = lines
        .iter()
        .find(|l| l.get("reference") == Some(&json!(denied_reference)))
        .unwrap_or_else(|| panic!("no outcome event for {denied_reference}\n{log}"));
    assert_eq!(denied["outcome"], json!("access_denied"));
    assert_eq!(denied["error_description"], json!(escaped), "{denied:?}");
    assert_eq!(denied["error_uri"], json!(escaped), "{denied:?}");

    let missing = lines
        .iter()
        .find(|l| l.get("outcome") == Some(&json!("state_missing")))
        .unwrap_or_else(|| panic!("no state_missing event\n{log}"));
    assert_eq!(missing["error_description"], json!(escaped), "{missing:?}");

    let unknown = lines
        .iter()
        .find(|l| l.get("outcome") == Some(&json!("connection_unknown")))
        .unwrap_or_else(|| panic!("no connection_unknown event\n{log}"));
    let detail = unknown["detail"].as_str().expect("detail");
    assert!(
        detail.contains(&callback_gate::telemetry::escape("evil\r\nline\u{1b}[31m\u{2028}")),
        "the connection name is escaped in the detail: {detail:?}"
    );
}

/// A 400 with `"error":"invalid_grant"` is an OAuth error response (RFC 6749 section 5.2) whatever else its body
/// holds: the operator's log must say what the provider said, not call the answer malformed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_code_is_logged_as_the_providers_error() {
    let mut server = Server::start().await;
    let mut references = Vec::new();
    for (identifier, extra) in [
        ("user_plain", json!({})),
        ("user_extra", json!({ "access_token": unique("leak-at"), "refresh_token": unique("leak-rt") })),
    ] {
        let flow = server.begin(identifier).await;
        let code = unique("code");
        let mut body = json!({ "error": "invalid_grant", "error_description": "The authorization code is invalid" });
        for (key, value) in extra.as_object().expect("object") {
            body[key] = value.clone();
        }
        server.token_for(&code, ResponseTemplate::new(400).set_body_json(body)).await;
        let response = server.callback(&flow.browser, &format!("code={code}&state={}", flow.state)).await;
        let (_, page) = server.follow(&flow.browser, response).await;
        assert_eq!(code_on(&page).as_deref(), Some("failed_to_exchange_token"));
        references.push((identifier, reference_on(&page).expect("reference")));
    }
    let status = server.stop().await;
    let log = server.log();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "graceful shutdown\n{log}");
    let lines = json_lines(&log);
    for (identifier, reference) in references {
        let event = lines
            .iter()
            .find(|l| l.get("reference") == Some(&json!(reference)))
            .unwrap_or_else(|| panic!("no outcome event for {reference}\n{log}"));
        assert_eq!(event["provider_status"], json!(400), "{event:?}");
        assert_eq!(
            (event.get("cause"), event.get("error")),
            (Some(&json!("invalid_grant")), Some(&json!("invalid_grant"))),
            "{identifier}: a 400 invalid_grant answer must be logged with cause and error invalid_grant: {event:?}"
        );
    }
}

/// SIGTERM while a callback waits on the token endpoint: the callback still finishes and stores the account, then
/// the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_in_flight_finishes_during_shutdown() {
    let mut server = Server::start().await;
    let flow = server.begin("user_in_flight").await;
    let tokens = json!({ "access_token": "in-flight-access-token", "token_type": "Bearer" });
    server
        .token_for(
            "in-flight-code",
            ResponseTemplate::new(200).set_body_json(tokens).set_delay(Duration::from_millis(1500)),
        )
        .await;
    let url = server.url(&format!("/connect/callback/{CONNECTION}?code=in-flight-code&state={}", flow.state));
    let browser = flow.browser.clone();
    let in_flight = tokio::spawn(async move { browser.get(url).send().await });
    // Let the callback reach the token endpoint, then ask the process to stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = server.stop().await;
    let response = in_flight.await.expect("task").expect("the in-flight callback was answered");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(response.headers()[LOCATION].to_str().unwrap().starts_with("/connect/result/"));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "graceful shutdown\n{}", server.log());
    let log = server.log();
    assert!(log.contains("\"outcome\":\"connected\""), "{log}");
    assert!(log.contains("shutting down"), "{log}");
}

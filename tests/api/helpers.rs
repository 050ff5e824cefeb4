//! Spawning the app for a test, and a browser that keeps its own cookies and does not follow redirects.

#![allow(dead_code)]

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use callback_gate::config;
use callback_gate::server::{AppState, Application};
use callback_gate::store::{Store, Table};
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use serde_json::{Value, json};
use url::Url;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const CLIENT_SECRET: &str = "test-client-secret-do-not-log-0123";
pub const CONNECTION: &str = "mock";

/// What a test can change about the app it spawns.
#[derive(Clone)]
pub struct Options {
    pub mode: &'static str,
    /// Extra TOML appended to the `mock` connection (e.g. `issuer = "..."`).
    pub connection_extra: String,
    pub flow_ttl_seconds: u64,
    pub link_ttl_seconds: u64,
    pub token_timeout_seconds: u64,
    /// Overrides `public_url` (the app still listens on plain http on loopback, as behind a proxy).
    pub public_url: Option<String>,
    /// Extra TOML appended after the connections (e.g. another `[[connections]]`).
    pub extra_config: String,
    /// `user_verification` of the mock connection.
    pub user_verification: bool,
    /// Whether `app.user_verify_url` is configured.
    pub user_verify_url: bool,
    /// Base URL of the providers' endpoints instead of the wiremock server (production mode needs https; such a
    /// provider is never contacted, so only flows that end before the token request can use it).
    pub provider_base: Option<String>,
    /// The `[limits]` section. Tests run many flows from one address, so the default is generous.
    pub limits: String,
    /// Use this database (a `database_url`) instead of a fresh one, to restart an app on the same data. A fresh
    /// PostgreSQL database is dropped with the app or [`TestDatabase`] that made it, which must outlive this one.
    pub database: Option<String>,
    /// `CALLBACK_GATE_SECRET_KEY` instead of a fresh random key.
    pub secret_key: Option<String>,
    /// `CALLBACK_GATE_SECRET_KEY_PREVIOUS`.
    pub previous_keys: Option<String>,
    /// Routes merged into the app (e.g. one that panics).
    pub extra_routes: Option<axum::Router<AppState>>,
    /// Shortens the request timeout.
    pub request_timeout: Option<std::time::Duration>,
    /// Shortens the header read timeout (which also closes idle connections).
    pub header_read_timeout: Option<std::time::Duration>,
    /// Shuts the app down gracefully when cancelled (default: it runs until the test ends).
    pub shutdown: Option<tokio_util::sync::CancellationToken>,
    /// `scopes` of the mock connection, as TOML.
    pub scopes: &'static str,
    /// More environment variables the config may name (e.g. a webhook secret).
    pub secrets: Vec<(&'static str, String)>,
}

impl Options {
    /// Production mode behind an https proxy (`https://app.example.com`), with https provider endpoints that are
    /// never contacted (wiremock serves plain http): for flows that end before the token request.
    pub fn production() -> Self {
        Self {
            mode: "production",
            public_url: Some("https://app.example.com".into()),
            provider_base: Some("https://provider.example.com".into()),
            ..Self::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mode: "development",
            connection_extra: String::new(),
            flow_ttl_seconds: 600,
            link_ttl_seconds: 86_400,
            token_timeout_seconds: 2,
            public_url: None,
            extra_config: String::new(),
            user_verification: false,
            user_verify_url: true,
            provider_base: None,
            limits: "starts_per_minute = 100000\ncallbacks_per_minute = 100000\nburst = 100000".into(),
            database: None,
            secret_key: None,
            previous_keys: None,
            extra_routes: None,
            request_timeout: None,
            header_read_timeout: None,
            shutdown: None,
            scopes: r#"["read", "write"]"#,
            secrets: Vec::new(),
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    /// The port of `metrics.listen`, where the test configured one.
    pub metrics_port: Option<u16>,
    pub api_key: String,
    pub secret_key: String,
    pub provider: MockServer,
    pub state: AppState,
    pub store: Store,
    pub api: reqwest::Client,
    /// The app's `database_url`: a fresh SQLite file, or a fresh PostgreSQL database when
    /// `TEST_POSTGRES_URL` names a server (see [`fresh_database`]).
    pub database_url: String,
    /// The fresh database this app was spawned on, dropped with it; `None` when `Options::database` named one.
    database: Option<TestDatabase>,
    _dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(Options::default()).await
}

/// Where this test binary's log and the secrets its tests used are written; `scripts/scan-logs` checks after the
/// run that no secret reached the log.
pub fn scan_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("secret-scan")
}

/// Captures the log of every app this binary spawns, as JSON lines, like production.
fn capture_logs() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let dir = scan_dir();
        std::fs::create_dir_all(&dir).expect("scan dir");
        let file = std::fs::File::create(dir.join(format!("api-{}.log", std::process::id()))).expect("log file");
        callback_gate::telemetry::init_with_writer(
            callback_gate::telemetry::LogFormat::Json,
            std::sync::Mutex::new(file),
        );
    });
}

/// The log lines this test binary's apps wrote so far (JSON, one event per line) that contain `marker`.
pub fn log_lines_with(marker: &str) -> Vec<Value> {
    let path = scan_dir().join(format!("api-{}.log", std::process::id()));
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter(|line| line.contains(marker)).filter_map(|line| serde_json::from_str(line).ok()).collect()
}

/// Remembers a secret a test used, so the log scan can look for it. Short values (test codes like "c") would match
/// anywhere and are not recorded.
pub fn record_secret(value: &str) {
    use std::io::Write as _;
    static FILE: std::sync::OnceLock<std::sync::Mutex<std::fs::File>> = std::sync::OnceLock::new();
    if value.len() < 12 {
        return;
    }
    let file = FILE.get_or_init(|| {
        let dir = scan_dir();
        std::fs::create_dir_all(&dir).expect("scan dir");
        let path = dir.join(format!("api-{}.secrets", std::process::id()));
        std::sync::Mutex::new(std::fs::File::create(path).expect("secrets file"))
    });
    let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let _ = writeln!(file, "{value}");
}

pub async fn spawn_with(options: Options) -> TestApp {
    capture_logs();
    let provider = MockServer::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let address = format!("http://127.0.0.1:{port}");
    let public_url = options.public_url.clone().unwrap_or_else(|| address.clone());
    let (database_url, database) = match options.database.clone() {
        Some(url) => (url, None),
        None => {
            let database = fresh_database(dir.path()).await;
            (database.url.clone(), Some(database))
        }
    };
    let document = format!(
        r#"
public_url = "{public_url}"
listen = "127.0.0.1:{port}"
mode = "{mode}"
database_url = "{database_url}"
flow_ttl_seconds = {flow_ttl}
link_ttl_seconds = {link_ttl}
token_timeout_seconds = {token_timeout}

[app]
name = "Test App"
return_url = "{address}/settings"
allowed_return_origins = ["{address}", "https://app.example.com"]
{verify_url}

[support]
email = "support@example.com"
status_page_url = "https://status.example.com"

[[connections]]
name = "{CONNECTION}"
provider = "oauth2"
client_id = "test-client"
client_secret_env = "MOCK_CLIENT_SECRET"
authorization_url = "{mock}/authorize"
token_url = "{mock}/token"
scopes = {scopes}
user_verification = {user_verification}
{extra}

[[connections]]
name = "other"
provider = "oauth2"
client_id = "other-client"
client_secret_env = "MOCK_CLIENT_SECRET"
authorization_url = "{mock}/other/authorize"
token_url = "{mock}/other/token"
scopes = ["read"]
user_verification = false

{extra_config}

[limits]
{limits}
"#,
        limits = options.limits,
        scopes = options.scopes,
        extra_config = options.extra_config.replace("{mock}", &provider.uri()),
        user_verification = options.user_verification,
        verify_url = match (options.user_verify_url, options.mode) {
            (false, _) => String::new(),
            // Production refuses plain http here; no production test follows the link.
            (true, "production") => "user_verify_url = \"https://app.example.com/verify\"".to_owned(),
            (true, _) => format!("user_verify_url = \"{address}/verify\""),
        },
        mode = options.mode,
        flow_ttl = options.flow_ttl_seconds,
        link_ttl = options.link_ttl_seconds,
        token_timeout = options.token_timeout_seconds,
        mock = options.provider_base.clone().unwrap_or_else(|| provider.uri()),
        extra = options.connection_extra.replace("{mock}", &provider.uri()),
    );
    let api_key = format!("test-api-key-{}", callback_gate::crypto::random_token::<16>());
    let secret_key = options.secret_key.clone().unwrap_or_else(|| STANDARD.encode(rand_bytes()));
    let mut secrets: HashMap<&str, String> = HashMap::from([
        ("MOCK_CLIENT_SECRET", CLIENT_SECRET.to_owned()),
        ("CALLBACK_GATE_API_KEYS", api_key.clone()),
        ("CALLBACK_GATE_SECRET_KEY", secret_key.clone()),
    ]);
    for secret in [api_key.as_str(), secret_key.as_str(), CLIENT_SECRET, "at-secret-value-0001", "rt-secret-value-0001"]
    {
        record_secret(secret);
    }
    for (name, value) in &options.secrets {
        secrets.insert(name, value.clone());
    }
    if let Some(previous) = &options.previous_keys {
        secrets.insert("CALLBACK_GATE_SECRET_KEY_PREVIOUS", previous.clone());
    }
    let lookup = move |name: &str| secrets.get(name).cloned();
    let mut settings =
        config::from_toml(&document, &lookup).unwrap_or_else(|problems| panic!("test config invalid:\n{problems}"));
    settings.request_timeout = options.request_timeout.unwrap_or(settings.request_timeout);
    settings.header_read_timeout = options.header_read_timeout.unwrap_or(settings.header_read_timeout);
    let app =
        Application::build(settings, listener, options.extra_routes.unwrap_or_default()).await.expect("app builds");
    let state = app.state().clone();
    let metrics_port = app.metrics_port();
    match options.shutdown {
        Some(shutdown) => tokio::spawn(app.run_until(shutdown.cancelled_owned())),
        None => tokio::spawn(app.run_until(std::future::pending())),
    };
    TestApp {
        address,
        port,
        metrics_port,
        api_key,
        secret_key,
        store: state.store.clone(),
        state,
        provider,
        api: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client"),
        database_url,
        database,
        _dir: dir,
    }
}

/// A PostgreSQL server for the tests that need one whatever the backend under test (several instances on one
/// database): an admin URL such as `postgres://callback_gate:password@127.0.0.1:5432/postgres`. `scripts/test`
/// starts a throwaway server and sets it; `scripts/postgres start DIR` prints one.
pub const POSTGRES_ENV: &str = "TEST_POSTGRES_URL";
/// The backend the suite runs against: `sqlite` (the default) or `postgres` (on the server above).
pub const STORE_ENV: &str = "TEST_STORE";

/// An empty database of the backend under test: a SQLite file in `dir`, or a new database on the PostgreSQL server
/// when `TEST_STORE=postgres`.
pub async fn fresh_database(dir: &std::path::Path) -> TestDatabase {
    match std::env::var(STORE_ENV).as_deref() {
        Ok("postgres") => postgres_database().await,
        Ok("sqlite") | Err(_) => {
            TestDatabase { url: format!("sqlite://{}", dir.join("test.db").display()), dropped_from: None }
        }
        Ok(other) => panic!("{STORE_ENV}={other}: expected sqlite or postgres"),
    }
}

/// A new, empty database on the test PostgreSQL server, dropped with the returned value.
pub async fn postgres_database() -> TestDatabase {
    let admin = std::env::var(POSTGRES_ENV).unwrap_or_else(|_| {
        panic!("{POSTGRES_ENV} names no PostgreSQL server: run ./scripts/test, or set it to the URL `scripts/postgres start DIR` prints")
    });
    let name = format!("gate_{}", callback_gate::crypto::random_token::<8>().to_lowercase().replace('-', "_"));
    sql(&admin, &format!("CREATE DATABASE \"{name}\"")).await;
    let mut url = Url::parse(&admin).expect("TEST_POSTGRES_URL is a URL");
    url.set_path(&name);
    TestDatabase { url: url.to_string(), dropped_from: Some((admin, name)) }
}

/// A test's database. A PostgreSQL one is dropped when this is, so that a suite of a few hundred tests does not
/// leave a few hundred databases (each about 8 MB) on the server's disk.
pub struct TestDatabase {
    /// The `database_url` to configure.
    pub url: String,
    /// The server's admin URL and the database's name, for a PostgreSQL database.
    dropped_from: Option<(String, String)>,
}

impl Drop for TestDatabase {
    /// Drops the database, ending the sessions still open on it (an app that outlives the test's last line keeps
    /// its pool). It runs on a thread of its own because the test's runtime may be a single thread blocked here.
    fn drop(&mut self) {
        let Some((admin, name)) = self.dropped_from.take() else { return };
        let statement = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(sql(&admin, &statement));
        })
        .join();
        if dropped.is_err() {
            eprintln!("the test database {name} was not dropped (why is printed above)");
        }
    }
}

/// Runs statements on the database a `database_url` names.
pub async fn sql(database_url: &str, statements: &str) {
    if database_url.starts_with("postgres") {
        postgres_client(database_url).await.batch_execute(statements).await.expect("statements run");
    } else {
        let path = database_url.trim_start_matches("sqlite://").to_owned();
        let statements = statements.to_owned();
        tokio::task::spawn_blocking(move || {
            rusqlite::Connection::open(path).expect("open the database").execute_batch(&statements)
        })
        .await
        .expect("statements ran")
        .expect("statements run");
    }
}

/// The rows a query returns from the database a `database_url` names, every value as text.
pub async fn sql_rows(database_url: &str, query: &str) -> Vec<Vec<Option<String>>> {
    if database_url.starts_with("postgres") {
        let messages = postgres_client(database_url).await.simple_query(query).await.expect("query runs");
        return messages
            .iter()
            .filter_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect())
                }
                _ => None,
            })
            .collect();
    }
    let path = database_url.trim_start_matches("sqlite://").to_owned();
    let query = query.to_owned();
    tokio::task::spawn_blocking(move || {
        use rusqlite::types::ValueRef;
        let db = rusqlite::Connection::open(path).expect("open the database");
        let mut statement = db.prepare(&query).expect("query prepares");
        let columns = statement.column_count();
        let rows = statement
            .query_map([], |row| {
                (0..columns)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            ValueRef::Null => None,
                            ValueRef::Integer(n) => Some(n.to_string()),
                            ValueRef::Real(x) => Some(x.to_string()),
                            ValueRef::Text(text) | ValueRef::Blob(text) => {
                                Some(String::from_utf8_lossy(text).into_owned())
                            }
                        })
                    })
                    .collect::<Result<Vec<_>, rusqlite::Error>>()
            })
            .expect("query runs");
        rows.collect::<Result<Vec<_>, _>>().expect("rows read")
    })
    .await
    .expect("query ran")
}

/// A session of its own on a PostgreSQL database, as another program would have.
pub async fn postgres_client(database_url: &str) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(database_url, tokio_postgres::NoTls).await.expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

/// A fresh `CALLBACK_GATE_SECRET_KEY` value.
pub fn new_secret_key() -> String {
    STANDARD.encode(rand_bytes())
}

fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("random");
    bytes
}

/// A browser: its own cookie jar, redirects left to the test.
pub struct Browser {
    pub client: reqwest::Client,
    jar: std::sync::Arc<reqwest::cookie::Jar>,
}

impl Browser {
    pub fn new() -> Self {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        Self {
            client: reqwest::Client::builder()
                .cookie_provider(jar.clone())
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            jar,
        }
    }

    /// The same browser (its cookies), giving up on any request after `timeout`.
    pub fn impatient(&self, timeout: std::time::Duration) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_provider(self.jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .expect("client")
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.client.get(url).send().await.expect("request")
    }
}

/// A started flow: the provider authorization URL the browser was sent to, and its parameters.
pub struct Started {
    pub authorize_url: Url,
    pub state: String,
    pub code_challenge: String,
    pub params: HashMap<String, String>,
}

impl TestApp {
    /// Makes this app keep a database several apps share, so that it is dropped with the app, not before.
    pub fn keeping(mut self, database: TestDatabase) -> Self {
        self.database = Some(database);
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post_link(&self, body: Value) -> reqwest::Response {
        self.api
            .post(self.url("/v1/authorization-links"))
            .bearer_auth(&self.api_key)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// Mints a link for `identifier` on the mock connection.
    pub async fn mint_link(&self, identifier: &str) -> String {
        let response = self.post_link(json!({ "connection": CONNECTION, "identifier": identifier })).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        let link = body["link"].as_str().expect("link").to_owned();
        record_secret(link.rsplit('/').next().unwrap_or_default());
        link
    }

    /// Opens `link` in `browser` and follows to the provider's authorization URL.
    pub async fn start(&self, browser: &Browser, link: &str) -> Started {
        let response = browser.get(link).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "start should redirect to the provider");
        record_secret(link.rsplit('/').next().unwrap_or_default());
        for cookie in response.headers().get_all(reqwest::header::SET_COOKIE) {
            let pair = cookie.to_str().unwrap_or_default().split(';').next().unwrap_or_default();
            record_secret(pair.split_once('=').map_or("", |(_, value)| value));
        }
        let location = response.headers().get(LOCATION).expect("location").to_str().expect("ascii").to_owned();
        let authorize_url = Url::parse(&location).expect("absolute provider URL");
        let params: HashMap<String, String> = authorize_url.query_pairs().into_owned().collect();
        record_secret(&params["state"]);
        Started {
            state: params["state"].clone(),
            // Empty for presets that send no PKCE (`pkce = false`).
            code_challenge: params.get("code_challenge").cloned().unwrap_or_default(),
            params,
            authorize_url,
        }
    }

    /// Mints a link and starts its flow in a fresh browser.
    pub async fn begin(&self, identifier: &str) -> (Browser, Started) {
        let browser = Browser::new();
        let link = self.mint_link(identifier).await;
        let started = self.start(&browser, &link).await;
        (browser, started)
    }

    /// The provider sends the browser back to the callback with `query`.
    pub async fn callback(&self, browser: &Browser, query: &str) -> reqwest::Response {
        self.callback_on(browser, CONNECTION, query).await
    }

    pub async fn callback_on(&self, browser: &Browser, connection: &str, query: &str) -> reqwest::Response {
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if key == "code" || key == "state" {
                record_secret(&value);
            }
        }
        browser.get(&self.url(&format!("/connect/callback/{connection}?{query}"))).await
    }

    /// Follows a 303 to the result page and returns its status and body.
    pub async fn follow(&self, browser: &Browser, response: reqwest::Response) -> (StatusCode, String) {
        self.record_verifiers().await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "callback should redirect to the result page");
        let location = response.headers().get(LOCATION).expect("location").to_str().expect("ascii").to_owned();
        assert!(location.starts_with("/connect/result/"), "unexpected location {location}");
        let page = browser.get(&self.url(&location)).await;
        let status = page.status();
        (status, page.text().await.expect("body"))
    }

    /// The id of the only flow in the store (tests that start one flow and need its result page).
    pub async fn only_flow_id(&self) -> String {
        let rows = self.sql_rows("SELECT id FROM flows").await;
        assert_eq!(rows.len(), 1, "exactly one flow");
        rows[0][0].clone().expect("a flow id")
    }

    /// Runs statements on the app's database from outside the app, as an operator (or a failure) would.
    pub async fn sql(&self, statements: &str) {
        sql(&self.database_url, statements).await;
    }

    /// The rows a query returns, every value as text (`None` for NULL).
    pub async fn sql_rows(&self, query: &str) -> Vec<Vec<Option<String>>> {
        sql_rows(&self.database_url, query).await
    }

    /// Makes every write that fires one of `triggers` fail, as a full or broken disk would. Each trigger is the
    /// event and table (`BEFORE UPDATE OF status ON flows`) and, optionally, a condition on `NEW`.
    pub async fn break_writes(&self, triggers: &[(&str, Option<&str>)]) {
        let postgres = self.database_url.starts_with("postgres");
        let mut statements = String::new();
        if postgres {
            statements.push_str(
                "CREATE OR REPLACE FUNCTION simulated_failure() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'simulated disk failure'; END $$;",
            );
        }
        for (n, (event, condition)) in triggers.iter().enumerate() {
            statements.push_str(&match (postgres, condition) {
                (true, Some(when)) => format!(
                    "CREATE TRIGGER broken_{n} {event} FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION simulated_failure();"
                ),
                (true, None) => {
                    format!("CREATE TRIGGER broken_{n} {event} FOR EACH ROW EXECUTE FUNCTION simulated_failure();")
                }
                (false, Some(when)) => format!(
                    "CREATE TRIGGER broken_{n} {event} WHEN {when} BEGIN SELECT RAISE(ABORT, 'simulated disk failure'); END;"
                ),
                (false, None) => format!(
                    "CREATE TRIGGER broken_{n} {event} BEGIN SELECT RAISE(ABORT, 'simulated disk failure'); END;"
                ),
            });
        }
        self.sql(&statements).await;
    }

    /// Records every PKCE verifier and code the provider received.
    pub async fn record_verifiers(&self) {
        for request in self.provider.received_requests().await.unwrap_or_default() {
            for (key, value) in url::form_urlencoded::parse(&request.body) {
                if matches!(key.as_ref(), "code_verifier" | "code" | "client_secret") {
                    record_secret(&value);
                }
            }
        }
    }

    /// The `/metrics` page, read with the API key.
    pub async fn metrics(&self) -> String {
        let response = self.api.get(self.url("/metrics")).bearer_auth(&self.api_key).send().await.expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("body")
    }

    pub async fn account(&self, identifier: &str) -> Value {
        self.account_on(CONNECTION, identifier).await
    }

    /// The account of `identifier` on `connection`, as `GET /v1/connected-accounts/...` answers it.
    pub async fn account_on(&self, connection: &str, identifier: &str) -> Value {
        let response = self
            .api
            .get(self.url(&format!("/v1/connected-accounts/{connection}/{identifier}")))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }

    pub async fn reference(&self, reference: &str) -> Value {
        let response = self
            .api
            .get(self.url(&format!("/v1/references/{reference}")))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK, "reference {reference} should resolve");
        response.json().await.expect("json")
    }

    /// Rows in a table, once the background event writer has caught up.
    pub async fn count(&self, table: Table) -> i64 {
        for _ in 0..300 {
            if self.state.events.backlog() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.store.count(table).await.expect("count")
    }

    /// Token endpoint answering with tokens, expected `times` times.
    pub async fn mock_token_success(&self, times: u64) {
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "access_token": "at-secret-value-0001",
                "refresh_token": "rt-secret-value-0001",
                "token_type": "Bearer",
                "expires_in": 3600,
                "scope": "read write"
            })))
            .expect(times)
            .mount(&self.provider)
            .await;
    }

    /// Token endpoint answering with `response`.
    pub async fn mock_token(&self, response: ResponseTemplate) {
        Mock::given(method("POST")).and(path("/token")).respond_with(response).mount(&self.provider).await;
    }

    /// Sealed tokens of an account, opened with the given associated data.
    pub async fn open_tokens(
        &self,
        connection: &str,
        identifier: &str,
        aad_connection: &str,
        aad_identifier: &str,
    ) -> Option<Value> {
        let (sealed, _key_id) = self.store.sealed_tokens(connection, identifier).await.expect("store")?;
        let aad = callback_gate::crypto::account_associated_data(aad_connection, aad_identifier);
        let plain = self.state.settings.secret_key.open(&sealed, &aad).ok()?;
        Some(serde_json::from_slice(&plain).expect("tokens json"))
    }
}

/// The reference shown on a failure page.
pub fn reference_on(page: &str) -> String {
    let start = page.find("data-reference>").expect("page shows a reference") + "data-reference>".len();
    page[start..start + 12].to_owned()
}

/// The `data-code` of a failure page.
pub fn code_on(page: &str) -> String {
    let start = page.find("data-code=\"").expect("page has a code") + "data-code=\"".len();
    let end = page[start..].find('"').expect("closing quote");
    page[start..start + end].to_owned()
}

/// One query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> String {
    Url::parse(url)
        .expect("absolute URL")
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// An OpenID provider on wiremock: its discovery document (with RFC 9207's promise of `iss` when `promises_iss`)
/// and a key set URL answering `jwks`. Token endpoints are mounted by each test.
pub async fn openid_provider(jwks: ResponseTemplate, promises_iss: bool) -> MockServer {
    let server = MockServer::start().await;
    let issuer = server.uri();
    let mut discovery = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
    });
    if promises_iss {
        discovery["authorization_response_iss_parameter_supported"] = json!(true);
    }
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(discovery))
        .mount(&server)
        .await;
    Mock::given(method("GET")).and(path("/jwks")).respond_with(jwks).mount(&server).await;
    server
}

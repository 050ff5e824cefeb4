//! `callback-gate demo`: the whole flow on one machine with no set-up. An embedded SQLite database in a temporary
//! folder, generated keys, a demo provider served by the same process (a consent page with Approve and Deny), and a
//! demo app page at `/` that mints links and lists connected accounts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::uri::Authority;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::json;

use crate::account::{ConnectedAccount, Identifier};
use crate::config::{self, ConfigProblems};
use crate::crypto::{self, Pkce, constant_time_eq};
use crate::flow;
use crate::i18n::Language;
use crate::pages::{Chrome, render};
use crate::server::{AppState, Application, StartupError};
use crate::store::AccountQuery;

/// The demo's one connection.
const CONNECTION: &str = "demo";
const CLIENT_ID: &str = "callback-gate-demo";
/// Codes the demo provider keeps at most; older ones are dropped first.
const MAX_CODES: usize = 10_000;
const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// The demo's token timeout is 3 s; the slow answer comes after it.
const SLOW_TOKEN_ANSWER: Duration = Duration::from_secs(4);

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Config(#[from] ConfigProblems),
    #[error("{0}")]
    Startup(#[from] StartupError),
    #[error("could not create the data folder: {0}")]
    Data(std::io::Error),
    #[error("{0}")]
    Serve(std::io::Error),
}

/// A demo ready to run: the application plus what to tell the person who started it.
pub struct Demo {
    pub app: Application,
    pub url: String,
    pub api_key: String,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// Builds the demo on `127.0.0.1:{port}` (0 picks a free port).
pub async fn build(port: u16, data: Option<PathBuf>) -> Result<Demo, DemoError> {
    let (data_dir, temp) = match data {
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(DemoError::Data)?;
            (dir, None)
        }
        None => {
            let temp = tempfile::Builder::new().prefix("callback-gate-demo-").tempdir().map_err(DemoError::Data)?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let listener = crate::server::bind(&format!("127.0.0.1:{port}")).await?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
    let url = format!("http://127.0.0.1:{port}");
    let client_secret = crypto::random_token::<24>();
    let api_key = format!("demo_{}", crypto::random_token::<24>());
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|err| DemoError::Data(std::io::Error::other(err.to_string())))?;
    let secret_key = STANDARD.encode(key);
    let document = format!(
        r#"
public_url = "{url}"
listen = "127.0.0.1:{port}"
mode = "development"
database_url = "sqlite://{db}"
token_timeout_seconds = 3

[app]
name = "Demo App"
return_url = "{url}/"

[support]
email = "support@example.com"

[[connections]]
name = "{CONNECTION}"
provider = "oauth2"
client_id = "{CLIENT_ID}"
client_secret_env = "DEMO_CLIENT_SECRET"
authorization_url = "{url}/demo/provider/authorize"
token_url = "{url}/demo/provider/token"
issuer = "{url}/demo/provider"
scopes = ["profile", "email"]
"#,
        db = data_dir.join("callback-gate.db").display(),
    );
    let secrets = {
        let (client_secret, api_key, secret_key) = (client_secret.clone(), api_key.clone(), secret_key.clone());
        move |name: &str| match name {
            "DEMO_CLIENT_SECRET" => Some(client_secret.clone()),
            "CALLBACK_GATE_API_KEYS" => Some(api_key.clone()),
            "CALLBACK_GATE_SECRET_KEY" => Some(secret_key.clone()),
            _ => None,
        }
    };
    let settings = config::from_toml(&document, &secrets)?;
    let provider = Arc::new(DemoProvider {
        client_secret,
        codes: Mutex::new(HashMap::new()),
        refresh_tokens: Mutex::new(HashMap::new()),
    });
    let app = Application::build(settings, listener, routes(provider))
        .await?
        .layer(middleware::from_fn_with_state(port, loopback_names_only));
    Ok(Demo { app, url, api_key, data_dir, _temp: temp })
}

/// `callback-gate demo`: builds, prints where to go, and serves until interrupted.
pub async fn run(port: u16, data: Option<PathBuf>) -> Result<(), DemoError> {
    let started = Instant::now();
    let demo = build(port, data).await?;
    println!("callback-gate demo is ready in {} ms", started.elapsed().as_millis());
    println!();
    println!("  Open:      {}/", demo.url);
    println!("  API key:   {}", demo.api_key);
    println!("  Data:      {}", demo.data_dir.display());
    println!();
    println!("  Mint a link from the command line:");
    println!(
        "  curl -s -X POST {}/v1/authorization-links -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' -d '{{\"connection\":\"{CONNECTION}\",\"identifier\":\"user_123\"}}'",
        demo.url, demo.api_key
    );
    println!();
    println!("Press Ctrl+C to stop.");
    let Demo { app, _temp, .. } = demo;
    app.run_until(crate::server::shutdown_signal()).await.map_err(DemoError::Serve)
}

fn routes(provider: Arc<DemoProvider>) -> Router<AppState> {
    Router::new()
        .route("/", get(app_page))
        .route("/demo/connect", post(connect))
        .route("/demo/provider/authorize", get(authorize))
        .route("/demo/provider/decide", post(decide))
        .route("/demo/provider/token", post(token))
        .layer(Extension(provider))
}

// ---- who may talk to the demo ----

/// The demo listens on 127.0.0.1 and has no login, so any page a browser opens could try to reach it. Through DNS
/// rebinding (a foreign name that resolves to 127.0.0.1) the browser still sends that foreign name as `Host`:
/// every request, to the service's own routes as much as to the demo's, must name the demo on a loopback name and
/// its port.
async fn loopback_names_only(State(port): State<u16>, request: Request, next: Next) -> Response {
    if names_the_demo(&request, port) {
        return next.run(request).await;
    }
    let message = format!("this demo answers only at http://127.0.0.1:{port}/ and http://localhost:{port}/");
    if crate::api::is_api_path(request.uri().path()) {
        return crate::api::error_response(StatusCode::MISDIRECTED_REQUEST, "misdirected_request", message);
    }
    let headers = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    (StatusCode::MISDIRECTED_REQUEST, headers, format!("Misdirected request: {message}.\n")).into_response()
}

/// Whether the request names the demo, in its `Host` and in its target when that is absolute: one name at least, and
/// every name given on loopback.
fn names_the_demo(request: &Request, port: u16) -> bool {
    let from_uri = request.uri().authority().map(|authority| Some(authority.as_str()));
    let from_headers = request.headers().get_all(header::HOST).iter().map(|value| value.to_str().ok());
    let mut names = from_uri.into_iter().chain(from_headers).peekable();
    names.peek().is_some() && names.all(|name| name.is_some_and(|name| is_loopback_name(name, port)))
}

/// `127.0.0.1`, `localhost` or `[::1]` with the demo's port (an absent port is http's 80).
fn is_loopback_name(name: &str, port: u16) -> bool {
    let Ok(authority) = name.parse::<Authority>() else {
        return false;
    };
    let host = authority.host().to_ascii_lowercase();
    !authority.as_str().contains('@')
        && matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]")
        && authority.port_u16().unwrap_or(80) == port
}

/// A form post from the demo's own pages. The demo's forms mint links and issue codes, so a post whose `Origin` is
/// another site, `null` (a sandboxed or privacy-stripped context) or absent is refused before the form is read.
struct OwnOrigin;

impl FromRequestParts<AppState> for OwnOrigin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let port = state.settings.public_url.port_or_known_default().unwrap_or(80);
        let own = ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .filter_map(|host| url::Url::parse(&format!("http://{host}:{port}")).ok())
            .map(|url| url.origin().ascii_serialization());
        let origin = parts.headers.get(header::ORIGIN).and_then(|value| value.to_str().ok());
        match origin {
            Some(origin) if own.into_iter().any(|own| own == origin) => Ok(Self),
            _ => Err((
                StatusCode::FORBIDDEN,
                "Demo: this form only accepts posts from the demo's own pages (the Origin header must be the demo's).",
            )
                .into_response()),
        }
    }
}

// ---- the demo app ----

#[derive(Template)]
#[template(path = "demo_app.html")]
struct AppPage {
    chrome: Chrome,
    accounts: Vec<ConnectedAccount>,
}

async fn app_page(State(state): State<AppState>) -> Response {
    let query = AccountQuery { connection: Some(CONNECTION.into()), limit: 100, ..AccountQuery::default() };
    let accounts = state.store.list_accounts(&query).await.unwrap_or_default();
    let chrome = Chrome::new(&state, &Language::default(), "Connected accounts".into());
    render(StatusCode::OK, &AppPage { chrome, accounts })
}

#[derive(Deserialize)]
struct ConnectForm {
    identifier: String,
}

async fn connect(_: OwnOrigin, State(state): State<AppState>, Form(form): Form<ConnectForm>) -> Response {
    let identifier = match Identifier::parse(form.identifier.trim()) {
        Ok(identifier) => identifier,
        Err(err) => {
            return (StatusCode::UNPROCESSABLE_ENTITY, format!("identifier {err}")).into_response();
        }
    };
    match flow::mint_link(&state.settings, &state.store, CONNECTION, &identifier, None).await {
        Ok((link, _)) => Redirect::to(&link).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("could not mint a link: {err}")).into_response(),
    }
}

// ---- the demo provider ----

/// An OAuth 2.0 provider small enough to read: it checks the client, the redirect URI and PKCE like a real one.
struct DemoProvider {
    client_secret: String,
    codes: Mutex<HashMap<String, Grant>>,
    /// Refresh tokens it accepts now, with their grant's scope. Each works once: like Microsoft's and
    /// Atlassian's, the answer to a refresh carries its successor.
    refresh_tokens: Mutex<HashMap<String, String>>,
}

struct Grant {
    redirect_uri: String,
    code_challenge: String,
    scope: String,
    issued: Instant,
    fault: TokenFault,
}

#[derive(Deserialize)]
struct AuthorizeParams {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    scope: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

#[derive(Template)]
#[template(path = "demo_consent.html")]
struct ConsentPage {
    chrome: Chrome,
    /// The failure buttons: (value, label).
    failures: Vec<(&'static str, &'static str)>,
    scopes: Vec<String>,
    redirect_uri: String,
    state: String,
    scope: String,
    code_challenge: String,
}

async fn authorize(State(state): State<AppState>, Query(params): Query<AuthorizeParams>) -> Response {
    let expected_redirect = state.settings.connection(CONNECTION).map(|c| c.redirect_uri.to_string());
    if params.client_id.as_deref() != Some(CLIENT_ID) || params.redirect_uri != expected_redirect {
        return (StatusCode::BAD_REQUEST, "Demo provider: unknown client or redirect_uri").into_response();
    }
    let (Some(redirect_uri), Some(flow_state), Some(code_challenge)) =
        (params.redirect_uri, params.state, params.code_challenge)
    else {
        return (StatusCode::BAD_REQUEST, "Demo provider: state and code_challenge are required").into_response();
    };
    if params.code_challenge_method.as_deref() != Some("S256") {
        return (StatusCode::BAD_REQUEST, "Demo provider: only PKCE S256 is accepted").into_response();
    }
    let scope = params.scope.unwrap_or_default();
    let title = format!("Allow {} to access your account?", state.settings.app.name);
    let page = ConsentPage {
        chrome: Chrome::with_assets(&state.assets, &Language::default(), title, "Demo provider".into()),
        failures: SIMULATIONS.iter().skip(2).map(|(value, label, _)| (*value, *label)).collect(),
        scopes: scope.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        redirect_uri,
        state: flow_state,
        scope,
        code_challenge,
    };
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
struct Decision {
    decision: String,
    redirect_uri: String,
    state: String,
    scope: String,
    code_challenge: String,
}

/// What the demo provider does when a button is pressed: everything a newcomer may want to see a page for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Simulation {
    /// Redirect back with an `error` (and description) instead of a code.
    CallbackError(&'static str, &'static str),
    /// Redirect back with a code, but name another issuer in `iss` (a mix-up).
    WrongIssuer,
    /// Redirect back with a code; the token endpoint then answers this way.
    Token(TokenFault),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenFault {
    None,
    InvalidGrant,
    InvalidClient,
    ServerError,
    Slow,
    MalformedJson,
}

/// The consent page's buttons: value, label, what happens.
#[rustfmt::skip]
const SIMULATIONS: &[(&str, &str, Simulation)] = &[
    ("approve", "Approve", Simulation::Token(TokenFault::None)),
    ("deny", "Deny", Simulation::CallbackError("access_denied", "The user denied the request at the demo provider")),
    ("invalid_scope", "Unknown scope (invalid_scope)", Simulation::CallbackError("invalid_scope", "The requested scope is invalid, unknown, or malformed.")),
    ("server_error", "Provider error (server_error)", Simulation::CallbackError("server_error", "The authorization server encountered an unexpected condition.")),
    ("temporarily_unavailable", "Provider busy (temporarily_unavailable)", Simulation::CallbackError("temporarily_unavailable", "The authorization server is temporarily overloaded.")),
    ("admin_consent", "Microsoft-style admin consent (AADSTS65001)", Simulation::CallbackError("consent_required", "AADSTS65001: The user or administrator has not consented to use the application with ID 'demo'. Send an interactive authorization request for this user and resource.")),
    ("wrong_iss", "Answer from another issuer (wrong iss)", Simulation::WrongIssuer),
    ("token_invalid_grant", "Token exchange: invalid_grant", Simulation::Token(TokenFault::InvalidGrant)),
    ("token_invalid_client", "Token exchange: invalid_client", Simulation::Token(TokenFault::InvalidClient)),
    ("token_500", "Token exchange: HTTP 500", Simulation::Token(TokenFault::ServerError)),
    ("token_slow", "Token exchange: slower than the timeout", Simulation::Token(TokenFault::Slow)),
    ("token_malformed", "Token exchange: malformed JSON", Simulation::Token(TokenFault::MalformedJson)),
];

/// The demo provider's issuer, sent as RFC 9207 `iss` and checked by the demo connection.
fn issuer(state: &AppState) -> String {
    format!("{}demo/provider", state.settings.public_url)
}

async fn decide(
    _: OwnOrigin,
    State(state): State<AppState>,
    Extension(provider): Extension<Arc<DemoProvider>>,
    Form(decision): Form<Decision>,
) -> Response {
    let expected_redirect = state.settings.connection(CONNECTION).map(|c| c.redirect_uri.to_string());
    if Some(&decision.redirect_uri) != expected_redirect.as_ref() {
        return (StatusCode::BAD_REQUEST, "Demo provider: unknown redirect_uri").into_response();
    }
    let Ok(mut target) = url::Url::parse(&decision.redirect_uri) else {
        return (StatusCode::BAD_REQUEST, "Demo provider: invalid redirect_uri").into_response();
    };
    let Some((_, _, simulation)) = SIMULATIONS.iter().find(|(value, _, _)| *value == decision.decision) else {
        return (StatusCode::BAD_REQUEST, "Demo provider: unknown decision").into_response();
    };
    let (fault, iss) = match *simulation {
        Simulation::CallbackError(error, description) => {
            target
                .query_pairs_mut()
                .append_pair("error", error)
                .append_pair("error_description", description)
                .append_pair("state", &decision.state)
                .append_pair("iss", &issuer(&state));
            return Redirect::to(target.as_str()).into_response();
        }
        Simulation::WrongIssuer => (TokenFault::None, "https://issuer.example.net".to_owned()),
        Simulation::Token(fault) => (fault, issuer(&state)),
    };
    let code = crypto::random_token::<24>();
    if let Ok(mut codes) = provider.codes.lock() {
        codes.retain(|_, grant| grant.issued.elapsed() < CODE_LIFETIME);
        if codes.len() >= MAX_CODES {
            return (StatusCode::SERVICE_UNAVAILABLE, "Demo provider: too many pending codes").into_response();
        }
        let grant = Grant {
            redirect_uri: decision.redirect_uri.clone(),
            code_challenge: decision.code_challenge,
            scope: decision.scope,
            issued: Instant::now(),
            fault,
        };
        codes.insert(code.clone(), grant);
    }
    target.query_pairs_mut().append_pair("code", &code).append_pair("state", &decision.state).append_pair("iss", &iss);
    Redirect::to(target.as_str()).into_response()
}

#[derive(Deserialize)]
struct TokenRequest {
    grant_type: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    code_verifier: String,
    #[serde(default)]
    refresh_token: String,
}

fn token_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(json!({ "error": error, "error_description": description }))).into_response()
}

async fn token(
    Extension(provider): Extension<Arc<DemoProvider>>,
    headers: HeaderMap,
    Form(request): Form<TokenRequest>,
) -> Response {
    let expected = STANDARD.encode(format!("{CLIENT_ID}:{}", provider.client_secret));
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .unwrap_or_default();
    if !constant_time_eq(expected.as_bytes(), presented.as_bytes()) {
        return token_error(StatusCode::UNAUTHORIZED, "invalid_client", "Client authentication failed");
    }
    if request.grant_type == "refresh_token" {
        let scope = provider.refresh_tokens.lock().ok().and_then(|mut tokens| tokens.remove(&request.refresh_token));
        return match scope {
            Some(scope) => issue_tokens(&provider, scope),
            None => token_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "The refresh token is unknown or was already used",
            ),
        };
    }
    if request.grant_type != "authorization_code" {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Only authorization_code and refresh_token are supported",
        );
    }
    let grant = provider.codes.lock().ok().and_then(|mut codes| codes.remove(&request.code));
    let Some(grant) = grant.filter(|g| g.issued.elapsed() < CODE_LIFETIME) else {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "The code is unknown, used or expired");
    };
    if grant.redirect_uri != request.redirect_uri {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri does not match the authorization request",
        );
    }
    if !constant_time_eq(Pkce::challenge_for(&request.code_verifier).as_bytes(), grant.code_challenge.as_bytes()) {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "PKCE verification failed");
    }
    match grant.fault {
        TokenFault::None => {}
        TokenFault::InvalidGrant => {
            return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "The authorization code has expired");
        }
        TokenFault::InvalidClient => {
            return token_error(StatusCode::UNAUTHORIZED, "invalid_client", "The client secret was rotated");
        }
        TokenFault::ServerError => return (StatusCode::INTERNAL_SERVER_ERROR, "").into_response(),
        TokenFault::Slow => tokio::time::sleep(SLOW_TOKEN_ANSWER).await,
        TokenFault::MalformedJson => {
            return ([(header::CONTENT_TYPE, "application/json")], "{\"access_token\": ").into_response();
        }
    }
    issue_tokens(&provider, grant.scope)
}

/// New tokens for a grant, with a refresh token that works once.
fn issue_tokens(provider: &DemoProvider, scope: String) -> Response {
    let refresh_token = format!("demo_rt_{}", crypto::random_token::<24>());
    if let Ok(mut tokens) = provider.refresh_tokens.lock() {
        tokens.insert(refresh_token.clone(), scope.clone());
    }
    Json(json!({
        "access_token": format!("demo_at_{}", crypto::random_token::<24>()),
        "refresh_token": refresh_token,
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": scope,
    }))
    .into_response()
}

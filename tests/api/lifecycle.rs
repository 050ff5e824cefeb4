//! The token lifecycle after consent: refreshes before expiry in the background, one refresh per account at a
//! time, writes that never land on tokens they were not computed from, and the token route's freshness promise.
//!
//! Most tests run against a token endpoint that rotates refresh tokens and refuses a spent one, as Microsoft,
//! Atlassian and Salesforce do: there, a second refresh with the same refresh token is refused with `invalid_grant`,
//! so any duplicate refresh shows up in the provider's counts and would expire the account.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::helpers::{CONNECTION, Options, TestApp, record_secret, spawn_with};

/// What the rotating token endpoint has seen.
#[derive(Debug, Default)]
pub struct Rotation {
    /// The refresh tokens it accepts now: the newest of each grant.
    current: std::collections::HashSet<String>,
    /// Access tokens issued, in order.
    issued: Vec<String>,
    /// Refresh requests received, and when.
    refreshes: Vec<Instant>,
    /// Refresh requests refused because their refresh token was spent or unknown.
    refused: usize,
}

/// A token endpoint that issues a new refresh token with every answer and accepts only the newest one.
#[derive(Clone)]
pub struct RotatingProvider {
    pub seen: Arc<Mutex<Rotation>>,
    /// How long each answer to a refresh takes (authorization codes are answered at once).
    pub delay: Duration,
    /// `expires_in` of tokens from an authorization code.
    pub code_expires_in: i64,
    /// `expires_in` of tokens from a refresh.
    pub refresh_expires_in: i64,
}

impl RotatingProvider {
    pub fn new(code_expires_in: i64, refresh_expires_in: i64) -> Self {
        Self { seen: Arc::default(), delay: Duration::ZERO, code_expires_in, refresh_expires_in }
    }

    /// Answers refreshes after `delay`. Races use 1.5 s: long enough that every concurrent caller asks while the
    /// refresh is at the provider, even on a loaded machine (a caller arriving after it landed rightly refreshes
    /// again).
    pub fn slow(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub async fn mount(&self, app: &TestApp) {
        Mock::given(method("POST")).and(path("/token")).respond_with(self.clone()).mount(&app.provider).await;
    }

    pub fn refreshes(&self) -> usize {
        self.seen.lock().unwrap().refreshes.len()
    }

    pub fn refused(&self) -> usize {
        self.seen.lock().unwrap().refused
    }

    pub fn last_access_token(&self) -> String {
        self.seen.lock().unwrap().issued.last().cloned().unwrap_or_default()
    }

    /// Makes the provider forget every refresh token it issued, as when they were spent elsewhere.
    pub fn forget_refresh_tokens(&self) {
        self.seen.lock().unwrap().current.clear();
    }

    fn issue(&self, seen: &mut Rotation, expires_in: i64) -> ResponseTemplate {
        let n = seen.issued.len() + 1;
        let suffix = callback_gate::crypto::random_token::<8>();
        let access = format!("at-rotating-{n}-{suffix}");
        let refresh = format!("rt-rotating-{n}-{suffix}");
        record_secret(&access);
        record_secret(&refresh);
        seen.issued.push(access.clone());
        seen.current.insert(refresh.clone());
        ResponseTemplate::new(200).set_body_json(json!({
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": "read write",
        }))
    }
}

impl Respond for RotatingProvider {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let form: HashMap<String, String> = url::form_urlencoded::parse(&request.body).into_owned().collect();
        let mut seen = self.seen.lock().unwrap();
        match form.get("grant_type").map(String::as_str) {
            Some("authorization_code") => self.issue(&mut seen, self.code_expires_in),
            Some("refresh_token") => {
                seen.refreshes.push(Instant::now());
                let presented = form.get("refresh_token").cloned().unwrap_or_default();
                // Each refresh token works once: the answer carries its successor.
                if seen.current.remove(&presented) {
                    self.issue(&mut seen, self.refresh_expires_in)
                } else {
                    seen.refused += 1;
                    ResponseTemplate::new(400).set_body_json(json!({
                        "error": "invalid_grant",
                        "error_description": "The refresh token was already used or revoked.",
                    }))
                }
                .set_delay(self.delay)
            }
            _ => ResponseTemplate::new(400).set_body_json(json!({ "error": "unsupported_grant_type" })),
        }
    }
}

pub fn exposing() -> Options {
    Options { connection_extra: "expose_tokens = true".into(), ..Options::default() }
}

pub async fn connect(app: &TestApp, identifier: &str) {
    let (browser, started) = app.begin(identifier).await;
    let callback = app.callback(&browser, &format!("code=c-{identifier}&state={}", started.state)).await;
    let (status, page) = app.follow(&browser, callback).await;
    assert_eq!(status, StatusCode::OK, "{page}");
}

pub async fn call(app: &TestApp, method: Method, path: &str) -> (StatusCode, Value) {
    let response = app.api.request(method, app.url(path)).bearer_auth(&app.api_key).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn refresh(app: &TestApp, identifier: &str) -> (StatusCode, Value) {
    call(app, Method::POST, &format!("/v1/connected-accounts/{CONNECTION}/{identifier}/refresh")).await
}

pub async fn token(app: &TestApp, identifier: &str) -> (StatusCode, Value) {
    call(app, Method::GET, &format!("/v1/connected-accounts/{CONNECTION}/{identifier}/token")).await
}

/// Starts `POST .../refresh` for `identifier` without waiting for it.
fn refresh_in_background(app: &TestApp, identifier: &str) -> tokio::task::JoinHandle<reqwest::Response> {
    let url = app.url(&format!("/v1/connected-accounts/{CONNECTION}/{identifier}/refresh"));
    let (api, key) = (app.api.clone(), app.api_key.clone());
    tokio::spawn(async move { api.post(url).bearer_auth(key).send().await.unwrap() })
}

/// The access token stored for an account, read from the store.
pub async fn stored_access_token(app: &TestApp, identifier: &str) -> Option<String> {
    let tokens = app.open_tokens(CONNECTION, identifier, CONNECTION, identifier).await?;
    tokens["access_token"].as_str().map(str::to_owned)
}

/// Waits until `done` holds, for at most `most`.
pub async fn eventually(most: Duration, mut done: impl AsyncFnMut() -> bool) -> bool {
    let until = Instant::now() + most;
    while Instant::now() < until {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done().await
}

#[tokio::test]
async fn eight_concurrent_refreshes_make_one_provider_call_and_all_get_its_tokens() {
    let app = spawn_with(exposing()).await;
    let provider = RotatingProvider::new(3600, 3600).slow(Duration::from_millis(1500));
    provider.mount(&app).await;
    connect(&app, "user_1").await;

    let answers = join_all((0..8).map(|_| refresh(&app, "user_1"))).await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "ACTIVE");
    }
    assert_eq!(provider.refreshes(), 1, "one refresh reached the provider");
    assert_eq!(provider.refused(), 0, "no refresh token was presented twice");
    let (_, body) = token(&app, "user_1").await;
    assert_eq!(body["access_token"], provider.last_access_token(), "the account holds the refreshed token");
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");
    // A later refresh is a new one, with the rotated refresh token.
    assert_eq!(refresh(&app, "user_1").await.0, StatusCode::OK);
    assert_eq!(provider.refreshes(), 2);
    assert_eq!(provider.refused(), 0);
}

#[tokio::test]
async fn the_token_route_refreshes_a_token_with_less_than_a_minute_left_once_for_every_caller() {
    let app = spawn_with(exposing()).await;
    // The first token lives 30 seconds, less than the minute the token route promises.
    let provider = RotatingProvider::new(30, 3600).slow(Duration::from_millis(1500));
    provider.mount(&app).await;
    connect(&app, "user_1").await;
    let first = provider.last_access_token();

    let answers = join_all((0..8).map(|_| token(&app, "user_1"))).await;
    let now = time::OffsetDateTime::now_utc();
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_ne!(body["access_token"], first.as_str(), "never the token about to expire");
        assert_eq!(body["access_token"], provider.last_access_token());
        let expires_at = time::OffsetDateTime::parse(
            body["expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(expires_at - now >= time::Duration::seconds(60), "valid for a minute more at least: {expires_at}");
        assert_eq!(body["scopes"], json!(["read", "write"]));
    }
    assert_eq!(provider.refreshes(), 1);
    // Fresh enough now: no further refresh.
    assert_eq!(token(&app, "user_1").await.0, StatusCode::OK);
    assert_eq!(provider.refreshes(), 1);
}

#[tokio::test]
async fn a_refresh_that_overlaps_a_disconnect_leaves_the_account_disconnected() {
    let app = spawn_with(exposing()).await;
    let provider = RotatingProvider::new(3600, 3600).slow(Duration::from_millis(800));
    provider.mount(&app).await;
    connect(&app, "user_1").await;
    // The refresh is at the provider when the app disconnects the account.
    let refreshing = refresh_in_background(&app, "user_1");
    assert!(eventually(Duration::from_secs(3), async || provider.refreshes() == 1).await);
    let (status, body) = call(&app, Method::DELETE, &format!("/v1/connected-accounts/{CONNECTION}/user_1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "DISCONNECTED");

    let refreshed = refreshing.await.unwrap();
    let status = refreshed.status();
    let body: Value = refreshed.json().await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "account_not_active");
    assert!(body["error"]["message"].as_str().unwrap().contains("DISCONNECTED"), "{body}");
    // The refreshed tokens were discarded: the account stays disconnected, with no tokens.
    assert_eq!(app.account("user_1").await["status"], "DISCONNECTED");
    assert!(app.store.sealed_tokens(CONNECTION, "user_1").await.unwrap().is_none());
    assert_eq!(token(&app, "user_1").await.0, StatusCode::CONFLICT);
    assert_eq!(provider.refreshes(), 1);
    // Nothing brings it back but a new flow.
    assert_eq!(refresh(&app, "user_1").await.0, StatusCode::CONFLICT);
    assert_eq!(provider.refreshes(), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.account("user_1").await["status"], "DISCONNECTED");
}

#[tokio::test]
async fn a_refresh_that_finishes_after_a_reconnect_changes_nothing() {
    let app = spawn_with(exposing()).await;
    let provider = RotatingProvider::new(3600, 3600).slow(Duration::from_millis(800));
    provider.mount(&app).await;
    connect(&app, "user_1").await;
    let refreshing = refresh_in_background(&app, "user_1");
    assert!(eventually(Duration::from_secs(3), async || provider.refreshes() == 1).await);
    // The user connects again while the refresh is at the provider: the new flow's tokens are the account's.
    connect(&app, "user_1").await;
    let reconnected = provider.last_access_token();
    assert_eq!(refreshing.await.unwrap().status(), StatusCode::OK, "the refresh answers with what is stored");
    assert_eq!(stored_access_token(&app, "user_1").await.as_deref(), Some(reconnected.as_str()));
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");
}

#[tokio::test]
async fn invalid_grant_for_a_refresh_token_that_was_replaced_meanwhile_does_not_expire_the_account() {
    let app = spawn_with(exposing()).await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({ "error": "invalid_grant", "error_description": "Token has been revoked." }))
                .set_delay(Duration::from_millis(800)),
        )
        .expect(1)
        .mount(&app.provider)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=authorization_code"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "at-secret-value-0001", "refresh_token": "rt-secret-value-0001", "expires_in": 3600,
        })))
        .mount(&app.provider)
        .await;
    connect(&app, "user_1").await;
    let refreshing = refresh_in_background(&app, "user_1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    connect(&app, "user_1").await;
    assert_eq!(refreshing.await.unwrap().status(), StatusCode::BAD_GATEWAY);
    // The refusal was about the refresh token the reconnect replaced: the account keeps its new tokens.
    let account = app.account("user_1").await;
    assert_eq!(account["status"], "ACTIVE", "{account}");
    assert_eq!(token(&app, "user_1").await.0, StatusCode::OK);
}

#[tokio::test]
async fn invalid_grant_for_the_stored_refresh_token_expires_the_account_with_a_reference() {
    let app = spawn_with(exposing()).await;
    let provider = RotatingProvider::new(3600, 3600);
    provider.mount(&app).await;
    connect(&app, "user_1").await;
    // The refresh token is spent elsewhere (another deployment, a copied database): the provider refuses ours.
    provider.forget_refresh_tokens();
    let (status, body) = refresh(&app, "user_1").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "token_refresh_failed");
    let account = app.account("user_1").await;
    assert_eq!(account["status"], "EXPIRED");
    assert_eq!(account["last_error"]["code"], "token_refresh_failed");
    let reference = account["last_error"]["reference"].as_str().unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains(reference));
    let event = app.reference(reference).await;
    assert!(event["detail"].as_str().unwrap().starts_with("invalid_grant"), "{event}");
    // An EXPIRED account has no usable token.
    let (status, body) = token(&app, "user_1").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "account_not_active");
}

#[tokio::test]
async fn tokens_are_refreshed_in_the_background_before_they_expire() {
    let app = spawn_with(exposing()).await;
    // Four-second tokens: due once two seconds are left.
    let provider = RotatingProvider::new(4, 3600);
    provider.mount(&app).await;
    let connected = Instant::now();
    connect(&app, "user_1").await;
    let first = provider.last_access_token();

    // No API call: the background refresher renews the token on its own.
    assert!(eventually(Duration::from_secs(8), async || provider.refreshes() >= 1).await, "refreshed in time");
    let refreshed_at = provider.seen.lock().unwrap().refreshes[0];
    assert!(refreshed_at - connected < Duration::from_secs(4), "before the token expired");
    assert!(
        eventually(Duration::from_secs(3), async || {
            stored_access_token(&app, "user_1").await.is_some_and(|at| at != first)
        })
        .await
    );
    assert_eq!(stored_access_token(&app, "user_1").await, Some(provider.last_access_token()));
    // The new token lives an hour: nothing is due any more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(provider.refreshes(), 1);
    assert_eq!(provider.refused(), 0);
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");
}

/// The `refresh_due_at` (unix ms) and `refresh_failures` stored for an account.
async fn schedule(app: &TestApp, identifier: &str) -> (Option<i64>, i64) {
    let rows = app
        .sql_rows(&format!(
            "SELECT refresh_due_at, refresh_failures FROM connected_accounts WHERE identifier = '{identifier}'"
        ))
        .await;
    let row = &rows[0];
    (row[0].as_deref().map(|v| v.parse().unwrap()), row[1].as_deref().unwrap().parse().unwrap())
}

#[tokio::test]
async fn a_provider_that_fails_refreshes_is_retried_with_backoff_not_hammered() {
    let app = spawn_with(exposing()).await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=authorization_code"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "at-secret-value-0001", "refresh_token": "rt-secret-value-0001", "expires_in": 3,
        })))
        .mount(&app.provider)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(503).set_body_string("upstream overloaded"))
        .mount(&app.provider)
        .await;
    connect(&app, "user_1").await;
    let refreshes = async || {
        let requests = app.provider.received_requests().await.unwrap_or_default();
        requests.iter().filter(|r| String::from_utf8_lossy(&r.body).contains("grant_type=refresh_token")).count()
    };
    assert!(eventually(Duration::from_secs(6), async || refreshes().await >= 1).await);
    // Four seconds more at one look a second: still the one attempt, the next one 30 seconds out.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(refreshes().await, 1, "a failing provider is not hammered");
    let (due, failures) = schedule(&app, "user_1").await;
    assert_eq!(failures, 1);
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    assert!(due.unwrap() > now_ms + 20_000, "retried after a backoff: {due:?} vs {now_ms}");
    // The account is unchanged and says what happened.
    let account = app.account("user_1").await;
    assert_eq!(account["status"], "ACTIVE");
    assert_eq!(account["last_error"]["code"], "token_refresh_failed");
    let event = app.reference(account["last_error"]["reference"].as_str().unwrap()).await;
    assert_eq!(event["provider_status"], 503, "{event}");
}

#[tokio::test]
async fn a_provider_that_rate_limits_refreshes_is_waited_for() {
    let app = spawn_with(exposing()).await;
    app.mock_token_success(1).await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "600")
                .set_body_json(json!({ "error": "rate_limited" })),
        )
        .expect(1)
        .with_priority(1)
        .mount(&app.provider)
        .await;
    connect(&app, "user_1").await;
    let (status, body) = refresh(&app, "user_1").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let (due, failures) = schedule(&app, "user_1").await;
    assert_eq!(failures, 1);
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    assert!(due.unwrap() >= now_ms + 590_000, "no retry before Retry-After: {due:?} vs {now_ms}");
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");
}

#[tokio::test]
async fn a_slow_provider_bounds_the_refresh_and_leaves_the_account_unchanged() {
    let app = spawn_with(Options { token_timeout_seconds: 1, ..exposing() }).await;
    app.mock_token_success(1).await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "access_token": "at-too-late-value-0009", "expires_in": 3600 }))
                .set_delay(Duration::from_secs(5)),
        )
        .with_priority(1)
        .mount(&app.provider)
        .await;
    connect(&app, "user_1").await;
    let started = Instant::now();
    let (status, body) = refresh(&app, "user_1").await;
    assert!(started.elapsed() < Duration::from_secs(4), "bounded by token_timeout_seconds");
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("timeout"), "{body}");
    let account = app.account("user_1").await;
    assert_eq!(account["status"], "ACTIVE");
    let event = app.reference(account["last_error"]["reference"].as_str().unwrap()).await;
    assert!(event["detail"].as_str().unwrap().starts_with("timeout"), "{event}");
    assert_eq!(stored_access_token(&app, "user_1").await.as_deref(), Some("at-secret-value-0001"));
}

#[tokio::test]
async fn a_lying_or_unreachable_provider_leaves_the_account_unchanged() {
    let app = spawn_with(exposing()).await;
    app.mock_token_success(1).await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>Sign in to continue</html>"))
        .with_priority(1)
        .mount(&app.provider)
        .await;
    connect(&app, "user_1").await;
    let (status, body) = refresh(&app, "user_1").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("malformed_response"), "{body}");
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");
    assert_eq!(stored_access_token(&app, "user_1").await.as_deref(), Some("at-secret-value-0001"));

    // The same account, served by an instance whose provider cannot be reached.
    let unreachable = spawn_with(Options {
        database: Some(app.database_url.clone()),
        secret_key: Some(app.secret_key.clone()),
        provider_base: Some("http://127.0.0.1:9".into()),
        ..exposing()
    })
    .await;
    let (status, body) = refresh(&unreachable, "user_1").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("provider_unavailable"), "{body}");
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");
    assert_eq!(stored_access_token(&app, "user_1").await.as_deref(), Some("at-secret-value-0001"));
}

#[tokio::test]
async fn a_token_that_expires_without_a_refresh_token_expires_the_account() {
    let app = spawn_with(exposing()).await;
    app.mock_token(
        ResponseTemplate::new(200)
            .set_body_json(json!({ "access_token": "at-short-lived-value-0007", "expires_in": 2 })),
    )
    .await;
    connect(&app, "user_1").await;
    // Within its lifetime the token is handed out as it is: there is nothing to refresh it with.
    let (status, body) = token(&app, "user_1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        eventually(Duration::from_secs(6), async || app.account("user_1").await["status"] == "EXPIRED").await,
        "expired in the background"
    );
    let account = app.account("user_1").await;
    assert_eq!(account["last_error"]["code"], "token_expired");
    let (status, body) = token(&app, "user_1").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "account_not_active");
    // Nothing was sent to the token endpoint but the code exchange.
    let requests = app.provider.received_requests().await.unwrap();
    assert_eq!(requests.iter().filter(|r| r.url.path() == "/token").count(), 1);
}

#[tokio::test]
async fn accounts_granted_fewer_scopes_than_the_connection_asks_for_now_say_which_are_missing() {
    let app = spawn_with(exposing()).await;
    app.mock_token_success(1).await;
    connect(&app, "user_1").await;
    assert_eq!(app.account("user_1").await["missing_scopes"], json!([]));
    // The connection asks for more since: the same database, served with a wider scope list.
    let wider = spawn_with(Options {
        database: Some(app.database_url.clone()),
        secret_key: Some(app.secret_key.clone()),
        provider_base: Some(app.provider.uri()),
        scopes: r#"["read", "write", "admin", "openid"]"#,
        ..exposing()
    })
    .await;
    let account = wider.account("user_1").await;
    assert_eq!(account["scopes"], json!(["read", "write"]));
    assert_eq!(account["missing_scopes"], json!(["admin"]), "{account}");
    let (_, page) = call(&wider, Method::GET, "/v1/connected-accounts?connection=mock").await;
    assert_eq!(page["data"][0]["missing_scopes"], json!(["admin"]), "{page}");
    // Accounts without tokens have nothing missing to report.
    wider.mint_link("not_yet").await;
    assert_eq!(wider.account("not_yet").await["missing_scopes"], json!([]));
}

#[tokio::test]
async fn a_new_link_for_an_active_account_keeps_its_tokens_working_until_the_new_consent_succeeds() {
    let app = spawn_with(exposing()).await;
    let provider = RotatingProvider::new(3600, 3600);
    provider.mount(&app).await;
    connect(&app, "user_1").await;
    let original = provider.last_access_token();

    // A new link (say, to grant more scopes) does not touch the account.
    let link = app.mint_link("user_1").await;
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");
    assert_eq!(token(&app, "user_1").await.1["access_token"], original.as_str());
    // The user declines the new consent: the old tokens still work.
    let browser = crate::helpers::Browser::new();
    let started = app.start(&browser, &link).await;
    let declined = app.callback(&browser, &format!("error=access_denied&state={}", started.state)).await;
    let (status, _) = app.follow(&browser, declined).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let account = app.account("user_1").await;
    assert_eq!(account["status"], "ACTIVE", "{account}");
    assert_eq!(token(&app, "user_1").await.1["access_token"], original.as_str());
    // A consent that succeeds replaces them.
    connect(&app, "user_1").await;
    let (_, body) = token(&app, "user_1").await;
    assert_ne!(body["access_token"], original.as_str());
    assert_eq!(body["access_token"], provider.last_access_token());
}

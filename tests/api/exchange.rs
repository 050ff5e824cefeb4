//! The token endpoint's faults: each ends on the result page as `failed_to_exchange_token`, with the status, the
//! next steps and the cause the catalog gives it, the provider's answer kept (bounded and redacted) behind the
//! reference, and nothing stored for the account.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{CLIENT_SECRET, CONNECTION, Options, TestApp, code_on, reference_on, spawn_app, spawn_with};

// ---------------------------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------------------------

/// Longest provider body excerpt a reference may keep: 2048 characters and the "… [n more bytes]" marker.
const MAX_STORED_BODY_CHARS: usize = 2048 + 32;

/// How a flow against a failing token endpoint ended.
struct Failed {
    status: StatusCode,
    page: String,
    code: String,
    /// The record behind the page's reference.
    record: Value,
}

impl Failed {
    fn cause(&self) -> &str {
        self.record["cause"].as_str().unwrap_or("(none)")
    }

    fn offers(&self, action: &str) -> bool {
        self.page.contains(&format!("data-action=\"{action}\""))
    }

    fn provider_body(&self) -> Option<&str> {
        self.record["provider_body"].as_str()
    }
}

/// Runs one flow for `user_1` against a token endpoint that answers `response`, and reads where it ended: as
/// `failed_to_exchange_token`, which is what the token endpoint's faults end as unless the catalog names them more
/// precisely.
async fn connect_against(app: &TestApp, response: ResponseTemplate) -> Failed {
    let failed = connect_ending_as_any_failure(app, response).await;
    assert_eq!(failed.code, "failed_to_exchange_token", "record: {}", failed.record);
    failed
}

/// Runs one flow for `user_1` against a token endpoint that answers `response`.
///
/// Whatever the fault, the flow ends on the result page as a failure, exactly one token request was made, the new
/// account stays `PENDING_AUTH` with this failure as its last error, and no tokens are stored.
async fn connect_ending_as_any_failure(app: &TestApp, response: ResponseTemplate) -> Failed {
    app.mock_token(response).await;
    let (browser, started) = app.begin("user_1").await;
    let callback = app.callback(&browser, &format!("code=the-code&state={}", started.state)).await;
    let (status, page) = app.follow(&browser, callback).await;

    assert!(page.contains("data-outcome=\"failed\""), "{page}");
    let code = code_on(&page);
    let reference = reference_on(&page);
    let record = app.reference(&reference).await;
    assert_eq!(record["code"], code.as_str());
    assert_eq!(record["identifier"], "user_1");
    assert_eq!(token_requests(app).await, 1, "one token request, never retried");

    let account = app.account("user_1").await;
    assert_eq!(account["status"], "PENDING_AUTH");
    assert_eq!(account["last_error"]["code"], code.as_str());
    assert_eq!(account["last_error"]["reference"], reference.as_str());
    assert!(app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.is_none());
    assert!(!page.contains(CLIENT_SECRET));
    Failed { status, page, code, record }
}

async fn token_requests(app: &TestApp) -> usize {
    app.provider
        .received_requests()
        .await
        .expect("request recording is on")
        .iter()
        .filter(|r| r.url.path() == "/token")
        .count()
}

fn json_body(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/json")
}

fn html_page(status: u16, filler_bytes: usize) -> ResponseTemplate {
    let body = format!(
        "<!doctype html><html><head><title>Bad Gateway</title></head><body><h1>Something broke</h1><p>{}</p></body></html>",
        "x".repeat(filler_bytes)
    );
    ResponseTemplate::new(status).set_body_raw(body, "text/html; charset=utf-8")
}

// ---------------------------------------------------------------------------------------------------------------
// The provider refuses
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn invalid_grant_is_400_and_offers_a_restart() {
    let app = spawn_app().await;
    let failed = connect_against(
        &app,
        json_body(400, json!({ "error": "invalid_grant", "error_description": "Code expired <b>long</b> ago" })),
    )
    .await;
    assert_eq!(failed.status, StatusCode::BAD_REQUEST);
    assert_eq!(failed.cause(), "invalid_grant");
    assert_eq!(failed.record["provider_status"], 400);
    assert_eq!(failed.record["error"], "invalid_grant");
    assert_eq!(failed.record["error_description"], "Code expired <b>long</b> ago");
    assert!(failed.provider_body().is_some_and(|b| b.contains("invalid_grant")));
    assert!(failed.offers("restart") && failed.offers("return"));
    assert!(!failed.offers("support"));
    assert!(!failed.page.contains("<b>long</b>"), "provider text is escaped");
}

#[tokio::test]
async fn invalid_client_is_502_and_offers_support_not_a_restart() {
    let app = spawn_app().await;
    let failed = connect_against(&app, json_body(401, json!({ "error": "invalid_client" }))).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert_eq!(failed.cause(), "invalid_client");
    assert_eq!(failed.record["provider_status"], 401);
    assert_eq!(failed.record["error"], "invalid_client");
    assert!(!failed.offers("restart"), "restarting cannot fix the app's credentials");
    assert!(failed.offers("support") && failed.offers("return"));
}

#[tokio::test]
async fn a_200_with_an_oauth_error_is_invalid_grant() {
    for body in [
        json!({ "error": "bad_verification_code", "error_description": "The code passed is incorrect or expired." }),
        json!({ "ok": false, "error": "invalid_code" }),
    ] {
        let app = spawn_app().await;
        let failed = connect_against(&app, json_body(200, body.clone())).await;
        assert_eq!(failed.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(failed.cause(), "invalid_grant", "{body}");
        assert_eq!(failed.record["provider_status"], 200);
        assert_eq!(failed.record["error"], body["error"]);
        assert!(failed.offers("restart"));
    }
}

#[tokio::test]
async fn a_200_with_redirect_uri_mismatch_is_that_cause_naming_the_exact_uri() {
    let app = spawn_app().await;
    let failed = connect_ending_as_any_failure(&app, json_body(200, json!({ "error": "redirect_uri_mismatch" }))).await;
    assert_eq!(failed.code, "failed_to_exchange_token", "at the token endpoint it is a cause of the exchange failure");
    assert_eq!(failed.cause(), "redirect_uri_mismatch");
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert_eq!(failed.record["provider_status"], 200);
    assert_eq!(failed.record["error"], "redirect_uri_mismatch");
    let hint = failed.record["hint"].as_str().unwrap();
    assert!(hint.contains(&app.url("/connect/callback/mock")), "the hint names the exact redirect URI: {hint}");
    assert!(!failed.offers("restart"), "restarting cannot fix the registered redirect URI");
    assert!(failed.offers("support"));
}

#[tokio::test]
async fn another_spelling_of_a_redirect_uri_mismatch_is_that_cause_of_failed_to_exchange_token() {
    let app = spawn_app().await;
    let failed = connect_against(&app, json_body(400, json!({ "error": "bad_redirect_uri" }))).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert_eq!(failed.cause(), "redirect_uri_mismatch");
    assert_eq!(failed.record["provider_status"], 400);
    let hint = failed.record["hint"].as_str().unwrap();
    assert!(hint.contains(&app.url("/connect/callback/mock")), "the hint names the exact redirect URI: {hint}");
    assert!(!failed.offers("restart"));
    assert!(failed.offers("support"));
}

// ---------------------------------------------------------------------------------------------------------------
// The provider fails
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_empty_500_is_provider_unavailable() {
    let app = spawn_app().await;
    let failed = connect_against(&app, ResponseTemplate::new(500)).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert_eq!(failed.cause(), "provider_unavailable");
    assert_eq!(failed.record["provider_status"], 500);
    assert!(failed.offers("restart") && failed.offers("status"));
}

#[tokio::test]
async fn a_token_endpoint_slower_than_the_timeout_is_504_timeout() {
    let app = spawn_with(Options { token_timeout_seconds: 1, ..Options::default() }).await;
    let began = Instant::now();
    let failed = connect_against(
        &app,
        json_body(200, json!({ "access_token": "late-token-value" })).set_delay(Duration::from_secs(3)),
    )
    .await;
    assert!(began.elapsed() < Duration::from_millis(2_800), "the browser waits for the timeout, not the provider");
    assert_eq!(failed.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(failed.cause(), "timeout");
    assert_eq!(failed.record["provider_status"], Value::Null);
    assert!(failed.offers("restart") && failed.offers("status"));
}

#[tokio::test]
async fn an_html_error_page_with_502_is_provider_unavailable_and_its_body_is_bounded() {
    let app = spawn_app().await;
    let failed = connect_against(&app, html_page(502, 20_000)).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert_eq!(failed.cause(), "provider_unavailable");
    assert_eq!(failed.record["provider_status"], 502);
    let body = failed.provider_body().expect("an excerpt is kept");
    assert!(body.starts_with("<!doctype html>"), "{body}");
    assert!(body.chars().count() <= MAX_STORED_BODY_CHARS, "{} chars kept", body.chars().count());
}

// ---------------------------------------------------------------------------------------------------------------
// The provider answers something that is not a token response
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_is_malformed_response() {
    let app = spawn_app().await;
    let failed =
        connect_against(&app, ResponseTemplate::new(200).set_body_raw("{\"access_token\":", "application/json")).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert_eq!(failed.cause(), "malformed_response");
    assert_eq!(failed.record["provider_status"], 200);
    assert!(failed.offers("restart") && failed.offers("support"));
}

#[tokio::test]
async fn an_html_page_with_200_is_malformed_response() {
    let app = spawn_app().await;
    let failed = connect_against(&app, html_page(200, 100)).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert_eq!(failed.cause(), "malformed_response");
    assert_eq!(failed.record["provider_status"], 200);
    assert!(failed.provider_body().is_some_and(|b| b.contains("Something broke")));
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_is_malformed_response() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/elsewhere/token"))
        .respond_with(json_body(200, json!({ "access_token": "redirected-token-value" })))
        .expect(0)
        .mount(&app.provider)
        .await;
    let elsewhere = format!("{}/elsewhere/token", app.provider.uri());
    let failed = connect_against(&app, ResponseTemplate::new(302).insert_header("Location", elsewhere.as_str())).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert_eq!(failed.cause(), "malformed_response");
    assert_eq!(failed.record["provider_status"], 302);
    assert!(failed.record["detail"].as_str().unwrap().contains("/elsewhere/token"));
    app.provider.verify().await;
}

#[tokio::test]
async fn an_oversized_body_is_malformed_response_and_is_not_stored_whole() {
    let app = spawn_app().await;
    let padding = "a".repeat(200 * 1024);
    let failed =
        connect_against(&app, json_body(200, json!({ "access_token": "huge-token-value", "padding": padding }))).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert_eq!(failed.cause(), "malformed_response");
    assert_eq!(failed.record["provider_status"], 200);
    assert!(failed.provider_body().is_none_or(|b| b.chars().count() <= MAX_STORED_BODY_CHARS));
    assert!(!failed.record.to_string().contains("huge-token-value"));
}

// ---------------------------------------------------------------------------------------------------------------
// Secrets in provider bodies
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn secrets_echoed_in_an_error_body_are_redacted_before_storing() {
    let app = spawn_app().await;
    let failed = connect_against(
        &app,
        json_body(
            400,
            json!({
                "error": "invalid_grant",
                "access_token": "leaked-token-value",
                "request": { "code": "the-code", "client_secret": CLIENT_SECRET, "refresh_token": "leaked-refresh-value" },
            }),
        ),
    )
    .await;
    let body = failed.provider_body().expect("the body excerpt is kept");
    assert!(body.contains("[redacted]"), "{body}");
    let stored = failed.record.to_string();
    for secret in ["leaked-token-value", "leaked-refresh-value", CLIENT_SECRET, "the-code"] {
        assert!(!stored.contains(secret), "{secret} stored: {stored}");
        assert!(!failed.page.contains(secret), "{secret} shown on the page");
    }
}

#[tokio::test]
async fn an_oauth_error_status_is_a_rejection_even_when_the_body_echoes_an_access_token() {
    let app = spawn_app().await;
    let failed = connect_against(
        &app,
        json_body(
            400,
            json!({ "error": "invalid_grant", "error_description": "Code was already redeemed.", "access_token": "leaked-token-value" }),
        ),
    )
    .await;
    assert!(!failed.record.to_string().contains("leaked-token-value"));
    assert_eq!(failed.cause(), "invalid_grant", "record: {}", failed.record);
    assert_eq!(failed.status, StatusCode::BAD_REQUEST);
    assert_eq!(failed.record["error"], "invalid_grant");
    assert_eq!(failed.record["error_description"], "Code was already redeemed.");
}

// ---------------------------------------------------------------------------------------------------------------
// Re-authentication
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_failed_exchange_on_reauthentication_keeps_the_active_tokens() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(json_body(200, json!({ "access_token": "first-token-value", "token_type": "Bearer" })))
        .up_to_n_times(1)
        .expect(1)
        .mount(&app.provider)
        .await;
    app.mock_token(json_body(400, json!({ "error": "invalid_grant" }))).await;

    for expected in [StatusCode::OK, StatusCode::BAD_REQUEST] {
        let (browser, started) = app.begin("user_1").await;
        let callback = app.callback(&browser, &format!("code=c&state={}", started.state)).await;
        let (status, page) = app.follow(&browser, callback).await;
        assert_eq!(status, expected, "{page}");
    }
    let account = app.account("user_1").await;
    assert_eq!(account["status"], "ACTIVE");
    assert_eq!(account["last_error"]["code"], "failed_to_exchange_token");
    let tokens = app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.expect("tokens still open");
    assert_eq!(tokens["access_token"], "first-token-value");
    assert_eq!(token_requests(&app).await, 2);
    app.provider.verify().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Answers that look like tokens but are not usable
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_scope_that_is_not_a_string_is_malformed_and_nothing_is_stored() {
    let app = spawn_app().await;
    let failed = connect_against(
        &app,
        json_body(
            200,
            json!({ "access_token": "at-array-scope-0001", "token_type": "Bearer", "scope": ["read", "write"] }),
        ),
    )
    .await;
    assert_eq!(failed.cause(), "malformed_response");
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    let detail = failed.record["detail"].as_str().unwrap();
    assert!(detail.contains("scope is an array, not a space-separated string"), "{detail}");
}

#[tokio::test]
async fn a_token_type_other_than_bearer_is_malformed_and_nothing_is_stored() {
    let app = spawn_app().await;
    let failed = connect_against(
        &app,
        json_body(200, json!({ "access_token": "at-mac-token-0001", "token_type": "mac", "scope": "read write" })),
    )
    .await;
    assert_eq!(failed.cause(), "malformed_response");
    assert!(
        failed.record["detail"].as_str().unwrap().contains("token_type \"mac\" is not bearer"),
        "{}",
        failed.record
    );
}

#[tokio::test]
async fn bearer_in_any_case_connects() {
    let app = spawn_app().await;
    app.mock_token(json_body(
        200,
        json!({ "access_token": "at-bearer-case-0001", "token_type": "BEARER", "scope": "read write" }),
    ))
    .await;
    let (browser, started) = app.begin("user_1").await;
    let callback = app.callback(&browser, &format!("code=the-code&state={}", started.state)).await;
    let (status, page) = app.follow(&browser, callback).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");
}

/// An app with a Slack connection whose endpoints are the wiremock provider's (under `/slack/`).
async fn with_slack() -> TestApp {
    let slack = "[[connections]]\nname = \"slack\"\nprovider = \"slack\"\nclient_id = \"slack-client\"\n\
                 client_secret_env = \"MOCK_CLIENT_SECRET\"\nauthorization_url = \"{mock}/slack/authorize\"\n\
                 token_url = \"{mock}/slack/token\"\nscopes = [\"chat:write\"]\nuser_verification = false\n";
    spawn_with(Options { extra_config: slack.into(), ..Options::default() }).await
}

/// Runs a flow on `connection` whose token endpoint (`token_path`) answers `body`; returns the result page.
async fn connect_on(app: &TestApp, connection: &str, token_path: &str, body: Value) -> (StatusCode, String) {
    Mock::given(method("POST")).and(path(token_path)).respond_with(json_body(200, body)).mount(&app.provider).await;
    let response = app
        .api
        .post(app.url("/v1/authorization-links"))
        .bearer_auth(&app.api_key)
        .json(&json!({ "connection": connection, "identifier": "user_1" }))
        .send()
        .await
        .unwrap();
    let link = response.json::<Value>().await.unwrap()["link"].as_str().unwrap().to_owned();
    let browser = crate::helpers::Browser::new();
    let started = app.start(&browser, &link).await;
    let callback = app.callback_on(&browser, connection, &format!("code=the-code&state={}", started.state)).await;
    app.follow(&browser, callback).await
}

#[tokio::test]
async fn slack_bot_tokens_connect_from_slack_only() {
    let app = with_slack().await;
    // Slack's oauth.v2.access answers token_type "bot": a bearer token by another name, from Slack.
    let bot = json!({ "ok": true, "access_token": "xoxb-bot-token-0001", "token_type": "bot", "scope": "chat:write" });
    let (status, page) = connect_on(&app, "slack", "/slack/token", bot.clone()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let account = app
        .api
        .get(app.url("/v1/connected-accounts/slack/user_1"))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(account["status"], "ACTIVE", "{account}");
    // The same answer from a generic OAuth 2.0 provider is not a token this service can use.
    let (status, page) = connect_on(&app, CONNECTION, "/token", bot).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{page}");
    assert_eq!(code_on(&page), "failed_to_exchange_token");
    let record = app.reference(&reference_on(&page)).await;
    assert_eq!(record["cause"], "malformed_response");
    assert!(app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.is_none());
}

#[tokio::test]
async fn a_refresh_answered_with_an_array_scope_leaves_the_account_as_it_was() {
    use wiremock::matchers::body_string_contains;
    let app = spawn_with(Options { connection_extra: "expose_tokens = true".into(), ..Options::default() }).await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(json_body(
            200,
            json!({ "access_token": "at-never-stored-0002", "token_type": "Bearer", "scope": ["read", "write"] }),
        ))
        .with_priority(1)
        .mount(&app.provider)
        .await;
    app.mock_token_success(1).await;
    let (browser, started) = app.begin("user_1").await;
    let callback = app.callback(&browser, &format!("code=the-code&state={}", started.state)).await;
    assert_eq!(app.follow(&browser, callback).await.0, StatusCode::OK);

    let response = app
        .api
        .post(app.url("/v1/connected-accounts/mock/user_1/refresh"))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "token_refresh_failed");
    assert!(body["error"]["message"].as_str().unwrap().contains("malformed_response"), "{body}");
    let account = app.account("user_1").await;
    assert_eq!(account["status"], "ACTIVE");
    let tokens = app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.unwrap();
    assert_eq!(tokens["access_token"], "at-secret-value-0001", "the stored token is unchanged");
}

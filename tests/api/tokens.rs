//! Tokens at rest: sealed to their account, readable only where a connection exposes them, and still readable
//! across a key rotation.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{CONNECTION, Options, TestApp, new_secret_key, spawn_with};

fn exposing() -> Options {
    Options { connection_extra: "expose_tokens = true".into(), ..Options::default() }
}

async fn connect(app: &TestApp, identifier: &str) {
    let (browser, started) = app.begin(identifier).await;
    let callback = app.callback(&browser, &format!("code=c-{identifier}&state={}", started.state)).await;
    let (status, _) = app.follow(&browser, callback).await;
    assert_eq!(status, StatusCode::OK);
}

async fn token(app: &TestApp, identifier: &str) -> (StatusCode, Value) {
    let response = app
        .api
        .get(app.url(&format!("/v1/connected-accounts/{CONNECTION}/{identifier}/token")))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn raw_tokens_are_only_for_connections_that_expose_them() {
    let app = spawn_with(Options::default()).await;
    app.mock_token_success(1).await;
    connect(&app, "user_1").await;
    let (status, body) = token(&app, "user_1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "tokens_not_exposed");
    assert!(body["error"]["message"].as_str().unwrap().contains("expose_tokens"));
    assert!(!body.to_string().contains("at-secret-value-0001"));

    let app = spawn_with(exposing()).await;
    app.mock_token_success(1).await;
    app.mint_link("pending").await;
    let (status, body) = token(&app, "pending").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "account_not_active");
    connect(&app, "user_1").await;
    let (status, body) = token(&app, "user_1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["access_token"], "at-secret-value-0001");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body.get("refresh_token").is_none(), "the refresh token never leaves the service");
}

#[tokio::test]
async fn a_sealed_token_copied_into_another_account_does_not_open() {
    let app = spawn_with(exposing()).await;
    app.mock_token_success(2).await;
    connect(&app, "user_1").await;
    connect(&app, "user_2").await;
    app.sql(
        "UPDATE connected_accounts SET sealed_tokens = (SELECT sealed_tokens FROM connected_accounts WHERE identifier = 'user_1')
         WHERE identifier = 'user_2'",
    )
    .await;
    let (status, body) = token(&app, "user_2").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["code"], "tokens_unreadable");
    assert!(!body.to_string().contains("at-secret-value"));
    let (status, _) = token(&app, "user_1").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn rotating_the_key_keeps_old_tokens_readable_and_seals_new_ones_with_the_new_key() {
    let old_key = new_secret_key();
    let before = spawn_with(Options { secret_key: Some(old_key.clone()), ..exposing() }).await;
    before.mock_token_success(1).await;
    connect(&before, "user_1").await;
    let old_id = before.state.settings.secret_key.id().to_owned();
    let database = before.database_url.clone();
    let link_before = before.mint_link("user_3").await;

    // The same data, a new key, the old one as previous.
    let after = spawn_with(Options {
        secret_key: Some(new_secret_key()),
        previous_keys: Some(old_key),
        database: Some(database.clone()),
        ..exposing()
    })
    .await;
    after.mock_token_success(1).await;
    let (status, body) = token(&after, "user_1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["access_token"], "at-secret-value-0001");
    connect(&after, "user_2").await;
    let (_, user_2_key) = after.store.sealed_tokens(CONNECTION, "user_2").await.unwrap().unwrap();
    let (_, user_1_key) = after.store.sealed_tokens(CONNECTION, "user_1").await.unwrap().unwrap();
    assert_eq!(user_2_key, after.state.settings.secret_key.id(), "new writes use the current key");
    assert_eq!(user_1_key, old_id);
    assert_ne!(user_1_key, user_2_key);
    // A link signed before the rotation still opens.
    let local = link_before.replace(&before.address, &after.address);
    let response = after.api.get(&local).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);

    // Once the old key is dropped, its tokens no longer open.
    let dropped =
        spawn_with(Options { secret_key: Some(new_secret_key()), database: Some(database), ..exposing() }).await;
    let (status, body) = token(&dropped, "user_1").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["code"], "tokens_unreadable");
}

fn refreshable() -> Options {
    Options {
        connection_extra: "expose_tokens = true\nrevocation_url = \"{mock}/revoke\"".into(),
        ..Options::default()
    }
}

async fn call(app: &TestApp, method: reqwest::Method, path: &str) -> (StatusCode, Value) {
    let response = app.api.request(method, app.url(path)).bearer_auth(&app.api_key).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn refreshing_replaces_the_access_token_and_keeps_a_refresh_token_the_provider_did_not_rotate() {
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, ResponseTemplate};
    let app = spawn_with(refreshable()).await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains("refresh_token=rt-secret-value-0001"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({ "access_token": "at-refreshed-0002", "expires_in": 3600 })),
        )
        .expect(2)
        .mount(&app.provider)
        .await;
    app.mock_token_success(1).await;
    connect(&app, "user_1").await;
    for _ in 0..2 {
        let (status, account) = call(&app, reqwest::Method::POST, "/v1/connected-accounts/mock/user_1/refresh").await;
        assert_eq!(status, StatusCode::OK, "{account}");
        assert_eq!(account["status"], "ACTIVE");
    }
    let (_, body) = token(&app, "user_1").await;
    assert_eq!(body["access_token"], "at-refreshed-0002");
}

#[tokio::test]
async fn a_refused_refresh_expires_the_account_and_leaves_a_reference() {
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, ResponseTemplate};
    let app = spawn_with(refreshable()).await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            serde_json::json!({ "error": "invalid_grant", "error_description": "Token has been expired or revoked." }),
        ))
        .mount(&app.provider)
        .await;
    app.mock_token_success(1).await;
    connect(&app, "user_1").await;
    let (status, body) = call(&app, reqwest::Method::POST, "/v1/connected-accounts/mock/user_1/refresh").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["error"]["code"], "token_refresh_failed");
    let account = app.account("user_1").await;
    assert_eq!(account["status"], "EXPIRED");
    assert_eq!(account["last_error"]["code"], "token_refresh_failed");
    let event = app.reference(account["last_error"]["reference"].as_str().unwrap()).await;
    assert!(event["detail"].as_str().unwrap().starts_with("invalid_grant"), "{event}");
    assert_eq!(event["error_description"], "Token has been expired or revoked.");
    assert!(!body.to_string().contains("rt-secret-value-0001"));
}

#[tokio::test]
async fn refreshing_needs_an_account_with_a_refresh_token() {
    use wiremock::ResponseTemplate;
    let app = spawn_with(refreshable()).await;
    app.mock_token(
        ResponseTemplate::new(200).set_body_json(serde_json::json!({ "access_token": "at-no-refresh-0003" })),
    )
    .await;
    connect(&app, "user_1").await;
    let (status, body) = call(&app, reqwest::Method::POST, "/v1/connected-accounts/mock/user_1/refresh").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "no_refresh_token");
    app.mint_link("pending").await;
    let (status, body) = call(&app, reqwest::Method::POST, "/v1/connected-accounts/mock/pending/refresh").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "account_not_active");
    let (status, _) = call(&app, reqwest::Method::POST, "/v1/connected-accounts/mock/nobody/refresh").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn disconnecting_revokes_at_the_provider_and_deletes_the_tokens() {
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, ResponseTemplate};
    let app = spawn_with(refreshable()).await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .and(body_string_contains("token=rt-secret-value-0001"))
        .and(body_string_contains("token_type_hint=refresh_token"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&app.provider)
        .await;
    app.mock_token_success(1).await;
    connect(&app, "user_1").await;
    let (status, body) = call(&app, reqwest::Method::DELETE, "/v1/connected-accounts/mock/user_1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "DISCONNECTED");
    assert_eq!(body["revoked"], true);
    assert!(app.store.sealed_tokens(CONNECTION, "user_1").await.unwrap().is_none(), "tokens deleted");
    let (status, body) = token(&app, "user_1").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = call(&app, reqwest::Method::DELETE, "/v1/connected-accounts/mock/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_failed_revocation_still_disconnects() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, ResponseTemplate};
    let app = spawn_with(refreshable()).await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&app.provider)
        .await;
    app.mock_token_success(1).await;
    connect(&app, "user_1").await;
    let (status, body) = call(&app, reqwest::Method::DELETE, "/v1/connected-accounts/mock/user_1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["revoked"], false);
    assert_eq!(app.account("user_1").await["status"], "DISCONNECTED");
}

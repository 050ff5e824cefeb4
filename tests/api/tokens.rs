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
    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite://{}", app.db_path.display()))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE connected_accounts SET sealed_tokens = (SELECT sealed_tokens FROM connected_accounts WHERE identifier = 'user_1')
         WHERE identifier = 'user_2'",
    )
    .execute(&mut db)
    .await
    .unwrap();
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
    let database = before.db_path.clone();
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

//! User verification: after a successful exchange the tokens wait until the app confirms that its logged-in user
//! is the identifier the link was minted for (the defense against "send someone a link and their account gets
//! linked to yours").

use std::time::Duration;

use callback_gate::store::Table;
use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::ResponseTemplate;

use crate::helpers::{Browser, CONNECTION, Options, TestApp, code_on, query_param, reference_on, spawn_with};

fn verifying() -> Options {
    Options { user_verification: true, ..Options::default() }
}

/// Runs a flow to the provider's redirect back; returns the browser and where the callback sent it.
async fn exchange(app: &TestApp, identifier: &str) -> (Browser, String) {
    let (browser, started) = app.begin(identifier).await;
    let callback = app.callback(&browser, &format!("code=c-{identifier}&state={}", started.state)).await;
    assert_eq!(callback.status(), StatusCode::SEE_OTHER);
    let location = callback.headers()["location"].to_str().unwrap().to_owned();
    (browser, location)
}

async fn verify(app: &TestApp, auth_request_id: &str, identifier: &str) -> (StatusCode, Value) {
    let response = app
        .api
        .post(app.url("/v1/user-verifications"))
        .bearer_auth(&app.api_key)
        .json(&json!({ "auth_request_id": auth_request_id, "identifier": identifier }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_verified_user_gets_an_active_account() {
    let app = spawn_with(verifying()).await;
    app.mock_token_success(1).await;
    let (browser, location) = exchange(&app, "user_1").await;
    assert!(location.starts_with(&app.url("/verify?auth_request_id=")), "{location}");
    let auth_request_id = query_param(&location, "auth_request_id");

    // Held, not stored on the account yet.
    assert_eq!(app.account("user_1").await["status"], "PENDING_VERIFICATION");
    assert!(app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.is_none());
    assert_eq!(app.count(Table::PendingVerifications).await, 1);

    let (status, body) = verify(&app, &auth_request_id, "user_1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ACTIVE");
    let redirect_to = body["redirect_to"].as_str().unwrap();
    assert!(redirect_to.starts_with(&app.url("/connect/result/")), "{redirect_to}");
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");
    let tokens = app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.expect("tokens stored");
    assert_eq!(tokens["access_token"], "at-secret-value-0001");
    assert_eq!(app.count(Table::PendingVerifications).await, 0);

    let page = browser.get(redirect_to).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("data-outcome=\"connected\""));

    // Single use.
    let (status, body) = verify(&app, &auth_request_id, "user_1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "auth_request_unknown");
}

#[tokio::test]
async fn a_link_verified_as_another_user_discards_the_tokens() {
    let app = spawn_with(verifying()).await;
    app.mock_token_success(1).await;
    let (browser, location) = exchange(&app, "victim").await;
    let auth_request_id = query_param(&location, "auth_request_id");

    let (status, body) = verify(&app, &auth_request_id, "attacker").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "user_verification_failed");
    let reference = body["error"]["reference"].as_str().unwrap().to_owned();

    let account = app.account("victim").await;
    assert_eq!(account["status"], "PENDING_AUTH");
    assert_eq!(account["last_error"]["code"], "user_verification_failed");
    assert_eq!(account["last_error"]["reference"], reference.as_str());
    assert!(app.open_tokens(CONNECTION, "victim", CONNECTION, "victim").await.is_none());
    assert!(app.store.account(CONNECTION, "attacker").await.unwrap().is_none());
    assert_eq!(app.count(Table::PendingVerifications).await, 0);
    assert_eq!(app.reference(&reference).await["code"], "user_verification_failed");

    let page = browser.get(body["redirect_to"].as_str().unwrap()).await;
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    let page = page.text().await.unwrap();
    assert_eq!(code_on(&page), "user_verification_failed");
    assert_eq!(reference_on(&page), reference);

    // The right user cannot use the discarded request either.
    let (status, _) = verify(&app, &auth_request_id, "victim").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_late_verification_fails_and_discards_the_tokens() {
    let app = spawn_with(Options { flow_ttl_seconds: 1, ..verifying() }).await;
    app.mock_token_success(1).await;
    let (_browser, location) = exchange(&app, "user_1").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = verify(&app, &query_param(&location, "auth_request_id"), "user_1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "user_verification_failed");
    assert_eq!(app.account("user_1").await["status"], "PENDING_AUTH");
    assert!(app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.is_none());
}

#[tokio::test]
async fn a_failed_verification_of_an_active_account_keeps_its_tokens() {
    let app = spawn_with(verifying()).await;
    app.mock_token_success(2).await;
    let (_, location) = exchange(&app, "user_1").await;
    let (status, _) = verify(&app, &query_param(&location, "auth_request_id"), "user_1").await;
    assert_eq!(status, StatusCode::OK);

    // A second connection attempt for the same identifier, finished by someone else.
    let (_, location) = exchange(&app, "user_1").await;
    assert_eq!(app.account("user_1").await["status"], "ACTIVE", "held tokens do not replace active ones");
    let (status, _) = verify(&app, &query_param(&location, "auth_request_id"), "someone_else").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let account = app.account("user_1").await;
    assert_eq!(account["status"], "ACTIVE");
    assert_eq!(account["last_error"]["code"], "user_verification_failed");
    assert!(app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.is_some());
}

#[tokio::test]
async fn verification_requests_are_checked() {
    let app = spawn_with(verifying()).await;
    for (body, status) in [
        (json!({ "auth_request_id": "nope", "identifier": "u" }), StatusCode::NOT_FOUND),
        (json!({ "auth_request_id": "A".repeat(43), "identifier": "u" }), StatusCode::NOT_FOUND),
        (json!({ "auth_request_id": "A".repeat(43), "identifier": "" }), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({ "identifier": "u" }), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let response =
            app.api.post(app.url("/v1/user-verifications")).bearer_auth(&app.api_key).json(&body).send().await.unwrap();
        assert_eq!(response.status(), status, "{body}");
    }
    let unauthenticated = app.api.post(app.url("/v1/user-verifications")).json(&json!({})).send().await.unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_a_verify_url_the_flow_stops_before_the_provider() {
    let app = spawn_with(Options { user_verify_url: false, ..verifying() }).await;
    app.mock_token(ResponseTemplate::new(200)).await;
    let browser = Browser::new();
    let link = app.mint_link("user_1").await;
    let response = browser.get(&link).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let page = response.text().await.unwrap();
    assert_eq!(code_on(&page), "user_verify_url_not_configured");
    let reference = reference_on(&page);
    assert!(app.reference(&reference).await["hint"].as_str().unwrap().contains("user_verify_url"));
    assert_eq!(app.count(Table::Flows).await, 0);
    assert!(app.provider.received_requests().await.unwrap().is_empty());
}

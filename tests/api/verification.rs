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

/// The app confirms `identifier` and the browser follows `redirect_to`, as the app's verify page would send it.
async fn confirm(app: &TestApp, auth_request_id: &str, identifier: &str) -> String {
    let (status, body) = verify(app, auth_request_id, identifier).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "confirmed");
    let redirect_to = body["redirect_to"].as_str().unwrap().to_owned();
    assert!(redirect_to.starts_with(&app.url("/connect/verified/")), "{redirect_to}");
    crate::helpers::record_secret(redirect_to.rsplit('/').next().unwrap());
    redirect_to
}

#[tokio::test]
async fn a_verified_user_gets_an_active_account_in_the_browser_that_consented() {
    let app = spawn_with(verifying()).await;
    app.mock_token_success(1).await;
    let (browser, location) = exchange(&app, "user_1").await;
    assert!(location.starts_with(&app.url("/verify?auth_request_id=")), "{location}");
    let auth_request_id = query_param(&location, "auth_request_id");

    // Held, not stored on the account yet.
    assert_eq!(app.account("user_1").await["status"], "PENDING_VERIFICATION");
    assert!(app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.is_none());
    assert_eq!(app.count(Table::PendingVerifications).await, 1);

    // The app's confirmation alone connects nothing: the browser must bring it back.
    let redirect_to = confirm(&app, &auth_request_id, "user_1").await;
    assert_eq!(app.account("user_1").await["status"], "PENDING_VERIFICATION");
    assert!(app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.is_none());

    let arrival = browser.get(&redirect_to).await;
    assert_eq!(arrival.status(), StatusCode::SEE_OTHER);
    let result = arrival.headers()["location"].to_str().unwrap().to_owned();
    assert!(result.starts_with("/connect/result/"), "{result}");
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");
    let tokens = app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.expect("tokens stored");
    assert_eq!(tokens["access_token"], "at-secret-value-0001");
    assert_eq!(app.count(Table::PendingVerifications).await, 0);

    let page = browser.get(&app.url(&result)).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("data-outcome=\"connected\""));

    // Single use, both the app's answer and the browser's confirmation.
    let (status, body) = verify(&app, &auth_request_id, "user_1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "auth_request_unknown");
    let again = browser.get(&redirect_to).await;
    assert_eq!(again.status(), StatusCode::FORBIDDEN);
    assert_eq!(code_on(&again.text().await.unwrap()), "user_verification_failed");
    assert_eq!(app.account("user_1").await["status"], "ACTIVE", "a replayed confirmation changes nothing");
}

/// The attack: someone holding the victim's authorization link consents with their own provider account, stops
/// at the app's verify URL and sends it to the logged-in victim. The app rightly confirms the victim, but the
/// victim's browser is not the one that consented, so nothing is connected.
#[tokio::test]
async fn a_verify_url_forwarded_to_another_browser_connects_nothing() {
    let app = spawn_with(verifying()).await;
    app.mock_token_success(1).await;
    let (attacker, location) = exchange(&app, "victim").await;
    let auth_request_id = query_param(&location, "auth_request_id");

    // The victim's browser has a browser binding of its own, from an earlier flow.
    let (victim, _) = app.begin("victim_elsewhere").await;
    let redirect_to = confirm(&app, &auth_request_id, "victim").await;
    let page = victim.get(&redirect_to).await;
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    let page = page.text().await.unwrap();
    assert_eq!(code_on(&page), "user_verification_failed");
    let reference = reference_on(&page);
    assert!(!page.contains("at-secret-value-0001"));

    let account = app.account("victim").await;
    assert_eq!(account["status"], "PENDING_AUTH");
    assert_eq!(account["last_error"]["code"], "user_verification_failed");
    assert_eq!(account["last_error"]["reference"], reference.as_str());
    assert!(app.open_tokens(CONNECTION, "victim", CONNECTION, "victim").await.is_none());
    assert_eq!(app.count(Table::PendingVerifications).await, 0, "the held tokens were discarded");
    let event = app.reference(&reference).await;
    assert!(event["detail"].as_str().unwrap().contains("another browser"), "{event}");

    // The consenting browser cannot pick the confirmation up afterwards either.
    let late = attacker.get(&redirect_to).await;
    assert_eq!(late.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.account("victim").await["status"], "PENDING_AUTH");
    assert!(app.open_tokens(CONNECTION, "victim", CONNECTION, "victim").await.is_none());
}

#[tokio::test]
async fn a_confirmation_without_any_browser_binding_connects_nothing() {
    let app = spawn_with(verifying()).await;
    app.mock_token_success(1).await;
    let (_, location) = exchange(&app, "user_1").await;
    let redirect_to = confirm(&app, &query_param(&location, "auth_request_id"), "user_1").await;
    let page = Browser::new().get(&redirect_to).await;
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    assert_eq!(code_on(&page.text().await.unwrap()), "user_verification_failed");
    assert_eq!(app.account("user_1").await["status"], "PENDING_AUTH");
    assert!(app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.is_none());
}

#[tokio::test]
async fn a_browser_that_comes_back_after_the_tokens_expired_connects_nothing() {
    let app = spawn_with(Options { flow_ttl_seconds: 1, ..verifying() }).await;
    app.mock_token_success(1).await;
    let (browser, location) = exchange(&app, "user_1").await;
    let redirect_to = confirm(&app, &query_param(&location, "auth_request_id"), "user_1").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let page = browser.get(&redirect_to).await;
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    let reference = reference_on(&page.text().await.unwrap());
    assert!(app.reference(&reference).await["detail"].as_str().unwrap().contains("expired"));
    assert_eq!(app.account("user_1").await["status"], "PENDING_AUTH");
    assert!(app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.is_none());
}

/// Nobody answers: the result page does not say "waiting" forever once the held tokens are gone.
#[tokio::test]
async fn an_unanswered_verification_ends_instead_of_waiting_forever() {
    let app = spawn_with(Options { flow_ttl_seconds: 1, ..verifying() }).await;
    app.mock_token_success(1).await;
    let (browser, _) = exchange(&app, "user_1").await;
    let flow_id = app.only_flow_id().await;
    let waiting = browser.get(&app.url(&format!("/connect/result/{flow_id}"))).await;
    assert_eq!(waiting.status(), StatusCode::OK);
    assert!(waiting.text().await.unwrap().contains("Waiting for confirmation"));

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let page = browser.get(&app.url(&format!("/connect/result/{flow_id}"))).await;
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    let page = page.text().await.unwrap();
    assert_eq!(code_on(&page), "user_verification_failed");
    let reference = reference_on(&page);
    assert!(app.reference(&reference).await["detail"].as_str().unwrap().contains("before the held tokens expired"));
    let account = app.account("user_1").await;
    assert_eq!(account["status"], "PENDING_AUTH");
    assert_eq!(account["last_error"]["reference"], reference.as_str());
    assert_eq!(app.count(Table::PendingVerifications).await, 0);
    // Refreshing shows the same ending.
    let again = browser.get(&app.url(&format!("/connect/result/{flow_id}"))).await.text().await.unwrap();
    assert_eq!(reference_on(&again), reference);
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
    let (browser, location) = exchange(&app, "user_1").await;
    let redirect_to = confirm(&app, &query_param(&location, "auth_request_id"), "user_1").await;
    assert_eq!(browser.get(&redirect_to).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");

    // A second connection attempt for the same identifier, from a new link, finished by someone else.
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

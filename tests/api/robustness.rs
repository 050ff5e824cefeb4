//! Failures no handler answers (a panic, the request timeout, a method a route lacks) still answer in the request's
//! kind: the API's JSON error under `/v1`, never an HTML page, and the safe page for browsers.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Options, TestApp, spawn_with};

/// What a handler had in hand when it panicked; it must not reach the answer.
const PANIC_DETAIL: &str = "boom-with-detail-7f3a";

async fn panics() -> &'static str {
    panic!("{PANIC_DETAIL}")
}

async fn too_slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(30)).await;
    "late"
}

/// An app with a panicking and a slow route under `/v1` and under `/connect`, merged from outside like the demo's.
async fn spawn_with_failing_routes() -> TestApp {
    let routes = Router::new()
        .route("/v1/test-panic", get(panics))
        .route("/connect/test-panic", get(panics))
        .route("/v1/test-slow", get(too_slow))
        .route("/connect/test-slow", get(too_slow));
    spawn_with(Options {
        extra_routes: Some(routes),
        request_timeout: Some(Duration::from_millis(300)),
        ..Options::default()
    })
    .await
}

/// Asserts an API error answer: `status`, JSON content type, `{"error": {"code", "message"}}`, no markup.
async fn assert_api_error(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "{}", response.url());
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/json"), "{}", response.url());
    let body = response.text().await.unwrap();
    assert!(!body.to_ascii_lowercase().contains("<html"), "{body}");
    let json: Value = serde_json::from_str(&body).unwrap_or_else(|err| panic!("not JSON ({err}): {body}"));
    assert_eq!(json["error"]["code"], code, "{json}");
    assert!(json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{json}");
    json
}

#[tokio::test]
async fn a_panic_under_v1_is_a_json_500_and_a_browser_gets_the_page() {
    let app = spawn_with_failing_routes().await;
    let response = app.api.get(app.url("/v1/test-panic")).send().await.unwrap();
    let json = assert_api_error(response, StatusCode::INTERNAL_SERVER_ERROR, "internal_error").await;
    assert!(!json.to_string().contains(PANIC_DETAIL), "the panic's message is not shown: {json}");

    let response = app.api.get(app.url("/connect/test-panic")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(response.headers()["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    assert_eq!(response.headers()["cache-control"], "no-store");
    let page = response.text().await.unwrap();
    assert!(page.contains("Something went wrong on our side") && !page.contains(PANIC_DETAIL), "{page}");

    // The service still answers after a panic.
    assert_eq!(app.api.get(app.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn the_request_timeout_under_v1_is_a_json_504_and_a_browser_gets_the_page() {
    let app = spawn_with_failing_routes().await;
    let response = app.api.get(app.url("/v1/test-slow")).send().await.unwrap();
    assert_api_error(response, StatusCode::GATEWAY_TIMEOUT, "request_timeout").await;

    let response = app.api.get(app.url("/connect/test-slow")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(response.text().await.unwrap().contains("Something went wrong on our side"));
}

#[tokio::test]
async fn a_wrong_method_under_v1_is_a_json_405_naming_the_allowed_ones() {
    let app = spawn_with_failing_routes().await;
    let response = app.api.put(app.url("/v1/authorization-links")).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(response.headers().get("allow").map(|v| v.to_str().unwrap()), Some("POST"));
    assert_api_error(response, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let response = app
        .api
        .delete(app.url("/v1/connected-accounts/mock/user_1/token"))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert_api_error(response, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    // Routes merged from outside are covered too.
    let response = app.api.post(app.url("/v1/test-panic")).send().await.unwrap();
    assert_api_error(response, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;

    // Unknown API routes stay a JSON 404.
    let response = app.api.get(app.url("/v1/nothing-here")).bearer_auth(&app.api_key).send().await.unwrap();
    assert_api_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

//! `api_key` and `basic` connections: the hosted form, its checks, and the proxy sending the stored credential.
//! The wiremock server plays the provider's API under `/keyapi`, accepting only [`RIGHT_KEY`].

use reqwest::StatusCode;
use reqwest::header::LOCATION;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{Browser, Options, TestApp, code_on, record_secret, spawn_with};

const RIGHT_KEY: &str = "zk-right-key-0123456789";
const WRONG_KEY: &str = "zk-wrong-key-9876543210";

/// An app with `keyed` (an API key sent as `X-Api-Key`, checked at `/me`) and `login` (username and password).
async fn app() -> TestApp {
    for secret in [RIGHT_KEY, WRONG_KEY, "hunter2-password"] {
        record_secret(secret);
    }
    let app = spawn_with(Options {
        extra_config: r#"
[[connections]]
name = "keyed"
display_name = "ZoomInfo"
provider = "api_key"
api_base_url = "{mock}/keyapi"
verify_path = "/me"
credential_header = "X-Api-Key"
credential_prefix = ""
user_verification = false

[[connections]]
name = "login"
provider = "basic"
api_base_url = "{mock}/basicapi"
user_verification = false
"#
        .into(),
        ..Options::default()
    })
    .await;
    Mock::given(method("GET"))
        .and(path("/keyapi/me"))
        .and(header("x-api-key", RIGHT_KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "id": 7 })))
        .with_priority(1)
        .mount(&app.provider)
        .await;
    Mock::given(method("GET"))
        .and(path("/keyapi/me"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({ "error": "invalid_key" })))
        .with_priority(2)
        .mount(&app.provider)
        .await;
    app
}

async fn link_for(app: &TestApp, connection: &str, identifier: &str) -> String {
    let response = app.post_link(json!({ "connection": connection, "identifier": identifier })).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("json");
    let link = body["link"].as_str().expect("link").to_owned();
    record_secret(link.rsplit('/').next().unwrap_or_default());
    link
}

/// A fresh browser that opened a new link's form: the browser, the link and the form's token.
async fn form_for(app: &TestApp, connection: &str, identifier: &str) -> (Browser, String, String) {
    let link = link_for(app, connection, identifier).await;
    let browser = Browser::new();
    let (status, _, token) = open_form(&browser, &link).await;
    assert_eq!(status, StatusCode::OK);
    (browser, link, token)
}

/// The form a link opens: its status, its page and its anti-forgery token.
async fn open_form(browser: &Browser, link: &str) -> (StatusCode, String, String) {
    let response = browser.get(link).await;
    let status = response.status();
    let page = response.text().await.expect("body");
    let token = hidden_token(&page);
    record_secret(&token);
    (status, page, token)
}

fn hidden_token(page: &str) -> String {
    let marker = "name=\"token\" value=\"";
    let start = page.find(marker).map(|i| i + marker.len()).unwrap_or_else(|| panic!("no token in {page}"));
    page[start..start + page[start..].find('"').expect("closing quote")].to_owned()
}

async fn submit(
    app: &TestApp,
    browser: &reqwest::Client,
    connection: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    browser.post(app.url(&format!("/connect/credential/{connection}"))).form(fields).send().await.expect("request")
}

async fn result_page(app: &TestApp, browser: &Browser, response: reqwest::Response) -> (StatusCode, String) {
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "the form's answer leads to the result page");
    let location = response.headers().get(LOCATION).expect("location").to_str().expect("ascii").to_owned();
    assert!(location.starts_with("/connect/result/"), "{location}");
    let page = browser.get(&app.url(&location)).await;
    (page.status(), page.text().await.expect("body"))
}

#[tokio::test]
async fn a_link_of_an_api_key_connection_opens_a_hosted_form() {
    let app = app().await;
    let link = link_for(&app, "keyed", "user_1").await;
    let browser = Browser::new();
    let response = browser.get(&link).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("callback-gate-browser="))
    );
    let csp = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("form-action 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let page = response.text().await.unwrap();
    assert!(page.contains("Connect ZoomInfo"), "{page}");
    assert!(page.contains(r#"<input type="password" id="api_key" name="api_key""#), "{page}");
    assert!(page.contains(r#"action="/connect/credential/keyed""#), "{page}");
    assert!(!page.contains("<script"), "no script on the form");
    assert!(!hidden_token(&page).is_empty());
    assert_eq!(app.account_on("keyed", "user_1").await["status"], "PENDING_AUTH");
}

#[tokio::test]
async fn a_wrong_key_is_refused_with_a_way_to_try_again_and_the_right_key_connects() {
    let app = app().await;
    let (browser, link, token) = form_for(&app, "keyed", "user_1").await;
    let response = submit(&app, &browser.client, "keyed", &[("token", &token), ("api_key", WRONG_KEY)]).await;
    let (status, page) = result_page(&app, &browser, response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code_on(&page), "credential_rejected");
    assert!(page.contains("That key was not accepted"), "{page}");
    assert!(page.contains(r#"data-action="restart""#), "the page offers to try again: {page}");
    assert!(!page.contains(WRONG_KEY));
    let stored = app.account_on("keyed", "user_1").await;
    assert_eq!(stored["status"], "PENDING_AUTH", "nothing stored: {stored}");
    assert_eq!(stored["last_error"]["code"], "credential_rejected");
    assert!(app.store.sealed_tokens("keyed", "user_1").await.unwrap().is_none());

    // Try again: the same link opens a fresh form.
    let (status, _, token) = open_form(&browser, &link).await;
    assert_eq!(status, StatusCode::OK);
    let response = submit(&app, &browser.client, "keyed", &[("token", &token), ("api_key", RIGHT_KEY)]).await;
    let (status, page) = result_page(&app, &browser, response).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(r#"data-outcome="connected""#), "{page}");
    let stored = app.account_on("keyed", "user_1").await;
    assert_eq!(stored["status"], "ACTIVE");
    let tokens = app.open_tokens("keyed", "user_1", "keyed", "user_1").await.expect("sealed credential");
    assert_eq!(tokens["access_token"], RIGHT_KEY);
    let (sealed, _) = app.store.sealed_tokens("keyed", "user_1").await.unwrap().unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains(RIGHT_KEY), "the credential is sealed");

    // The proxy sends it as configured, and never the caller's own value of that header.
    Mock::given(method("GET"))
        .and(path("/keyapi/companies"))
        .and(header("x-api-key", RIGHT_KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "companies": [] })))
        .expect(1)
        .mount(&app.provider)
        .await;
    let response = app
        .api
        .get(app.url("/v1/proxy/keyed/user_1/companies"))
        .bearer_auth(&app.api_key)
        .header("x-api-key", "the-callers-own")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let sent = app.provider.received_requests().await.unwrap();
    let call = sent.iter().find(|r| r.url.path() == "/keyapi/companies").expect("the call");
    assert_eq!(call.headers.get_all("x-api-key").iter().count(), 1);
    assert!(call.headers.get("authorization").is_none());
}

#[tokio::test]
async fn basic_connections_send_username_and_password() {
    let app = app().await;
    let link = link_for(&app, "login", "user_1").await;
    let browser = Browser::new();
    let (status, page, token) = open_form(&browser, &link).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"name="username""#) && page.contains(r#"type="password" id="password""#), "{page}");
    let response = submit(
        &app,
        &browser.client,
        "login",
        &[("token", &token), ("username", "ada"), ("password", "hunter2-password")],
    )
    .await;
    let (status, _) = result_page(&app, &browser, response).await;
    assert_eq!(status, StatusCode::OK);
    Mock::given(method("GET"))
        .and(path("/basicapi/me"))
        .and(header("authorization", "Basic YWRhOmh1bnRlcjItcGFzc3dvcmQ="))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&app.provider)
        .await;
    let response = app.api.get(app.url("/v1/proxy/login/user_1/me")).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_empty_field_shows_the_form_again_and_keeps_the_flow_open() {
    let app = app().await;
    let (browser, _, token) = form_for(&app, "keyed", "user_1").await;
    let response = submit(&app, &browser.client, "keyed", &[("token", &token), ("api_key", "   ")]).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = response.text().await.unwrap();
    assert!(page.contains("data-problem") && page.contains("fill in every field"), "{page}");
    let response = submit(&app, &browser.client, "keyed", &[("token", &token), ("api_key", RIGHT_KEY)]).await;
    let (status, _) = result_page(&app, &browser, response).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn hostile_submissions_get_a_clear_page_and_store_nothing() {
    let app = app().await;
    let (browser, _, token) = form_for(&app, "keyed", "user_1").await;

    // Without the browser's cookie.
    let stranger = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = submit(&app, &stranger, "keyed", &[("token", &token), ("api_key", RIGHT_KEY)]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(code_on(&response.text().await.unwrap()), "browser_mismatch");

    // A token that is not this deployment's.
    let response = submit(&app, &browser.client, "keyed", &[("token", "forged.token"), ("api_key", RIGHT_KEY)]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(code_on(&response.text().await.unwrap()), "state_invalid");
    let response = submit(&app, &browser.client, "keyed", &[("api_key", RIGHT_KEY)]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(code_on(&response.text().await.unwrap()), "state_missing");

    // A megabyte of text.
    let huge = "k".repeat(1024 * 1024);
    let response = submit(&app, &browser.client, "keyed", &[("token", &token), ("api_key", &huge)]).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let page = response.text().await.unwrap();
    assert!(page.contains("This request is too large") && !page.contains("kkkk"), "{page}");
    // Not JSON, not a form.
    let response = browser
        .client
        .post(app.url("/connect/credential/keyed"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("could not be read"));
    assert!(app.store.sealed_tokens("keyed", "user_1").await.unwrap().is_none(), "nothing stored so far");

    // The browser that opened the form connects once; the same form sent again is refused.
    let response = submit(&app, &browser.client, "keyed", &[("token", &token), ("api_key", RIGHT_KEY)]).await;
    let (status, _) = result_page(&app, &browser, response).await;
    assert_eq!(status, StatusCode::OK);
    let response = submit(&app, &browser.client, "keyed", &[("token", &token), ("api_key", WRONG_KEY)]).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(code_on(&response.text().await.unwrap()), "flow_already_used");
    let tokens = app.open_tokens("keyed", "user_1", "keyed", "user_1").await.expect("sealed credential");
    assert_eq!(tokens["access_token"], RIGHT_KEY, "the second submission changed nothing");

    // A form for an OAuth connection does not exist.
    let response = submit(&app, &browser.client, "mock", &[("token", &token), ("api_key", RIGHT_KEY)]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_credential_never_reaches_a_log_line() {
    let app = app().await;
    let (browser, _, token) = form_for(&app, "keyed", "user_log").await;
    let response = submit(&app, &browser.client, "keyed", &[("token", &token), ("api_key", WRONG_KEY)]).await;
    let _ = result_page(&app, &browser, response).await;
    let lines = crate::helpers::log_lines_with("user_log");
    assert!(!lines.is_empty(), "the outcome is logged");
    for line in lines {
        let text = line.to_string();
        assert!(!text.contains(WRONG_KEY) && !text.contains(RIGHT_KEY), "{text}");
    }
}

async fn verify(app: &TestApp, connection: &str, identifier: &str) -> (StatusCode, Value) {
    let response = app
        .api
        .post(app.url(&format!("/v1/connected-accounts/{connection}/{identifier}/verify")))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("request");
    (response.status(), response.json().await.expect("json"))
}

/// Connects `identifier` on `keyed` with the right key.
async fn connect_keyed(app: &TestApp, identifier: &str) {
    let (browser, _, token) = form_for(app, "keyed", identifier).await;
    let response = submit(app, &browser.client, "keyed", &[("token", &token), ("api_key", RIGHT_KEY)]).await;
    let (status, _) = result_page(app, &browser, response).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn verify_calls_the_probe_with_the_stored_credential_and_records_a_failure() {
    let app = app().await;
    connect_keyed(&app, "user_1").await;
    let (status, body) = verify(&app, "keyed", "user_1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["ok"].as_bool(), body["provider_status"].as_u64()), (Some(true), Some(200)), "{body}");
    assert!(body["checked_at"].as_str().is_some_and(|at| at.ends_with('Z')), "{body}");
    assert!(app.account_on("keyed", "user_1").await["last_error"].is_null());

    // The provider now refuses the key: not ok, and the account's last error says so.
    app.provider.reset().await;
    Mock::given(method("GET"))
        .and(path("/keyapi/me"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({ "error": "key_revoked" })))
        .mount(&app.provider)
        .await;
    let (status, body) = verify(&app, "keyed", "user_1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((body["ok"].as_bool(), body["provider_status"].as_u64()), (Some(false), Some(401)), "{body}");
    assert_eq!(body["code"], "token_rejected");
    let stored = app.account_on("keyed", "user_1").await;
    assert_eq!(stored["last_error"]["code"], "token_rejected", "{stored}");
    assert_eq!(stored["last_error"]["reference"], body["reference"]);
    assert!(!body.to_string().contains(RIGHT_KEY));

    // No usable answer at all.
    app.provider.reset().await;
    Mock::given(method("GET"))
        .and(path("/keyapi/me"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&app.provider)
        .await;
    let (_, body) = verify(&app, "keyed", "user_1").await;
    assert_eq!((body["ok"].as_bool(), body["code"].as_str()), (Some(false), Some("credential_check_failed")), "{body}");
    let details = app.reference(body["reference"].as_str().unwrap()).await;
    assert_eq!(details["provider_status"], 503, "{details}");
}

#[tokio::test]
async fn verify_answers_clearly_where_there_is_nothing_to_check() {
    let app = app().await;
    let (status, body) = verify(&app, "keyed", "nobody").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("account_not_found")));
    let (browser, _, token) = form_for(&app, "login", "user_2").await;
    let response = submit(
        &app,
        &browser.client,
        "login",
        &[("token", &token), ("username", "ada"), ("password", "hunter2-password")],
    )
    .await;
    let _ = result_page(&app, &browser, response).await;
    let (status, body) = verify(&app, "login", "user_2").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("no_probe")), "{body}");
    let (status, body) = verify(&app, "keyed", "pending").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn with_user_verification_the_key_waits_for_the_app_to_confirm_its_user() {
    record_secret(RIGHT_KEY);
    let app = spawn_with(Options {
        extra_config: r#"
[[connections]]
name = "keyed"
provider = "api_key"
api_base_url = "{mock}/keyapi"
user_verification = true
"#
        .into(),
        ..Options::default()
    })
    .await;
    let (browser, _, token) = form_for(&app, "keyed", "user_1").await;
    let response = submit(&app, &browser.client, "keyed", &[("token", &token), ("api_key", RIGHT_KEY)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(location.starts_with(&app.url("/verify?auth_request_id=")), "{location}");
    let auth_request_id = crate::helpers::query_param(&location, "auth_request_id");
    record_secret(&auth_request_id);
    assert_eq!(app.account_on("keyed", "user_1").await["status"], "PENDING_VERIFICATION");
    assert!(app.store.sealed_tokens("keyed", "user_1").await.unwrap().is_none(), "held, not stored yet");

    let confirmed: Value = app
        .api
        .post(app.url("/v1/user-verifications"))
        .bearer_auth(&app.api_key)
        .json(&json!({ "auth_request_id": auth_request_id, "identifier": "user_1" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let redirect_to = confirmed["redirect_to"].as_str().expect("redirect_to").to_owned();
    record_secret(redirect_to.rsplit('/').next().unwrap_or_default());
    let (status, page) = result_page(&app, &browser, browser.get(&redirect_to).await).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(app.account_on("keyed", "user_1").await["status"], "ACTIVE");
    let tokens = app.open_tokens("keyed", "user_1", "keyed", "user_1").await.expect("sealed credential");
    assert_eq!(tokens["access_token"], RIGHT_KEY);
}

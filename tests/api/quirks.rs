//! Provider quirks, each against a wiremock double of the provider: connections name the real preset and point its
//! endpoints at the double, so what is tested is the preset's behaviour with the provider's answers.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{Browser, CLIENT_SECRET, Options, Started, TestApp, code_on, record_secret, spawn_with};

/// An app with one connection of `provider`, its endpoints on the double under `/{name}`.
async fn app_with(name: &str, provider: &str, extra: &str) -> TestApp {
    spawn_with(Options {
        extra_config: format!(
            r#"
[[connections]]
name = "{name}"
provider = "{provider}"
client_id = "{name}-client"
client_secret_env = "MOCK_CLIENT_SECRET"
authorization_url = "{{mock}}/{name}/authorize"
token_url = "{{mock}}/{name}/token"
api_base_url = "{{mock}}/{name}/api"
user_verification = false
{extra}
"#
        ),
        ..Options::default()
    })
    .await
}

async fn start_on(app: &TestApp, connection: &str, identifier: &str) -> (Browser, Started) {
    let response = app.post_link(json!({ "connection": connection, "identifier": identifier })).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let link = response.json::<Value>().await.unwrap()["link"].as_str().unwrap().to_owned();
    let browser = Browser::new();
    let started = app.start(&browser, &link).await;
    (browser, started)
}

/// Runs a flow on `connection` to its result page.
async fn connect_on(app: &TestApp, connection: &str, identifier: &str) -> (StatusCode, String) {
    let (browser, started) = start_on(app, connection, identifier).await;
    let callback = app.callback_on(&browser, connection, &format!("code=c-{identifier}&state={}", started.state)).await;
    app.follow(&browser, callback).await
}

async fn token_answer(app: &TestApp, at: &str, body: Value) {
    Mock::given(method("POST"))
        .and(path(at))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&app.provider)
        .await;
}

#[tokio::test]
async fn slack_user_tokens_come_from_authed_user_with_the_team_and_user_ids() {
    let app = app_with("slack", "slack", r#"authorization_params = { user_scope = "search:read" }"#).await;
    record_secret("xoxb-bot-secret-1");
    record_secret("xoxp-user-secret-1");
    token_answer(
        &app,
        "/slack/token",
        json!({
            "ok": true, "app_id": "A1", "access_token": "xoxb-bot-secret-1", "token_type": "bot", "scope": "chat:write",
            "bot_user_id": "UBOT", "team": { "id": "T123", "name": "Acme" }, "enterprise": null,
            "authed_user": { "id": "U456", "scope": "search:read", "access_token": "xoxp-user-secret-1", "token_type": "user" }
        }),
    )
    .await;
    let (browser, started) = start_on(&app, "slack", "user_1").await;
    assert_eq!(started.params.get("user_scope").map(String::as_str), Some("search:read"));
    assert!(!started.params.contains_key("code_challenge"), "the Slack preset sends no PKCE");
    let callback = app.callback_on(&browser, "slack", &format!("code=c1&state={}", started.state)).await;
    let (status, page) = app.follow(&browser, callback).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let sent = app.provider.received_requests().await.unwrap();
    let exchange = sent.iter().find(|r| r.url.path() == "/slack/token").expect("the token request");
    assert!(!String::from_utf8_lossy(&exchange.body).contains("code_verifier"), "no verifier without a challenge");
    let tokens = app.open_tokens("slack", "user_1", "slack", "user_1").await.expect("tokens");
    assert_eq!(tokens["access_token"], "xoxp-user-secret-1", "the user token is the account's");
    let stored = app.account_on("slack", "user_1").await;
    assert_eq!(stored["scopes"], json!(["search:read"]));
    assert_eq!(stored["metadata"]["team_id"], "T123");
    assert_eq!(stored["metadata"]["team_name"], "Acme");
    assert_eq!(stored["metadata"]["user_id"], "U456");
    assert!(!stored.to_string().contains("xox"), "no token in the account: {stored}");
}

#[tokio::test]
async fn slack_ok_false_answers_are_errors_at_the_token_endpoint_and_at_verify() {
    let app = app_with("slack", "slack", r#"verify_path = "/auth.test""#).await;
    Mock::given(method("POST"))
        .and(path("/slack/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "ok": false, "error": "invalid_code" })))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.provider)
        .await;
    let (status, page) = connect_on(&app, "slack", "user_1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert_eq!(code_on(&page), "failed_to_exchange_token");
    assert!(page.contains("invalid_grant"), "invalid_code is Slack's invalid_grant: {page}");

    record_secret("xoxb-bot-secret-2");
    token_answer(
        &app,
        "/slack/token",
        json!({ "ok": true, "access_token": "xoxb-bot-secret-2", "token_type": "bot", "team": { "id": "T1" } }),
    )
    .await;
    let (status, _) = connect_on(&app, "slack", "user_2").await;
    assert_eq!(status, StatusCode::OK);
    Mock::given(method("GET"))
        .and(path("/slack/api/auth.test"))
        .and(header("authorization", "Bearer xoxb-bot-secret-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "ok": false, "error": "token_revoked" })))
        .mount(&app.provider)
        .await;
    let response = app
        .api
        .post(app.url("/v1/connected-accounts/slack/user_2/verify"))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!((body["ok"].as_bool(), body["provider_status"].as_u64()), (Some(false), Some(200)), "{body}");
    assert_eq!(body["code"], "token_rejected");
    let details = app.reference(body["reference"].as_str().unwrap()).await;
    assert_eq!(details["error"], "token_revoked", "{details}");
}

#[tokio::test]
async fn atlassian_accounts_keep_the_cloud_id_and_site_of_accessible_resources() {
    let app = app_with("jira", "atlassian", "").await;
    Mock::given(method("POST"))
        .and(path("/jira/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "at-secret-value-0001", "refresh_token": "rt-secret-value-0001", "token_type": "Bearer",
            "expires_in": 3600, "scope": "read:jira-work offline_access"
        })))
        .mount(&app.provider)
        .await;
    Mock::given(method("GET"))
        .and(path("/jira/api/oauth/token/accessible-resources"))
        .and(header("authorization", "Bearer at-secret-value-0001"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            { "id": "1324a887-45db-1bf4-1e99-ef0ff456d421", "url": "https://acme.atlassian.net", "name": "acme", "scopes": ["read:jira-work"] },
            { "id": "other", "url": "https://other.atlassian.net", "name": "other", "scopes": [] }
        ])))
        .expect(1)
        .mount(&app.provider)
        .await;
    let (browser, started) = start_on(&app, "jira", "user_1").await;
    assert_eq!(started.params.get("audience").map(String::as_str), Some("api.atlassian.com"));
    assert_eq!(started.params.get("prompt").map(String::as_str), Some("consent"));
    let callback = app.callback_on(&browser, "jira", &format!("code=c1&state={}", started.state)).await;
    let (status, page) = app.follow(&browser, callback).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let stored = app.account_on("jira", "user_1").await;
    assert_eq!(stored["metadata"]["cloud_id"], "1324a887-45db-1bf4-1e99-ef0ff456d421", "{stored}");
    assert_eq!(stored["metadata"]["site_url"], "https://acme.atlassian.net");
    assert_eq!(stored["metadata"]["site_count"], "2");
}

#[tokio::test]
async fn microsoft_single_tenant_apps_on_the_common_endpoint_are_named_with_the_fix() {
    let app = spawn_with(Options {
        extra_config: r#"
[[connections]]
name = "outlook"
provider = "microsoft"
client_id = "outlook-client"
client_secret_env = "MOCK_CLIENT_SECRET"
user_verification = false
"#
        .into(),
        ..Options::default()
    })
    .await;
    let response = app.post_link(json!({ "connection": "outlook", "identifier": "user_1" })).await;
    let link = response.json::<Value>().await.unwrap()["link"].as_str().unwrap().to_owned();
    let browser = Browser::new();
    let started = browser.get(&link).await;
    assert_eq!(started.status(), StatusCode::SEE_OTHER);
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("https://login.microsoftonline.com/common/oauth2/v2.0/authorize?"), "{location}");
    let state = url::Url::parse(&location).unwrap().query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    record_secret(&state);
    let description = "AADSTS50194: Application 'x'(outlook) is not configured as a multi-tenant application. Usage of the /common endpoint is not supported for such applications created after '10/15/2018'. Use a tenant-specific endpoint or configure the application to be multi-tenant.";
    let query = format!(
        "error=invalid_request&error_description={}&state={state}",
        url::form_urlencoded::byte_serialize(description.as_bytes()).collect::<String>()
    );
    let callback = app.callback_on(&browser, "outlook", &query).await;
    let (status, page) = app.follow(&browser, callback).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{page}");
    assert_eq!(code_on(&page), "single_tenant_app");
    assert!(page.contains("params.tenant"), "the developer hint names the fix: {page}");
    assert!(page.contains("setup problem on its side"), "the user reads plain words: {page}");
}

#[tokio::test]
async fn salesforce_calls_go_to_the_accounts_instance_url() {
    let app = app_with("crm", "salesforce", "").await;
    let instance = format!("{}/instance-7", app.provider.uri());
    token_answer(
        &app,
        "/crm/token",
        json!({
            "access_token": "at-secret-value-0001", "refresh_token": "rt-secret-value-0001", "token_type": "Bearer",
            "instance_url": instance, "id": "https://login.salesforce.com/id/00D5g000004ABCD/0055g000003WXYZ",
            "issued_at": "1700000000000", "signature": "x"
        }),
    )
    .await;
    let (status, page) = connect_on(&app, "crm", "user_1").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let stored = app.account_on("crm", "user_1").await;
    assert_eq!(stored["metadata"]["instance_url"], instance.as_str(), "{stored}");
    assert_eq!(stored["metadata"]["organization_id"], "00D5g000004ABCD");
    assert_eq!(stored["metadata"]["user_id"], "0055g000003WXYZ");
    Mock::given(method("GET"))
        .and(path("/instance-7/services/data/v61.0/sobjects"))
        .and(header("authorization", "Bearer at-secret-value-0001"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "sobjects": [] })))
        .expect(1)
        .mount(&app.provider)
        .await;
    let response = app
        .api
        .get(app.url("/v1/proxy/crm/user_1/services/data/v61.0/sobjects"))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn notion_exchanges_codes_with_basic_auth_and_keeps_the_workspace() {
    let app = app_with("notion", "notion", "").await;
    let basic = format!("Basic {}", STANDARD.encode(format!("notion-client:{CLIENT_SECRET}")));
    record_secret("secret_notion_token_1");
    Mock::given(method("POST"))
        .and(path("/notion/token"))
        .and(header("authorization", basic.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "secret_notion_token_1", "token_type": "bearer", "bot_id": "b-1",
            "workspace_id": "w-1", "workspace_name": "Acme HQ", "workspace_icon": null,
            "owner": { "type": "user", "user": { "object": "user", "id": "u-1", "person": { "email": "ada@acme.test" } } }
        })))
        .expect(1)
        .mount(&app.provider)
        .await;
    let (browser, started) = start_on(&app, "notion", "user_1").await;
    assert_eq!(started.params.get("owner").map(String::as_str), Some("user"));
    let callback = app.callback_on(&browser, "notion", &format!("code=c1&state={}", started.state)).await;
    let (status, page) = app.follow(&browser, callback).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let sent = app.provider.received_requests().await.unwrap();
    let exchange = sent.iter().find(|r| r.url.path() == "/notion/token").expect("the token request");
    assert!(!String::from_utf8_lossy(&exchange.body).contains("client_secret"), "the secret goes in the header only");
    let stored = app.account_on("notion", "user_1").await;
    assert_eq!(stored["metadata"]["workspace_id"], "w-1", "{stored}");
    assert_eq!(stored["metadata"]["workspace_name"], "Acme HQ");
    assert_eq!(stored["metadata"]["user_id"], "u-1");
    assert_eq!(stored["metadata"]["email"], "ada@acme.test");
}

#[tokio::test]
async fn github_errors_answered_with_200_end_the_flow_with_the_cause() {
    let app = app_with("gh", "github", "").await;
    Mock::given(method("POST"))
        .and(path("/gh/token"))
        .and(body_string_contains("code=c-user_1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "error": "bad_verification_code",
            "error_description": "The code passed is incorrect or expired.",
            "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code"
        })))
        .mount(&app.provider)
        .await;
    let (status, page) = connect_on(&app, "gh", "user_1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert_eq!(code_on(&page), "failed_to_exchange_token");
    assert!(page.contains("invalid_grant"), "{page}");
    let stored = app.account_on("gh", "user_1").await;
    assert_eq!(stored["status"], "PENDING_AUTH", "nothing stored: {stored}");
}

#[tokio::test]
async fn google_asks_for_offline_access_and_consent_so_a_refresh_token_comes_back() {
    let app = app_with("gmail", "google", "").await;
    let (_, started) = start_on(&app, "gmail", "user_1").await;
    assert_eq!(started.params.get("access_type").map(String::as_str), Some("offline"));
    assert_eq!(started.params.get("prompt").map(String::as_str), Some("consent"));
    assert!(started.params.contains_key("code_challenge"));
}

/// A Slack app with `user_1` connected (bot token `xoxb-proxy-secret-1`, no refresh token), its API on the double.
async fn slack_connected() -> TestApp {
    let app = app_with("slack", "slack", "").await;
    record_secret("xoxb-proxy-secret-1");
    token_answer(
        &app,
        "/slack/token",
        json!({ "ok": true, "access_token": "xoxb-proxy-secret-1", "token_type": "bot", "scope": "chat:write", "team": { "id": "T1" } }),
    )
    .await;
    let (status, page) = connect_on(&app, "slack", "user_1").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    app
}

async fn proxy_get(app: &TestApp, path: &str) -> reqwest::Response {
    app.api.get(app.url(&format!("/v1/proxy/slack/user_1/{path}"))).bearer_auth(&app.api_key).send().await.unwrap()
}

#[tokio::test]
async fn slack_ok_false_through_the_proxy_flags_the_account() {
    let app = slack_connected().await;
    Mock::given(method("GET"))
        .and(path("/slack/api/conversations.list"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "ok": false, "error": "token_revoked" })))
        .mount(&app.provider)
        .await;
    let response = proxy_get(&app, "conversations.list").await;
    assert_eq!(response.status(), StatusCode::OK, "Slack's answer is passed back as it came");
    let reference = response.headers()["callback-gate-reference"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "token_revoked");
    let stored = app.account_on("slack", "user_1").await;
    assert_eq!(stored["last_error"]["code"], "token_rejected", "{stored}");
    assert_eq!(stored["last_error"]["reference"], reference.as_str());
    assert_eq!(app.reference(&reference).await["error"], "token_revoked");

    Mock::given(method("POST"))
        .and(path("/slack/api/chat.postMessage"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": false, "error": "missing_scope", "needed": "chat:write.public", "provided": "chat:write"
        })))
        .mount(&app.provider)
        .await;
    let response = app
        .api
        .post(app.url("/v1/proxy/slack/user_1/chat.postMessage"))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("callback-gate-reference"));
    let stored = app.account_on("slack", "user_1").await;
    assert_eq!(stored["missing_scopes"], json!(["chat:write.public"]), "{stored}");
    assert_eq!(stored["last_error"]["code"], "insufficient_scope");
}

#[tokio::test]
async fn slack_answers_that_are_no_error_pass_whole_however_large() {
    let app = slack_connected().await;
    let members: Vec<Value> =
        (0..4000).map(|i| json!({ "id": format!("U{i:06}"), "name": format!("member-{i}") })).collect();
    let large = json!({ "ok": true, "members": members }).to_string();
    assert!(large.len() > 64 * 1024);
    Mock::given(method("GET"))
        .and(path("/slack/api/users.list"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(large.clone(), "application/json"))
        .mount(&app.provider)
        .await;
    Mock::given(method("GET"))
        .and(path("/slack/api/channel.info"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "ok": false, "error": "channel_not_found" })))
        .mount(&app.provider)
        .await;
    let response = proxy_get(&app, "users.list").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), large);
    let response = proxy_get(&app, "channel.info").await;
    assert!(!response.headers().contains_key("callback-gate-reference"), "a wrong call is not the token's fault");
    assert!(app.account_on("slack", "user_1").await["last_error"].is_null());
}

#[tokio::test]
async fn a_slack_token_refused_with_ok_false_is_refreshed_once_and_the_call_retried() {
    let app = app_with("slack", "slack", "").await;
    for secret in ["xoxe.xoxp-old-secret-1", "xoxe-1-refresh-secret-1", "xoxe.xoxp-new-secret-2"] {
        record_secret(secret);
    }
    Mock::given(method("POST"))
        .and(path("/slack/token"))
        .and(body_string_contains("grant_type=authorization_code"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true, "access_token": "xoxe.xoxp-old-secret-1", "refresh_token": "xoxe-1-refresh-secret-1",
            "expires_in": 43200, "token_type": "user", "scope": "search:read", "team": { "id": "T1" }
        })))
        .mount(&app.provider)
        .await;
    Mock::given(method("POST"))
        .and(path("/slack/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true, "access_token": "xoxe.xoxp-new-secret-2", "refresh_token": "xoxe-1-refresh-secret-2",
            "expires_in": 43200, "token_type": "user", "scope": "search:read"
        })))
        .expect(1)
        .mount(&app.provider)
        .await;
    let (status, page) = connect_on(&app, "slack", "user_1").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    Mock::given(method("GET"))
        .and(path("/slack/api/search.messages"))
        .and(header("authorization", "Bearer xoxe.xoxp-new-secret-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "ok": true, "messages": { "total": 0 } })))
        .with_priority(1)
        .mount(&app.provider)
        .await;
    Mock::given(method("GET"))
        .and(path("/slack/api/search.messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "ok": false, "error": "invalid_auth" })))
        .with_priority(2)
        .mount(&app.provider)
        .await;
    let response = proxy_get(&app, "search.messages?query=x").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["ok"], true, "the retried call with the refreshed token: {body}");
    assert!(app.account_on("slack", "user_1").await["last_error"].is_null());
}

//! `/v1/proxy/{connection}/{identifier}/{path}`: the app uses a connected account without ever holding its token.
//! The wiremock provider serves the token endpoint and, under `/api`, the provider's API.

use std::time::Duration;

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{body_string_contains, header, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{CONNECTION, Options, TestApp, spawn_with};
use crate::lifecycle::connect;

const ACCESS: &str = "at-secret-value-0001";
const REFRESHED: &str = "at-refreshed-value-0002";

fn proxied() -> Options {
    Options { connection_extra: "api_base_url = \"{mock}/api\"".into(), ..Options::default() }
}

/// An app with `user_1` connected (access token [`ACCESS`], refresh token `rt-secret-value-0001`).
async fn connected() -> TestApp {
    let app = spawn_with(proxied()).await;
    app.mock_token_success(1).await;
    connect(&app, "user_1").await;
    app
}

/// Token endpoint answering refreshes with [`REFRESHED`].
async fn mock_refresh(app: &TestApp) {
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": REFRESHED, "token_type": "Bearer", "expires_in": 3600,
        })))
        .with_priority(1)
        .mount(&app.provider)
        .await;
}

fn proxy_url(app: &TestApp, rest: &str) -> String {
    app.url(&format!("/v1/proxy/{CONNECTION}/user_1/{rest}"))
}

/// What the provider's API received (requests under `/api`).
async fn api_requests(app: &TestApp) -> Vec<wiremock::Request> {
    let requests = app.provider.received_requests().await.unwrap_or_default();
    requests.into_iter().filter(|r| r.url.path().starts_with("/api")).collect()
}

async fn refresh_requests(app: &TestApp) -> usize {
    let requests = app.provider.received_requests().await.unwrap_or_default();
    requests.iter().filter(|r| String::from_utf8_lossy(&r.body).contains("grant_type=refresh_token")).count()
}

/// Sends a request with the target exactly as given (no client-side normalisation of `..` or `%2e`), and returns
/// the status and body.
async fn raw(app: &TestApp, method: &str, target: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        app.api_key
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn a_get_reaches_the_provider_with_the_accounts_token_and_comes_back_without_its_cookies() {
    let app = connected().await;
    Mock::given(method("GET"))
        .and(path("/api/gmail/v1/users/me/messages"))
        .and(query_param("q", "from:bob"))
        .and(query_param("maxResults", "5"))
        .and(header("authorization", format!("Bearer {ACCESS}").as_str()))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("x-provider-request-id", "req-42")
                .insert_header("set-cookie", "provider_session=secret; Path=/")
                .set_body_json(json!({ "messages": [{ "id": "m1" }] })),
        )
        .expect(1)
        .mount(&app.provider)
        .await;
    let response = app
        .api
        .get(proxy_url(&app, "gmail/v1/users/me/messages?q=from%3Abob&maxResults=5"))
        .bearer_auth(&app.api_key)
        .header("cookie", "app_session=do-not-forward")
        .header("x-request-id", "caller-7")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-provider-request-id"], "req-42");
    assert!(response.headers().get("set-cookie").is_none(), "the provider's cookies never reach the app's domain");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({ "messages": [{ "id": "m1" }] }));

    let sent = &api_requests(&app).await[0];
    assert_eq!(sent.headers["authorization"], format!("Bearer {ACCESS}").as_str(), "the account's token, not the key");
    assert!(sent.headers.get("cookie").is_none(), "the caller's cookies are not forwarded");
    assert_eq!(sent.headers["x-request-id"], "caller-7", "other headers are");
    assert!(!format!("{:?}", sent.headers).contains(&app.api_key), "the API key never reaches the provider");
}

#[tokio::test]
async fn a_post_carries_its_body_and_the_providers_status_comes_back() {
    let app = connected().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .and(body_string_contains("\"text\":\"hello\""))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "ok": true, "ts": "1.2" })))
        .expect(1)
        .mount(&app.provider)
        .await;
    let response = app
        .api
        .post(proxy_url(&app, "chat.postMessage"))
        .bearer_auth(&app.api_key)
        .json(&json!({ "channel": "C1", "text": "hello" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.json::<Value>().await.unwrap()["ts"], "1.2");
    let sent = &api_requests(&app).await[0];
    assert_eq!(sent.headers["content-type"], "application/json");
}

#[tokio::test]
async fn paths_that_could_leave_api_base_url_are_refused_before_anything_is_sent() {
    let app = connected().await;
    Mock::given(wiremock::matchers::any()).respond_with(ResponseTemplate::new(200)).mount(&app.provider).await;
    let base = format!("/v1/proxy/{CONNECTION}/user_1/");
    for hostile in [
        "..",
        "../token",
        "a/../../token",
        "%2e%2e/token",
        "%2E%2e/%2e%2E/token",
        "a%2F..%2F..%2Ftoken",
        "a%5C..%5Ctoken",
        "/evil.example/x",
        "//evil.example/x",
        "https:%2F%2Fevil.example",
        "https:evil.example",
        "a%00b",
        "a%zz",
    ] {
        let (status, body) = raw(&app, "GET", &format!("{base}{hostile}")).await;
        assert_eq!(status, 400, "{hostile}: {body}");
        assert!(body.contains("proxy_path_invalid"), "{hostile}: {body}");
    }
    let (status, _) = raw(&app, "GET", &format!("{base}users/me")).await;
    assert_eq!(status, 200, "an ordinary path goes through");
    let sent = app.provider.received_requests().await.unwrap();
    let paths: Vec<&str> = sent.iter().map(|r| r.url.path()).filter(|p| *p != "/token").collect();
    assert_eq!(paths, ["/api/users/me"], "nothing but the ordinary call reached the provider");
}

#[tokio::test]
async fn a_401_is_answered_by_one_refresh_and_one_retry() {
    let app = connected().await;
    mock_refresh(&app).await;
    Mock::given(method("GET"))
        .and(path("/api/me"))
        .and(header("authorization", format!("Bearer {REFRESHED}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "id": "u1" })))
        .with_priority(1)
        .mount(&app.provider)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/me"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({ "error": "invalid_token" })))
        .mount(&app.provider)
        .await;
    let response = app.api.get(proxy_url(&app, "me")).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["id"], "u1");
    assert_eq!(refresh_requests(&app).await, 1);
    let calls = api_requests(&app).await;
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].headers["authorization"], format!("Bearer {REFRESHED}").as_str());
    let account = app.account("user_1").await;
    assert_eq!(account["status"], "ACTIVE");
    assert!(account["last_error"].is_null(), "{account}");
}

#[tokio::test]
async fn concurrent_calls_answered_401_share_one_refresh() {
    let app = connected().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "access_token": REFRESHED, "token_type": "Bearer", "expires_in": 3600 }))
                .set_delay(Duration::from_millis(300)),
        )
        .with_priority(1)
        .mount(&app.provider)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/me"))
        .and(header("authorization", format!("Bearer {REFRESHED}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "id": "u1" })))
        .with_priority(1)
        .mount(&app.provider)
        .await;
    Mock::given(method("GET")).and(path("/api/me")).respond_with(ResponseTemplate::new(401)).mount(&app.provider).await;
    let calls = join_all((0..6).map(|_| app.api.get(proxy_url(&app, "me")).bearer_auth(&app.api_key).send())).await;
    for call in calls {
        assert_eq!(call.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(refresh_requests(&app).await, 1, "six calls, one refresh");
    // Every call ended with the refreshed token; those that went out before the refresh landed were refused once
    // and retried once (how many did depends on timing, never more than the six).
    let sent = api_requests(&app).await;
    let with_new = sent.iter().filter(|r| r.headers["authorization"] == format!("Bearer {REFRESHED}").as_str()).count();
    let with_old = sent.len() - with_new;
    assert_eq!(with_new, 6, "each call once with the refreshed token");
    assert!((1..=6).contains(&with_old), "{with_old} calls refused with the old token, each retried once");
}

#[tokio::test]
async fn a_401_to_a_fresh_token_flags_the_account_token_rejected() {
    let app = connected().await;
    mock_refresh(&app).await;
    Mock::given(method("GET"))
        .and(path("/api/me"))
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header("www-authenticate", "Bearer error=\"invalid_token\"")
                .set_body_json(json!({ "error": "invalid_token", "error_description": "user is disabled" })),
        )
        .mount(&app.provider)
        .await;
    let response = app.api.get(proxy_url(&app, "me")).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "the provider's answer, passed through");
    let reference = response.headers()["callback-gate-reference"].to_str().unwrap().to_owned();
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "invalid_token");
    assert_eq!(refresh_requests(&app).await, 1, "one refresh");
    assert_eq!(api_requests(&app).await.len(), 2, "one retry");
    let account = app.account("user_1").await;
    assert_eq!(account["status"], "ACTIVE", "only a refused refresh expires an account");
    assert_eq!(account["last_error"]["code"], "token_rejected");
    assert_eq!(account["last_error"]["reference"], reference.as_str());
    let event = app.reference(&reference).await;
    assert_eq!(event["provider_status"], 401);
    assert!(event["provider_body"].as_str().unwrap().contains("user is disabled"), "{event}");
}

#[tokio::test]
async fn a_403_for_a_missing_scope_is_recorded_with_the_scope() {
    let app = connected().await;
    Mock::given(method("POST"))
        .and(path("/api/me/sendMail"))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("www-authenticate", "Bearer error=\"insufficient_scope\", scope=\"mail.send\"")
                .set_body_json(json!({ "error": "insufficient_scope" })),
        )
        .mount(&app.provider)
        .await;
    let response = app
        .api
        .post(proxy_url(&app, "me/sendMail"))
        .bearer_auth(&app.api_key)
        .json(&json!({ "to": "bob" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers()["www-authenticate"].to_str().unwrap().contains("insufficient_scope"));
    let account = app.account("user_1").await;
    assert_eq!(account["status"], "ACTIVE");
    assert_eq!(account["last_error"]["code"], "insufficient_scope");
    assert_eq!(account["missing_scopes"], json!(["mail.send"]), "{account}");
    let event = app.reference(account["last_error"]["reference"].as_str().unwrap()).await;
    assert!(event["detail"].as_str().unwrap().contains("mail.send"), "{event}");
    assert_eq!(refresh_requests(&app).await, 0, "a 403 is not a reason to refresh");
}

#[tokio::test]
async fn a_429_is_passed_through_with_retry_after() {
    let app = connected().await;
    Mock::given(method("GET"))
        .and(path("/api/busy"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "30").set_body_string("slow down"))
        .mount(&app.provider)
        .await;
    let response = app.api.get(proxy_url(&app, "busy")).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "30");
    assert_eq!(response.text().await.unwrap(), "slow down");
    assert_eq!(app.account("user_1").await["last_error"], Value::Null);
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"callback_gate_proxy_calls_total{connection="mock",status="4xx"} 1"#), "{metrics}");
}

#[tokio::test]
async fn an_account_that_is_not_active_answers_409_with_its_status_and_sends_nothing() {
    let app = connected().await;
    Mock::given(wiremock::matchers::any()).respond_with(ResponseTemplate::new(200)).mount(&app.provider).await;
    app.mint_link("user_2").await;
    let response = app
        .api
        .get(app.url(&format!("/v1/proxy/{CONNECTION}/user_2/me")))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "account_not_active");
    assert_eq!(body["error"]["status"], "PENDING_AUTH");
    assert!(body["error"]["message"].as_str().unwrap().contains("authorization link"), "{body}");

    let (status, _) =
        crate::lifecycle::call(&app, Method::DELETE, &format!("/v1/connected-accounts/{CONNECTION}/user_1")).await;
    assert_eq!(status, StatusCode::OK);
    let response = app.api.get(proxy_url(&app, "me")).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], "DISCONNECTED");
    let response = app.api.get(app.url("/v1/proxy/mock/nobody/me")).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(api_requests(&app).await.is_empty(), "nothing was sent to the provider's API");
}

#[tokio::test]
async fn the_proxy_needs_a_key_a_configured_base_and_a_bounded_body() {
    let app = connected().await;
    Mock::given(wiremock::matchers::any()).respond_with(ResponseTemplate::new(200)).mount(&app.provider).await;
    let response = app.api.get(proxy_url(&app, "me")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The second test connection has no api_base_url.
    let response = app.api.get(app.url("/v1/proxy/other/user_1/me")).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "proxy_not_configured");
    let response = app.api.get(app.url("/v1/proxy/nope/user_1/me")).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // A body over 10 MiB, declared or streamed.
    let big = vec![b'x'; 10 * 1024 * 1024 + 1];
    let response =
        app.api.post(proxy_url(&app, "upload")).bearer_auth(&app.api_key).body(big.clone()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let chunks =
        futures::stream::iter(big.chunks(1024 * 1024).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>());
    let response = app
        .api
        .post(proxy_url(&app, "upload"))
        .bearer_auth(&app.api_key)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "proxy_body_too_large");
    // A body under the limit, larger than the rest of the API accepts, goes through.
    let response = app
        .api
        .post(proxy_url(&app, "upload"))
        .bearer_auth(&app.api_key)
        .body(vec![b'y'; 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let uploads: Vec<usize> = api_requests(&app).await.iter().map(|r| r.body.len()).collect();
    assert_eq!(uploads, [1024 * 1024], "only the call within the limit reached the provider");
}

#[tokio::test]
async fn an_unreachable_or_slow_provider_api_is_a_clear_gateway_error() {
    let app = spawn_with(Options {
        connection_extra: "api_base_url = \"http://127.0.0.1:9/api\"".into(),
        ..Options::default()
    })
    .await;
    app.mock_token_success(1).await;
    connect(&app, "user_1").await;
    let response = app.api.get(proxy_url(&app, "me")).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "provider_unreachable");
    assert!(!body.to_string().contains(ACCESS), "{body}");
}

#[tokio::test]
async fn each_call_is_logged_without_its_query_values_or_bodies() {
    let app = connected().await;
    Mock::given(wiremock::matchers::any()).respond_with(ResponseTemplate::new(202)).mount(&app.provider).await;
    let marker = format!("audit-{}", callback_gate::crypto::random_token::<6>().to_lowercase());
    let response = app
        .api
        .post(proxy_url(&app, &format!("{marker}/items?search=private-query-value&token=also-private")))
        .bearer_auth(&app.api_key)
        .body("private-body-value")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let lines = crate::helpers::log_lines_with(&marker);
    assert_eq!(lines.len(), 1, "one event per call: {lines:?}");
    let line = lines[0].to_string();
    let fields = &lines[0];
    assert_eq!(fields["connection"], CONNECTION, "{line}");
    assert_eq!(fields["identifier"], "user_1");
    assert_eq!(fields["method"], "POST");
    assert_eq!(fields["path"], format!("{marker}/items"));
    assert_eq!(fields["provider_status"], 202);
    assert!(fields["latency_ms"].is_number(), "{line}");
    for private in ["private-query-value", "also-private", "private-body-value", ACCESS] {
        assert!(!line.contains(private), "{private} in {line}");
    }
}

#[tokio::test]
async fn refreshes_tokens_and_proxied_calls_at_once_share_one_refresh_and_a_disconnect_ends_them_all() {
    use crate::lifecycle::{RotatingProvider, refresh, token};
    let app = spawn_with(Options {
        connection_extra: "api_base_url = \"{mock}/api\"\nexpose_tokens = true".into(),
        ..Options::default()
    })
    .await;
    // Tokens that live 20 seconds: the token route (60 s) and the proxy (30 s) both want a fresh one.
    let provider = RotatingProvider::new(20, 3600).slow(Duration::from_millis(1500));
    provider.mount(&app).await;
    Mock::given(method("GET")).and(path("/api/me")).respond_with(ResponseTemplate::new(200)).mount(&app.provider).await;
    connect(&app, "user_1").await;

    let refreshes = join_all((0..3).map(|_| refresh(&app, "user_1")));
    let tokens = join_all((0..3).map(|_| token(&app, "user_1")));
    let calls = join_all((0..3).map(|_| app.api.get(proxy_url(&app, "me")).bearer_auth(&app.api_key).send()));
    let (refreshes, tokens, calls) = tokio::join!(refreshes, tokens, calls);
    for (status, body) in refreshes.iter().chain(tokens.iter()) {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    for (_, body) in &tokens {
        assert_eq!(body["access_token"], provider.last_access_token());
    }
    for call in calls {
        assert_eq!(call.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(provider.refreshes(), 1, "nine callers, one refresh");
    assert_eq!(provider.refused(), 0);
    for sent in api_requests(&app).await {
        assert_eq!(sent.headers["authorization"], format!("Bearer {}", provider.last_access_token()).as_str());
    }

    // After a disconnect, none of the three routes gets a token or calls the provider.
    let (status, _) =
        crate::lifecycle::call(&app, Method::DELETE, &format!("/v1/connected-accounts/{CONNECTION}/user_1")).await;
    assert_eq!(status, StatusCode::OK);
    let before = api_requests(&app).await.len();
    assert_eq!(refresh(&app, "user_1").await.0, StatusCode::CONFLICT);
    assert_eq!(token(&app, "user_1").await.0, StatusCode::CONFLICT);
    let call = app.api.get(proxy_url(&app, "me")).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(call.status(), StatusCode::CONFLICT);
    assert_eq!(api_requests(&app).await.len(), before);
    assert_eq!(provider.refreshes(), 1);
    assert_eq!(app.account("user_1").await["status"], "DISCONNECTED");
}

#[tokio::test]
async fn trace_is_never_forwarded_and_an_empty_post_says_its_length() {
    let app = connected().await;
    Mock::given(wiremock::matchers::any()).respond_with(ResponseTemplate::new(200)).mount(&app.provider).await;
    // A provider answering TRACE would echo the request, the account's token in it.
    for method in ["TRACE", "CONNECT"] {
        let response = app
            .api
            .request(Method::from_bytes(method.as_bytes()).unwrap(), proxy_url(&app, "me"))
            .bearer_auth(&app.api_key)
            .send()
            .await
            .unwrap();
        // CONNECT names an authority, not a path: refused before routing.
        assert!(matches!(response.status().as_u16(), 404 | 405), "{method}: {}", response.status());
    }
    assert!(api_requests(&app).await.is_empty(), "nothing was sent");
    // Gmail's `POST .../trash` has no body; Google's front end wants a length all the same.
    let response = app.api.post(proxy_url(&app, "messages/m1/trash")).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let sent = &api_requests(&app).await[0];
    assert_eq!(sent.headers.get("content-length").map(|v| v.to_str().unwrap()), Some("0"));
}

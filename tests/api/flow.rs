//! The happy path and what it stores.

use callback_gate::store::Table;
use reqwest::StatusCode;
use reqwest::header::SET_COOKIE;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{Browser, CLIENT_SECRET, CONNECTION, spawn_app};

#[tokio::test]
async fn the_happy_path_ends_active_with_tokens_sealed_to_the_account() {
    let app = spawn_app().await;
    let browser = Browser::new();
    let link = app.mint_link("user_1").await;

    let start = browser.get(&link).await;
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let cookie = start.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"), "{cookie}");
    let started = app.start(&browser, &link).await;
    let params = &started.params;
    assert_eq!(started.authorize_url.path(), "/authorize");
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["client_id"], "test-client");
    assert_eq!(params["redirect_uri"], app.url("/connect/callback/mock"));
    assert_eq!(params["scope"], "read write");
    assert_eq!(params["code_challenge_method"], "S256");
    assert!(started.state.len() >= 22, "state carries at least 128 bits");
    assert_eq!(started.code_challenge.len(), 43);
    // The state is stored only as a hash.
    let stored: Vec<String> =
        app.sql_rows("SELECT state_hash FROM flows").await.into_iter().filter_map(|mut row| row.remove(0)).collect();
    assert!(stored.contains(&callback_gate::crypto::hash_hex(&started.state)));
    assert!(!stored.iter().any(|hash| hash.contains(&started.state)));

    Mock::given(method("POST"))
        .and(path("/token"))
        .and(header("authorization", &*format!("Basic {}", base64_basic("test-client", CLIENT_SECRET))))
        .and(body_string_contains("grant_type=authorization_code"))
        .and(body_string_contains("code=the-code"))
        .and(body_string_contains("code_verifier="))
        .and(body_string_contains("redirect_uri=http%3A%2F%2F127.0.0.1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "at-secret-value-0001",
            "refresh_token": "rt-secret-value-0001",
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": "read write"
        })))
        .expect(1)
        .mount(&app.provider)
        .await;

    let callback = app.callback(&browser, &format!("code=the-code&state={}", started.state)).await;
    let location = callback.headers()["location"].to_str().unwrap().to_owned();
    assert!(!location.contains("code") && !location.contains("state"), "{location}");
    let (status, page) = app.follow(&browser, callback).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("data-outcome=\"connected\""));
    assert!(page.contains("Connected</h1>"));
    assert!(!page.contains("at-secret-value-0001"));

    let account = app.account("user_1").await;
    assert_eq!(account["status"], "ACTIVE");
    assert_eq!(account["scopes"], serde_json::json!(["read", "write"]));
    assert!(account.get("access_token").is_none());

    let tokens = app
        .open_tokens(CONNECTION, "user_1", CONNECTION, "user_1")
        .await
        .expect("tokens open with the right associated data");
    assert_eq!(tokens["access_token"], "at-secret-value-0001");
    assert_eq!(tokens["refresh_token"], "rt-secret-value-0001");
    assert!(app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_2").await.is_none());
    assert!(app.open_tokens(CONNECTION, "user_1", "other", "user_1").await.is_none());

    // The result page is safe to refresh, and only for this browser.
    let again = browser.get(&app.url(&location)).await;
    assert_eq!(again.status(), StatusCode::OK);
    let stranger = Browser::new().get(&app.url(&location)).await;
    assert_eq!(stranger.status(), StatusCode::FORBIDDEN);
    assert!(!stranger.text().await.unwrap().contains("Connected</h1>"));
    assert_eq!(app.count(Table::OutcomeEvents).await, 0);
}

#[tokio::test]
async fn every_page_carries_the_security_headers() {
    let app = spawn_app().await;
    let (browser, started) = app.begin("user_1").await;
    app.mock_token_success(1).await;
    let callback = app.callback(&browser, &format!("code=c&state={}", started.state)).await;
    let location = callback.headers()["location"].to_str().unwrap().to_owned();
    for response in [
        callback,
        browser.get(&app.url(&location)).await,
        browser.get(&app.url("/connect/callback/mock")).await,
        browser.get(&app.url("/connect/start/nope")).await,
        browser.get(&app.url("/no/such/page")).await,
    ] {
        let headers = response.headers();
        assert_eq!(headers["cache-control"], "no-store", "{}", response.url());
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["cross-origin-opener-policy"], "same-origin");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("frame-ancestors 'none'")
                && csp.contains("default-src 'none'")
                && !csp.contains("unsafe-inline")
        );
    }
    let css = browser.get(&app.url("/static/style.css")).await;
    assert_eq!(css.status(), StatusCode::OK);
    assert!(css.headers()["content-type"].to_str().unwrap().starts_with("text/css"));
}

#[tokio::test]
async fn a_second_flow_for_an_active_account_refreshes_its_tokens() {
    let app = spawn_app().await;
    app.mock_token_success(2).await;
    for _ in 0..2 {
        let (browser, started) = app.begin("user_1").await;
        let callback = app.callback(&browser, &format!("code=c&state={}", started.state)).await;
        let (status, _) = app.follow(&browser, callback).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");
    assert_eq!(app.count(Table::Accounts).await, 1);
}

fn base64_basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
}

#[tokio::test]
async fn behind_https_the_browser_cookie_is_secure_and_host_prefixed() {
    let app = crate::helpers::spawn_with(crate::helpers::Options {
        public_url: Some("https://app.example.com".into()),
        ..Default::default()
    })
    .await;
    let link = app.mint_link("user_1").await;
    assert!(link.starts_with("https://app.example.com/connect/start/"), "{link}");
    // The proxy in front would forward this request; the service listens on plain http.
    let local = link.replace("https://app.example.com", &app.address);
    let response = Browser::new().get(&local).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap();
    assert!(cookie.starts_with("__Host-callback-gate-browser="), "{cookie}");
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} missing from {cookie}");
    }
    assert!(!cookie.contains("Domain="));
    let redirect_uri = crate::helpers::query_param(response.headers()["location"].to_str().unwrap(), "redirect_uri");
    assert_eq!(redirect_uri, "https://app.example.com/connect/callback/mock");
}

#[tokio::test]
async fn an_unreachable_openid_issuer_stops_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // Nothing listens on this port: bind and drop.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let document = format!(
        r#"
public_url = "http://127.0.0.1:1"
mode = "development"
database_url = "sqlite://{}"
[app]
return_url = "http://127.0.0.1:1/"
[[connections]]
name = "sso"
provider = "oidc"
issuer = "http://127.0.0.1:{closed}"
client_id = "c"
client_secret_env = "S"
"#,
        dir.path().join("db").display()
    );
    let secrets = |name: &str| match name {
        "S" => Some("secret".to_owned()),
        "CALLBACK_GATE_API_KEYS" => Some("0123456789abcdef0123".to_owned()),
        "CALLBACK_GATE_SECRET_KEY" => Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned()),
        _ => None,
    };
    let settings = callback_gate::config::from_toml(&document, &secrets).unwrap();
    let Err(err) = callback_gate::server::Application::build(settings, listener, axum::Router::new()).await else {
        panic!("start-up must fail when discovery fails");
    };
    let message = err.to_string();
    assert!(message.contains("connection \"sso\""), "{message}");
    assert!(message.contains("/.well-known/openid-configuration"), "{message}");
    assert!(message.contains("unreachable"), "{message}");
}

//! Every outcome code, triggered over HTTP in production mode: the status, title and actions from the catalog, a
//! reference that resolves to the raw values and the hint, and no raw provider text on the page.

use std::sync::Mutex;
use std::time::Duration;

use callback_gate::outcome::{self, Actions};
use callback_gate::store::Table;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use wiremock::ResponseTemplate;

use crate::helpers::{CONNECTION, Options, TestApp, code_on, reference_on, spawn_with};

const PUBLIC: &str = "https://app.example.com";
/// Production mode accepts only https provider endpoints, which wiremock cannot serve: flows that end before the
/// token request run in production mode against this never-contacted provider; token failures run in development
/// mode, where everything outside the developer section must still be free of raw text.
const PROVIDER: &str = "https://provider.example.com";
/// Text a provider sends that must never reach a production page.
const RAW: &str = "RAW-PROVIDER-TEXT-do-not-show";

fn development() -> Options {
    Options { public_url: Some(PUBLIC.into()), ..Options::default() }
}

/// The page without its development-mode developer section.
fn user_visible(page: &str) -> String {
    match (page.find("<section class=\"developer\""), page.find("</section>")) {
        (Some(start), Some(end)) => format!("{}{}", &page[..start], &page[end..]),
        _ => page.to_owned(),
    }
}

/// A browser behind the https proxy: it keeps the `__Host-` cookie itself, since the test talks plain http.
struct ProxiedBrowser {
    client: reqwest::Client,
    cookie: Mutex<Option<String>>,
}

impl ProxiedBrowser {
    fn new() -> Self {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { client, cookie: Mutex::new(None) }
    }

    async fn get(&self, app: &TestApp, url: &str) -> reqwest::Response {
        let local = if let Some(path) = url.strip_prefix(PUBLIC) {
            app.url(path)
        } else if url.starts_with('/') {
            app.url(url)
        } else {
            url.to_owned()
        };
        let mut request = self.client.get(&local);
        if let Some(cookie) = self.cookie.lock().unwrap().clone() {
            request = request.header(COOKIE, cookie);
        }
        let response = request.send().await.unwrap();
        if let Some(set) = response.headers().get(SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            *self.cookie.lock().unwrap() = Some(pair);
        }
        response
    }
}

/// Starts a flow in a fresh browser; returns it with the state and the link.
async fn begin(app: &TestApp, identifier: &str) -> (ProxiedBrowser, String, String) {
    let browser = ProxiedBrowser::new();
    let link = app.mint_link(identifier).await;
    let response = browser.get(app, &link).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()[LOCATION].to_str().unwrap();
    let state = crate::helpers::query_param(location, "state");
    (browser, state, link)
}

/// Follows a callback's 303 to the result page.
async fn result_page(app: &TestApp, browser: &ProxiedBrowser, response: reqwest::Response) -> (StatusCode, String) {
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(location.starts_with("/connect/result/"), "{location}");
    let page = browser.get(app, &location).await;
    (page.status(), page.text().await.unwrap())
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&#34;").replace('\'', "&#39;")
}

/// What the page must show for `code`: its status, title and message, the actions the catalog allows (restart
/// only while the link is valid), a reference that resolves, and none of the `raw` values.
async fn assert_page(
    app: &TestApp,
    status: StatusCode,
    page: &str,
    code: &str,
    cause: Option<&str>,
    raw: &[&str],
    link_valid: bool,
) -> Value {
    let entry = outcome::entry(code, cause);
    assert_eq!(entry.code, code, "catalog row for {code}");
    assert_eq!(status.as_u16(), entry.status, "{code}: status");
    assert_eq!(code_on(page), code);
    let normalized = page.replace("&#x27;", "&#39;").replace("&#x22;", "&#34;").replace("&quot;", "&#34;");
    assert!(normalized.contains(&escape_html(entry.title)), "{code}: title {:?} missing", entry.title);
    assert!(normalized.contains(&escape_html(entry.message)), "{code}: message missing");
    let restart = entry.actions.contains(Actions::RESTART) && link_valid;
    let back = entry.actions.contains(Actions::RETURN) || entry.actions.contains(Actions::RESTART) && !link_valid;
    for (action, expected) in [
        ("restart", restart),
        ("return", back),
        ("support", entry.actions.contains(Actions::SUPPORT)),
        ("status", entry.actions.contains(Actions::STATUS)),
    ] {
        assert_eq!(page.contains(&format!("data-action=\"{action}\"")), expected, "{code}: action {action}");
    }
    let production = !page.contains("For developers (development mode only)");
    // The page names its own code in `data-code`; everything else must be free of what the provider sent.
    let visible = user_visible(page).replace(&format!("data-code=\"{code}\""), "");
    for value in raw {
        assert!(!visible.contains(value), "{code}: raw value {value:?} is on the page");
    }
    if production && app.state.settings.mode.is_development() {
        panic!("{code}: development mode lost its developer section");
    }
    if !app.state.settings.mode.is_development() {
        assert!(production, "{code}: developer details in production");
    }
    let reference = reference_on(page);
    let event = app.reference(&reference).await;
    assert_eq!(event["code"], code);
    assert_eq!(event["cause"].as_str(), cause);
    assert!(event["hint"].as_str().unwrap().starts_with(entry.hint), "{code}: hint");
    event
}

/// Codes the provider reports on the callback, with the `error` and `error_description` that trigger them.
#[rustfmt::skip]
const CALLBACK_CASES: &[(&str, &str, &str)] = &[
    ("access_denied", "access_denied", "The user said no"),
    ("invalid_request", "invalid_request", "Missing parameter"),
    ("unauthorized_client", "unauthorized_client", "Client may not use this grant"),
    ("unsupported_response_type", "unsupported_response_type", "code is not supported"),
    ("invalid_scope", "invalid_scope", "Unknown scope"),
    ("server_error", "server_error", "Internal failure"),
    ("temporarily_unavailable", "temporarily_unavailable", "Try later"),
    ("login_required", "login_required", "Sign in first"),
    ("consent_required", "consent_required", "Consent needed"),
    ("interaction_required", "interaction_required", "MFA needed"),
    ("unknown_provider_error", "something_new", "A brand new error"),
    ("admin_consent_required", "consent_required", "AADSTS65001: The user or administrator has not consented."),
    ("user_not_in_tenant", "access_denied", "AADSTS50020: User account from identity provider does not exist in tenant.\r\nTrace ID: 0000\r\nCorrelation ID: 1111"),
    ("redirect_uri_mismatch", "invalid_request", "AADSTS50011: The redirect URI specified in the request does not match."),
    ("application_not_found", "unauthorized_client", "AADSTS700016: Application with identifier was not found in the directory."),
    ("admin_policy_enforced", "admin_policy_enforced", "Blocked by the Workspace admin"),
    ("org_internal", "org_internal", "Only users in the organisation"),
    ("app_not_verified", "access_denied", "Acme has not completed the Google verification process."),
    ("workspace_approval_required", "app_approval_request_pending", "Waiting for an admin"),
    ("application_suspended", "application_suspended", "Your application has been suspended."),
];

#[tokio::test]
async fn every_callback_error_has_its_page_and_reference() {
    let app = spawn_with(Options::production()).await;
    for (index, (code, error, description)) in CALLBACK_CASES.iter().enumerate() {
        let identifier = format!("user_{index}");
        let (browser, state, _) = begin(&app, &identifier).await;
        let description = format!("{description} {RAW}");
        let uri = format!("https://provider.example.com/errors/{RAW}");
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("error", error)
            .append_pair("error_description", &description)
            .append_pair("error_uri", &uri)
            .append_pair("state", &state)
            .finish();
        let response = browser.get(&app, &app.url(&format!("/connect/callback/{CONNECTION}?{query}"))).await;
        let (status, page) = result_page(&app, &browser, response).await;
        let raw: &[&str] = if error == code { &[RAW] } else { &[RAW, error] };
        let event = assert_page(&app, status, &page, code, None, raw, true).await;
        assert_eq!(event["error"], *error);
        assert_eq!(event["error_description"], description.as_str());
        assert_eq!(event["error_uri"], uri.as_str());
        assert!(!page.contains("provider.example.com"), "error_uri never becomes a link");
        let account = app.account(&identifier).await;
        assert_eq!(account["status"], "PENDING_AUTH");
        assert_eq!(account["last_error"]["code"], *code);
        assert_eq!(account["last_error"]["reference"], event["reference"]);
    }
    assert!(app.provider.received_requests().await.unwrap().is_empty(), "no token request for provider errors");
}

#[tokio::test]
async fn redirect_uri_mismatch_prints_the_exact_redirect_uri_in_the_hint() {
    let app = spawn_with(Options::production()).await;
    let (browser, state, _) = begin(&app, "user_1").await;
    let response = browser
        .get(&app, &app.url(&format!("/connect/callback/{CONNECTION}?error=redirect_uri_mismatch&state={state}")))
        .await;
    let (status, page) = result_page(&app, &browser, response).await;
    let event = assert_page(&app, status, &page, "redirect_uri_mismatch", None, &[], true).await;
    let hint = event["hint"].as_str().unwrap();
    assert!(hint.contains("redirect_uri=https://app.example.com/connect/callback/mock"), "{hint}");
    assert!(hint.contains("no trailing slash"), "{hint}");
}

/// Token endpoint answers and the code (and cause) each must produce.
fn token_cases() -> Vec<(&'static str, Option<&'static str>, ResponseTemplate)> {
    let error = |status: u16, error: &str| {
        ResponseTemplate::new(status)
            .set_body_json(json!({ "error": error, "error_description": RAW, "access_token": "leaked-access-token" }))
    };
    vec![
        ("failed_to_exchange_token", Some("invalid_grant"), error(400, "invalid_grant")),
        ("failed_to_exchange_token", Some("invalid_client"), error(401, "invalid_client")),
        ("failed_to_exchange_token", Some("redirect_uri_mismatch"), error(400, "redirect_uri_mismatch")),
        ("failed_to_exchange_token", Some("provider_unavailable"), ResponseTemplate::new(503).set_body_string(RAW)),
        (
            "failed_to_exchange_token",
            Some("malformed_response"),
            ResponseTemplate::new(200).set_body_string(format!("<html>{RAW}</html>")),
        ),
        (
            "failed_to_exchange_token",
            Some("timeout"),
            ResponseTemplate::new(200).set_delay(Duration::from_millis(1500)),
        ),
        (
            "app_not_distributed",
            None,
            ResponseTemplate::new(200)
                .set_body_json(json!({ "ok": false, "error": "invalid_team_for_non_distributed_app" })),
        ),
        (
            "insufficient_scope",
            None,
            ResponseTemplate::new(200).set_body_json(json!({ "access_token": "narrow-token", "scope": "read" })),
        ),
    ]
}

#[tokio::test]
async fn every_token_endpoint_failure_has_its_page_and_reference() {
    for (code, cause, template) in token_cases() {
        let app = spawn_with(Options { token_timeout_seconds: 1, ..development() }).await;
        app.mock_token(template).await;
        let (browser, state, _) = begin(&app, "user_1").await;
        let response =
            browser.get(&app, &app.url(&format!("/connect/callback/{CONNECTION}?code=c&state={state}"))).await;
        let (status, page) = result_page(&app, &browser, response).await;
        let event = assert_page(&app, status, &page, code, cause, &[RAW, "leaked-access-token"], true).await;
        let body = event["provider_body"].as_str().unwrap_or_default();
        assert!(
            !body.contains("leaked-access-token") && !body.contains("narrow-token"),
            "{code}: secret in stored body"
        );
        assert_eq!(app.account("user_1").await["status"], "PENDING_AUTH", "{code}");
        assert!(app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.is_none(), "{code}: tokens stored");
        if code == "insufficient_scope" {
            assert!(event["hint"].as_str().unwrap().contains("Missing scopes: write."), "{event}");
        }
    }
}

#[tokio::test]
async fn flow_failures_have_their_pages_and_references() {
    let app = spawn_with(Options { flow_ttl_seconds: 1, ..Options::production() }).await;
    let callback = |query: String| app.url(&format!("/connect/callback/{CONNECTION}?{query}"));

    // Rendered directly: no flow matches.
    let browser = ProxiedBrowser::new();
    let direct = [
        ("state_missing", format!("code=c&error_description={RAW}")),
        ("state_invalid", "code=c&state=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned()),
    ];
    for (code, query) in direct {
        let response = browser.get(&app, &callback(query)).await;
        let status = response.status();
        assert_page(&app, status, &response.text().await.unwrap(), code, None, &[RAW], false).await;
    }
    let response = browser.get(&app, &app.url("/connect/callback/nope?code=c&state=s")).await;
    let status = response.status();
    assert_page(&app, status, &response.text().await.unwrap(), "connection_unknown", None, &[], false).await;

    // Links.
    let response = browser.get(&app, &app.url("/connect/start/forged.signature")).await;
    let status = response.status();
    assert_page(&app, status, &response.text().await.unwrap(), "link_invalid", None, &[], false).await;

    // Through the result page: the flow exists.
    let (browser, state, _) = begin(&app, "user_code_missing").await;
    let response = browser.get(&app, &callback(format!("state={state}&code="))).await;
    let (status, page) = result_page(&app, &browser, response).await;
    assert_page(&app, status, &page, "code_missing", None, &[], true).await;

    let (browser, state, _) = begin(&app, "user_both").await;
    let response =
        browser.get(&app, &callback(format!("state={state}&code=c&error=access_denied&error_description={RAW}"))).await;
    let (status, page) = result_page(&app, &browser, response).await;
    assert_page(&app, status, &page, "invalid_request", None, &[RAW], true).await;

    let (browser, state, _) = begin(&app, "user_browser").await;
    let stranger = ProxiedBrowser::new();
    let response = stranger.get(&app, &callback(format!("state={state}&code=c"))).await;
    let status = response.status();
    assert_page(&app, status, &response.text().await.unwrap(), "browser_mismatch", None, &[], false).await;
    drop(browser);

    let (browser, state, _) = begin(&app, "user_expired").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = browser.get(&app, &callback(format!("state={state}&code=c"))).await;
    let (status, page) = result_page(&app, &browser, response).await;
    assert_page(&app, status, &page, "session_expired", None, &[], true).await;
    let replay = browser.get(&app, &callback(format!("state={state}&code=c"))).await;
    let status = replay.status();
    assert_page(&app, status, &replay.text().await.unwrap(), "flow_already_used", None, &[], false).await;
    assert_eq!(app.count(Table::Accounts).await, 4);
    assert!(app.provider.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_wrong_issuer_is_issuer_mismatch() {
    let app = spawn_with(Options {
        connection_extra: "issuer = \"https://issuer.example.com\"".into(),
        ..Options::production()
    })
    .await;
    let (browser, state, _) = begin(&app, "user_1").await;
    let response = browser
        .get(
            &app,
            &app.url(&format!(
                "/connect/callback/{CONNECTION}?code=c&state={state}&iss=https%3A%2F%2Fevil.example.com"
            )),
        )
        .await;
    let (status, page) = result_page(&app, &browser, response).await;
    let event = assert_page(&app, status, &page, "issuer_mismatch", None, &["evil.example.com"], true).await;
    assert_eq!(event["iss"], "https://evil.example.com");
}

#[tokio::test]
async fn an_expired_link_offers_only_the_way_back() {
    let app = spawn_with(Options { link_ttl_seconds: 1, ..Options::production() }).await;
    let link = app.mint_link("user_1").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let browser = ProxiedBrowser::new();
    let response = browser.get(&app, &link).await;
    let status = response.status();
    assert_page(&app, status, &response.text().await.unwrap(), "link_expired", None, &[], false).await;
}

#[tokio::test]
async fn a_store_failure_is_internal_error() {
    let app = spawn_with(Options::production()).await;
    let (browser, state, _) = begin(&app, "user_1").await;
    app.store.close().await;
    let response = browser.get(&app, &app.url(&format!("/connect/callback/{CONNECTION}?code=c&state={state}"))).await;
    let status = response.status();
    let page = response.text().await.unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(code_on(&page), "internal_error");
    assert!(page.contains("data-action=\"status\""), "internal errors offer the status page");
    assert!(!page.contains("database") && !page.contains("pool"), "no internal detail on the page");
}

#[tokio::test]
async fn restart_after_a_failure_reaches_the_provider_with_a_new_state() {
    let app = spawn_with(Options { flow_ttl_seconds: 1, ..Options::production() }).await;
    for trigger in ["access_denied", "session_expired"] {
        let (browser, state, _) = begin(&app, trigger).await;
        if trigger == "session_expired" {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let query = if trigger == "access_denied" {
            format!("error=access_denied&state={state}")
        } else {
            format!("code=c&state={state}")
        };
        let response = browser.get(&app, &app.url(&format!("/connect/callback/{CONNECTION}?{query}"))).await;
        let (_, page) = result_page(&app, &browser, response).await;
        assert_eq!(code_on(&page), trigger);
        let actions = &page[page.find("class=\"actions\"").unwrap()..];
        let first = actions.split("href=\"").nth(1).unwrap();
        let start = first.split('"').next().unwrap();
        assert!(first.contains("data-action=\"restart\""), "the first action restarts: {first}");
        assert!(start.starts_with("/connect/start/"), "{start}");
        let restarted = browser.get(&app, start).await;
        assert_eq!(restarted.status(), StatusCode::SEE_OTHER);
        let location = restarted.headers()[LOCATION].to_str().unwrap();
        assert!(location.starts_with(PROVIDER), "{location}");
        let new_state = crate::helpers::query_param(location, "state");
        assert_ne!(new_state, state);
    }
}

#[tokio::test]
async fn support_links_carry_the_reference_and_never_raw_text() {
    let app = spawn_with(Options::production()).await;
    let (browser, state, _) = begin(&app, "user_1").await;
    let response = browser
        .get(
            &app,
            &app.url(&format!(
                "/connect/callback/{CONNECTION}?error=invalid_scope&error_description={RAW}&state={state}"
            )),
        )
        .await;
    let (_, page) = result_page(&app, &browser, response).await;
    let reference = reference_on(&page);
    let support = page.split("data-action=\"support\"").next().unwrap();
    let href = support.rsplit("href=\"").next().unwrap().split('"').next().unwrap().replace("&amp;", "&");
    assert!(href.starts_with("mailto:support@example.com?subject="), "{href}");
    let decoded = percent_decode(&href);
    assert!(
        decoded.contains(&reference) && decoded.contains("Connection: mock") && decoded.contains("Time (UTC): "),
        "{decoded}"
    );
    assert!(!decoded.contains(RAW) && !decoded.contains("invalid_scope"));
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// An OpenID provider on wiremock that promises `iss`, with an empty key set and a token endpoint answering `token`.
async fn openid_provider(token: ResponseTemplate) -> wiremock::MockServer {
    use wiremock::Mock;
    use wiremock::matchers::{method, path};
    let server =
        crate::helpers::openid_provider(ResponseTemplate::new(200).set_body_json(json!({ "keys": [] })), true).await;
    Mock::given(method("POST")).and(path("/token")).respond_with(token).mount(&server).await;
    server
}

/// An app with an OpenID connection `sso` on `idp`, and a link for `user_1` on it.
async fn sso_app(idp: &wiremock::MockServer) -> (TestApp, String) {
    let extra = format!(
        "[[connections]]\nname = \"sso\"\nprovider = \"oidc\"\nissuer = \"{}\"\nclient_id = \"sso-client\"\nclient_secret_env = \"MOCK_CLIENT_SECRET\"\nscopes = [\"openid\"]\nuser_verification = false\n",
        idp.uri()
    );
    let app = spawn_with(Options { extra_config: extra, public_url: Some(PUBLIC.into()), ..Options::default() }).await;
    let response = app
        .api
        .post(app.url("/v1/authorization-links"))
        .bearer_auth(&app.api_key)
        .json(&json!({ "connection": "sso", "identifier": "user_1" }))
        .send()
        .await
        .unwrap();
    let link = response.json::<Value>().await.unwrap()["link"].as_str().unwrap().to_owned();
    (app, link)
}

#[tokio::test]
async fn an_id_token_that_does_not_validate_is_id_token_invalid() {
    // Unsigned (alg none), symmetric (HS256, never accepted with a public key set), malformed, and missing.
    let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.";
    let symmetric = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
    let bodies = [
        json!({ "access_token": "oidc-access", "id_token": unsigned }),
        json!({ "access_token": "oidc-access", "id_token": symmetric }),
        json!({ "access_token": "oidc-access", "id_token": "not-a-jwt" }),
        json!({ "access_token": "oidc-access" }),
    ];
    for body in bodies {
        let idp = openid_provider(ResponseTemplate::new(200).set_body_json(body.clone())).await;
        let (app, link) = sso_app(&idp).await;
        let browser = ProxiedBrowser::new();
        let start = browser.get(&app, &link).await;
        let location = start.headers()[LOCATION].to_str().unwrap().to_owned();
        assert!(location.starts_with(&idp.uri()), "{location}");
        assert!(!crate::helpers::query_param(&location, "nonce").is_empty(), "OpenID flows carry a nonce");
        let state = crate::helpers::query_param(&location, "state");
        let iss = url::form_urlencoded::byte_serialize(idp.uri().as_bytes()).collect::<String>();
        let response =
            browser.get(&app, &app.url(&format!("/connect/callback/sso?code=c&state={state}&iss={iss}"))).await;
        let (status, page) = result_page(&app, &browser, response).await;
        let event = assert_page(&app, status, &page, "id_token_invalid", None, &["oidc-access"], true).await;
        assert!(!event["detail"].as_str().unwrap().is_empty(), "{body}: the detail names the failed check");
        assert!(app.store.sealed_tokens("sso", "user_1").await.unwrap().is_none(), "{body}: nothing stored");
        assert_eq!(app.store.account("sso", "user_1").await.unwrap().unwrap().status.as_str(), "PENDING_AUTH");
    }
}

#[tokio::test]
async fn a_missing_iss_from_a_provider_that_promises_it_is_issuer_mismatch() {
    let idp = openid_provider(ResponseTemplate::new(500)).await;
    let (app, link) = sso_app(&idp).await;
    let browser = ProxiedBrowser::new();
    let start = browser.get(&app, &link).await;
    let state = crate::helpers::query_param(start.headers()[LOCATION].to_str().unwrap(), "state");
    let response = browser.get(&app, &app.url(&format!("/connect/callback/sso?code=c&state={state}"))).await;
    let (status, page) = result_page(&app, &browser, response).await;
    assert_page(&app, status, &page, "issuer_mismatch", None, &[], true).await;
    let token_requests = idp.received_requests().await.unwrap().iter().filter(|r| r.url.path() == "/token").count();
    assert_eq!(token_requests, 0);
}

#[tokio::test]
async fn a_store_failure_after_the_exchange_is_post_auth_hook() {
    let app = spawn_with(Options { public_url: Some(PUBLIC.into()), ..Options::default() }).await;
    app.mock_token_success(1).await;
    let (browser, state, _) = begin(&app, "user_1").await;
    // Make the account's token write fail, as a full disk would, while everything else keeps working.
    app.break_writes(&[("BEFORE UPDATE OF sealed_tokens ON connected_accounts", None)]).await;
    let response = browser.get(&app, &app.url(&format!("/connect/callback/{CONNECTION}?code=c&state={state}"))).await;
    let (status, page) = result_page(&app, &browser, response).await;
    let event = assert_page(
        &app,
        status,
        &page,
        "failed_to_exchange_token",
        Some("post_auth_hook"),
        &["at-secret-value-0001"],
        true,
    )
    .await;
    assert!(event["detail"].as_str().unwrap().contains("simulated"), "{event}");
    assert_eq!(app.account("user_1").await["status"], "PENDING_AUTH");
    assert!(app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.is_none());
}

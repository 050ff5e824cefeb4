//! OpenID ID tokens over HTTP: the audience rules of OpenID Connect Core 3.1.3.7, and fetching the issuer's key set
//! without making callbacks wait for one another. The provider is wiremock, signing its ID tokens with a P-256 key
//! made for these tests only (`tests/fixtures/id-token-signing-key.pem`).

use std::time::{Duration, Instant};

use callback_gate::outcome;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{Browser, Options, TestApp, code_on, record_secret, reference_on, spawn_with};

const CONNECTION: &str = "sso";
const CLIENT_ID: &str = "sso-client";
const KEY_ID: &str = "test-key-1";
const ACCESS_TOKEN: &str = "oidc-access-token-do-not-store";

fn signing_key() -> EncodingKey {
    use base64::Engine as _;
    let pem =
        std::fs::read_to_string(format!("{}/tests/fixtures/id-token-signing-key.pem", env!("CARGO_MANIFEST_DIR")))
            .expect("test signing key");
    // The crate is built without PEM support; the PKCS#8 DER is the PEM's body.
    let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
    EncodingKey::from_ec_der(&base64::engine::general_purpose::STANDARD.decode(body).expect("PEM body"))
}

/// The public half of the test key, as the issuer publishes it.
fn key_set() -> Value {
    let mut jwk = Jwk::from_encoding_key(&signing_key(), Algorithm::ES256).expect("public JWK");
    jwk.common.key_id = Some(KEY_ID.into());
    serde_json::to_value(JwkSet { keys: vec![jwk] }).expect("JWKS json")
}

/// An OpenID provider whose key set URL answers with `jwks`. Token endpoints are mounted per flow by `answer_with`.
async fn openid_provider(jwks: ResponseTemplate) -> MockServer {
    crate::helpers::openid_provider(jwks, false).await
}

/// An app with the OpenID connection `sso` on `idp`.
async fn sso_app(idp: &MockServer, token_timeout_seconds: u64) -> TestApp {
    let extra_config = format!(
        "[[connections]]\nname = \"{CONNECTION}\"\nprovider = \"oidc\"\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_env = \"MOCK_CLIENT_SECRET\"\nscopes = [\"openid\"]\nuser_verification = false\n",
        idp.uri()
    );
    spawn_with(Options { extra_config, token_timeout_seconds, ..Options::default() }).await
}

/// A flow on `sso` started in its own browser, waiting for the provider to send it back with `code`.
struct Flow {
    identifier: String,
    browser: Browser,
    state: String,
    nonce: String,
    code: String,
}

async fn begin(app: &TestApp, identifier: &str) -> Flow {
    let response = app.post_link(json!({ "connection": CONNECTION, "identifier": identifier })).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let link = response.json::<Value>().await.expect("json")["link"].as_str().expect("link").to_owned();
    let browser = Browser::new();
    let started = app.start(&browser, &link).await;
    let nonce = started.params.get("nonce").cloned().expect("OpenID flows carry a nonce");
    record_secret(&nonce);
    Flow {
        identifier: identifier.to_owned(),
        browser,
        state: started.state,
        nonce,
        code: format!("code-for-{identifier}-0123456789"),
    }
}

/// ID token claims for `flow` as `idp` would issue them, with the given `aud` and, where given, `azp`.
fn claims(idp: &MockServer, flow: &Flow, aud: Value, azp: Option<&str>) -> Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut claims = json!({
        "iss": idp.uri(),
        "sub": format!("subject-of-{}", flow.identifier),
        "aud": aud,
        "iat": now,
        "exp": now + 600,
        "nonce": flow.nonce,
    });
    if let Some(azp) = azp {
        claims["azp"] = json!(azp);
    }
    claims
}

/// Makes `idp`'s token endpoint answer `flow`'s code with an access token and an ID token carrying `claims`.
async fn answer_with(idp: &MockServer, flow: &Flow, claims: &Value) {
    answer_signed_as(idp, flow, KEY_ID, claims).await;
}

/// Like `answer_with`, with the ID token's header naming key `kid`.
async fn answer_signed_as(idp: &MockServer, flow: &Flow, kid: &str, claims: &Value) {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    let id_token = jsonwebtoken::encode(&header, claims, &signing_key()).expect("signed ID token");
    record_secret(&id_token);
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains(format!("code={}", flow.code)))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": ACCESS_TOKEN,
            "token_type": "Bearer",
            "expires_in": 3600,
            "id_token": id_token,
        })))
        .expect(1)
        .mount(idp)
        .await;
}

/// The provider sends `flow`'s browser back with its code; returns the callback's answer.
async fn call_back(app: &TestApp, flow: &Flow) -> reqwest::Response {
    app.callback_on(&flow.browser, CONNECTION, &format!("code={}&state={}", flow.code, flow.state)).await
}

async fn status_of(app: &TestApp, identifier: &str) -> Value {
    let response = app
        .api
        .get(app.url(&format!("/v1/connected-accounts/{CONNECTION}/{identifier}")))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Value>().await.expect("json")["status"].clone()
}

/// Asserts that `flow` ended as `id_token_invalid` with a detail containing `detail`, and that its account was
/// neither activated nor given tokens.
async fn assert_id_token_invalid(app: &TestApp, flow: &Flow, response: reqwest::Response, detail: &str) {
    let (status, page) = app.follow(&flow.browser, response).await;
    let entry = outcome::entry("id_token_invalid", None);
    assert_eq!(status.as_u16(), entry.status, "{}: status", flow.identifier);
    assert_eq!(code_on(&page), "id_token_invalid", "{}", flow.identifier);
    assert!(!page.contains(ACCESS_TOKEN), "{}: the access token is on the page", flow.identifier);
    let event = app.reference(&reference_on(&page)).await;
    assert_eq!(event["code"], "id_token_invalid");
    let stored = event["detail"].as_str().expect("detail");
    assert!(stored.contains(detail), "{}: the detail {stored:?} should say {detail:?}", flow.identifier);
    assert!(!stored.contains("eyJ"), "{}: the detail holds a token: {stored:?}", flow.identifier);
    assert_eq!(status_of(app, &flow.identifier).await, "PENDING_AUTH", "{}", flow.identifier);
    assert!(app.store.sealed_tokens(CONNECTION, &flow.identifier).await.expect("store").is_none());
}

async fn assert_connected(app: &TestApp, flow: &Flow, response: reqwest::Response) {
    let (status, page) = app.follow(&flow.browser, response).await;
    assert_eq!(status, StatusCode::OK, "{}: {page}", flow.identifier);
    assert!(page.contains("data-outcome=\"connected\""), "{}", flow.identifier);
    assert_eq!(status_of(app, &flow.identifier).await, "ACTIVE", "{}", flow.identifier);
    assert!(app.store.sealed_tokens(CONNECTION, &flow.identifier).await.expect("store").is_some());
    let account = app.account_on(CONNECTION, &flow.identifier).await;
    let subject = format!("subject-of-{}", flow.identifier);
    assert_eq!(account["metadata"]["user_id"], subject.as_str(), "the ID token's subject: {account}");
}

fn key_set_requests(requests: &[wiremock::Request]) -> usize {
    requests.iter().filter(|request| request.url.path() == "/jwks").count()
}

#[tokio::test]
async fn an_id_token_for_several_audiences_without_azp_is_id_token_invalid() {
    let idp = openid_provider(ResponseTemplate::new(200).set_body_json(key_set())).await;
    let app = sso_app(&idp, 2).await;
    let flow = begin(&app, "user_1").await;
    answer_with(&idp, &flow, &claims(&idp, &flow, json!([CLIENT_ID, "other-client"]), None)).await;
    let response = call_back(&app, &flow).await;
    assert_id_token_invalid(&app, &flow, response, "no authorized party (azp)").await;
}

#[tokio::test]
async fn several_audiences_connect_only_when_azp_names_this_client() {
    let idp = openid_provider(ResponseTemplate::new(200).set_body_json(key_set())).await;
    let app = sso_app(&idp, 2).await;

    let other = begin(&app, "azp_other").await;
    answer_with(&idp, &other, &claims(&idp, &other, json!([CLIENT_ID, "other-client"]), Some("other-client"))).await;
    let response = call_back(&app, &other).await;
    assert_id_token_invalid(&app, &other, response, "authorized party (azp) is another client").await;

    let ours = begin(&app, "azp_ours").await;
    answer_with(&idp, &ours, &claims(&idp, &ours, json!([CLIENT_ID, "other-client"]), Some(CLIENT_ID))).await;
    let response = call_back(&app, &ours).await;
    assert_connected(&app, &ours, response).await;

    // The audience check itself: neither an array nor a single value without this client is accepted.
    for (identifier, aud) in
        [("aud_array", json!(["other-client", "third-client"])), ("aud_one", json!("other-client"))]
    {
        let flow = begin(&app, identifier).await;
        answer_with(&idp, &flow, &claims(&idp, &flow, aud, Some(CLIENT_ID))).await;
        let response = call_back(&app, &flow).await;
        assert_id_token_invalid(&app, &flow, response, "audience (aud) does not include this client").await;
    }
}

#[tokio::test]
async fn an_id_token_for_this_client_alone_with_another_azp_is_id_token_invalid() {
    let idp = openid_provider(ResponseTemplate::new(200).set_body_json(key_set())).await;
    let app = sso_app(&idp, 2).await;

    let other = begin(&app, "user_1").await;
    answer_with(&idp, &other, &claims(&idp, &other, json!(CLIENT_ID), Some("other-client"))).await;
    let response = call_back(&app, &other).await;
    assert_id_token_invalid(&app, &other, response, "authorized party (azp) is another client").await;

    // The same token without azp, or with this client's, connects: the failure above is the azp check alone.
    for (identifier, aud, azp) in
        [("no_azp", json!(CLIENT_ID), None), ("one_in_array", json!([CLIENT_ID]), Some(CLIENT_ID))]
    {
        let flow = begin(&app, identifier).await;
        answer_with(&idp, &flow, &claims(&idp, &flow, aud, azp)).await;
        let response = call_back(&app, &flow).await;
        assert_connected(&app, &flow, response).await;
    }
}

#[tokio::test]
async fn callbacks_waiting_on_a_hanging_key_set_each_end_within_the_token_timeout() {
    const FLOWS: usize = 5;
    let timeout = Duration::from_secs(2);
    let idp =
        openid_provider(ResponseTemplate::new(200).set_body_json(key_set()).set_delay(Duration::from_secs(10))).await;
    let app = sso_app(&idp, timeout.as_secs()).await;
    let mut flows = Vec::new();
    for n in 0..FLOWS {
        let flow = begin(&app, &format!("user_{n}")).await;
        answer_with(&idp, &flow, &claims(&idp, &flow, json!(CLIENT_ID), None)).await;
        flows.push(flow);
    }

    let timed = flows.iter().map(|flow| async {
        let sent = Instant::now();
        let response = call_back(&app, flow).await;
        (response, sent.elapsed())
    });
    let answers = futures::future::join_all(timed).await;

    let all: Vec<Duration> = answers.iter().map(|(_, took)| *took).collect();
    println!("callback durations with a hanging key set (token timeout {timeout:?}): {all:?}");
    for (flow, (response, took)) in flows.iter().zip(answers) {
        // Each callback waits for at most one key set fetch, never for the others' in turn.
        assert!(took < 2 * timeout, "{}: the callback took {took:?} (all: {all:?})", flow.identifier);
        assert_id_token_invalid(&app, flow, response, "key set could not be fetched").await;
    }
    // They shared one fetch rather than each asking the hanging issuer.
    assert_eq!(key_set_requests(&idp.received_requests().await.expect("recorded")), 1);
}

#[tokio::test]
async fn a_key_set_that_failed_to_fetch_is_not_fetched_for_every_callback_and_is_retried_later() {
    let idp = openid_provider(ResponseTemplate::new(200).set_body_json(key_set())).await;
    // The issuer's key set is briefly unavailable: this answer comes first, once.
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&idp)
        .await;
    let app = sso_app(&idp, 2).await;

    let first = begin(&app, "user_1").await;
    answer_with(&idp, &first, &claims(&idp, &first, json!(CLIENT_ID), None)).await;
    let response = call_back(&app, &first).await;
    assert_id_token_invalid(&app, &first, response, "HTTP 503").await;

    // Callbacks right after a failure are answered from it, without asking the issuer again.
    let second = begin(&app, "user_2").await;
    answer_with(&idp, &second, &claims(&idp, &second, json!(CLIENT_ID), None)).await;
    let response = call_back(&app, &second).await;
    assert_id_token_invalid(&app, &second, response, "HTTP 503").await;
    assert_eq!(key_set_requests(&idp.received_requests().await.expect("recorded")), 1);

    // The failure is not kept for good: once the 5 s retry interval has passed, the key set is fetched again.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let third = begin(&app, "user_3").await;
    answer_with(&idp, &third, &claims(&idp, &third, json!(CLIENT_ID), None)).await;
    let response = call_back(&app, &third).await;
    assert_connected(&app, &third, response).await;
    assert_eq!(key_set_requests(&idp.received_requests().await.expect("recorded")), 2);
}

#[tokio::test]
async fn a_token_signed_with_an_unknown_key_does_not_refetch_the_key_set_within_a_minute() {
    let idp = openid_provider(ResponseTemplate::new(200).set_body_json(key_set())).await;
    let app = sso_app(&idp, 2).await;
    let known = begin(&app, "user_1").await;
    answer_with(&idp, &known, &claims(&idp, &known, json!(CLIENT_ID), None)).await;
    let response = call_back(&app, &known).await;
    assert_connected(&app, &known, response).await;

    for n in 0..3 {
        let flow = begin(&app, &format!("unknown_{n}")).await;
        let claims = claims(&idp, &flow, json!(CLIENT_ID), None);
        answer_signed_as(&idp, &flow, "a-key-the-issuer-never-published", &claims).await;
        let response = call_back(&app, &flow).await;
        assert_id_token_invalid(&app, &flow, response, "no key").await;
    }
    assert_eq!(key_set_requests(&idp.received_requests().await.expect("recorded")), 1);
}

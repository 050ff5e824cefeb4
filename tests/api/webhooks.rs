//! Webhooks: every account status change, refresh failure and failed flow reaches the app's receiver, signed as
//! Standard Webhooks specifies, at least once, from an outbox written with the change itself. The receiver here
//! verifies every signature with the published `standardwebhooks` implementation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::{CONNECTION, Options, TestApp, spawn_with};
use crate::lifecycle::{connect, eventually, exposing, refresh};

/// A receiver that checks each delivery's signature with every key it knows and keeps what it received.
#[derive(Clone)]
struct Receiver {
    keys: Vec<String>,
    received: Arc<Mutex<Vec<(String, Value)>>>,
    /// Answers 503 to this many deliveries first.
    refuse_first: Arc<Mutex<usize>>,
}

impl Receiver {
    fn new(keys: &[String]) -> Self {
        Self { keys: keys.to_vec(), received: Arc::default(), refuse_first: Arc::default() }
    }

    fn refusing(self, first: usize) -> Self {
        *self.refuse_first.lock().unwrap() = first;
        self
    }

    async fn serve(&self) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/hooks")).respond_with(self.clone()).mount(&server).await;
        server
    }

    /// The events received (verified ones only), as (webhook-id, body).
    fn events(&self) -> Vec<(String, Value)> {
        self.received.lock().unwrap().clone()
    }

    /// The events of one type, in the order they happened (deliveries may arrive in another order).
    fn of_type(&self, kind: &str) -> Vec<Value> {
        let mut events: Vec<Value> =
            self.events().into_iter().filter(|(_, event)| event["type"] == kind).map(|(_, event)| event).collect();
        events.sort_by(|a, b| a["timestamp"].as_str().cmp(&b["timestamp"].as_str()));
        events
    }
}

impl Respond for Receiver {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        for key in &self.keys {
            let verifier = standardwebhooks::Webhook::new(key).expect("a whsec_ key");
            if let Err(err) = verifier.verify(&request.body, &request.headers) {
                return ResponseTemplate::new(401).set_body_string(format!("signature: {err:?}"));
            }
        }
        let mut refuse = self.refuse_first.lock().unwrap();
        if *refuse > 0 {
            *refuse -= 1;
            return ResponseTemplate::new(503);
        }
        let id = request.headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let body: Value = serde_json::from_slice(&request.body).expect("a JSON body");
        self.received.lock().unwrap().push((id, body));
        ResponseTemplate::new(204)
    }
}

fn new_key() -> String {
    let key = format!("whsec_{}", STANDARD.encode(callback_gate::crypto::random_token::<24>().as_bytes()));
    // The log scan checks that no key reaches a log line.
    crate::helpers::record_secret(&key);
    key
}

/// Options for an app whose webhooks go to `receiver`, signed with `keys` (several while rotating).
fn with_webhooks(options: Options, receiver: &MockServer, keys: &[String]) -> Options {
    let section = format!("[webhooks]\nurl = \"{}/hooks\"\nsecret_env = \"TEST_WEBHOOK_SECRET\"\n", receiver.uri());
    Options {
        extra_config: format!("{}\n{section}", options.extra_config),
        secrets: vec![("TEST_WEBHOOK_SECRET", keys.join(" "))],
        ..options
    }
}

/// The outbox's status, attempts and last status per event, once no delivery is pending: a receiver has an event
/// before its sender has recorded the answer, so the rows are read only after every answer is recorded.
async fn settled_outbox(app: &TestApp) -> Vec<Vec<Option<String>>> {
    const QUERY: &str = "SELECT status, attempts, last_status FROM webhook_outbox";
    let settled = eventually(Duration::from_secs(5), async || {
        app.sql_rows(QUERY).await.iter().all(|row| row[0].as_deref() != Some("pending"))
    })
    .await;
    let rows = app.sql_rows(QUERY).await;
    assert!(settled, "a delivery stayed pending: {rows:?}");
    rows
}

#[tokio::test]
async fn connecting_an_account_is_told_as_signed_status_changes() {
    let keys = [new_key()];
    let receiver = Receiver::new(&keys);
    let server = receiver.serve().await;
    let app = spawn_with(with_webhooks(exposing(), &server, &keys)).await;
    app.mock_token_success(1).await;
    connect(&app, "user_1").await;

    assert!(eventually(Duration::from_secs(5), async || receiver.of_type("account.status_changed").len() >= 2).await);
    let changes = receiver.of_type("account.status_changed");
    assert_eq!(changes[0]["data"]["status"], "PENDING_AUTH", "{changes:?}");
    assert_eq!(changes[0]["data"]["previous_status"], Value::Null);
    assert_eq!(changes[1]["data"]["status"], "ACTIVE");
    assert_eq!(changes[1]["data"]["previous_status"], "PENDING_AUTH");
    for change in &changes {
        assert_eq!(change["data"]["connection"], CONNECTION);
        assert_eq!(change["data"]["identifier"], "user_1");
        let mut keys: Vec<&String> = change["data"].as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["code", "connection", "identifier", "previous_status", "reference", "status"]);
        assert!(change["timestamp"].as_str().unwrap().ends_with('Z'), "{change}");
    }
    let everything = format!("{:?}", receiver.events());
    for secret in ["at-secret-value-0001", "rt-secret-value-0001", "c-user_1"] {
        assert!(!everything.contains(secret), "{secret} in a webhook");
    }
    // Each delivery is recorded as delivered, once.
    let rows = settled_outbox(&app).await;
    assert!(
        rows.iter().all(|row| row[0].as_deref() == Some("delivered") && row[1].as_deref() == Some("1")),
        "{rows:?}"
    );
}

#[tokio::test]
async fn a_failed_flow_and_a_failed_refresh_are_told_with_their_code_and_reference() {
    let keys = [new_key()];
    let receiver = Receiver::new(&keys);
    let server = receiver.serve().await;
    let app = spawn_with(with_webhooks(exposing(), &server, &keys)).await;
    // A user who declines.
    let (browser, started) = app.begin("user_1").await;
    let declined = app.callback(&browser, &format!("error=access_denied&state={}", started.state)).await;
    let (_, page) = app.follow(&browser, declined).await;
    let reference = crate::helpers::reference_on(&page);
    assert!(eventually(Duration::from_secs(5), async || !receiver.of_type("flow.failed").is_empty()).await);
    let failed = &receiver.of_type("flow.failed")[0];
    assert_eq!(failed["data"]["code"], "access_denied");
    assert_eq!(failed["data"]["reference"], reference.as_str());

    // A refresh the provider refuses for good: the account expires.
    app.mock_token_success(1).await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({ "error": "invalid_grant" })))
        .with_priority(1)
        .mount(&app.provider)
        .await;
    connect(&app, "user_2").await;
    assert_eq!(refresh(&app, "user_2").await.0, StatusCode::BAD_GATEWAY);
    assert!(eventually(Duration::from_secs(5), async || !receiver.of_type("account.refresh_failed").is_empty()).await);
    let refresh_failed = &receiver.of_type("account.refresh_failed")[0];
    let account = app.account("user_2").await;
    assert_eq!(refresh_failed["data"]["code"], "token_refresh_failed");
    assert_eq!(refresh_failed["data"]["reference"], account["last_error"]["reference"]);
    assert_eq!(refresh_failed["data"]["connection"], "mock");
    assert_eq!(refresh_failed["data"]["identifier"], "user_2");
    assert!(refresh_failed["data"]["status"].is_string(), "{refresh_failed}");
    assert!(
        eventually(Duration::from_secs(5), async || {
            receiver.of_type("account.status_changed").iter().any(|e| e["data"]["status"] == "EXPIRED")
        })
        .await
    );
}

#[tokio::test]
async fn a_receiver_that_answers_503_gets_the_event_again() {
    let keys = [new_key()];
    let receiver = Receiver::new(&keys).refusing(1);
    let server = receiver.serve().await;
    let app = spawn_with(with_webhooks(exposing(), &server, &keys)).await;
    app.mint_link("user_1").await;
    // The first attempt is refused; the next, about 5 seconds later, delivers.
    assert!(eventually(Duration::from_secs(12), async || !receiver.events().is_empty()).await, "delivered in the end");
    let rows = settled_outbox(&app).await;
    assert_eq!(rows, vec![vec![Some("delivered".into()), Some("2".into()), Some("204".into())]]);
    assert_eq!(receiver.events().len(), 1, "once delivered, never again");
}

#[tokio::test]
async fn during_a_rotation_every_delivery_is_signed_with_every_key() {
    let keys = [new_key(), new_key()];
    // The receiver checks both signatures: it refuses the delivery if either is missing or wrong.
    let receiver = Receiver::new(&keys);
    let server = receiver.serve().await;
    let app = spawn_with(with_webhooks(exposing(), &server, &keys)).await;
    app.mint_link("user_1").await;
    assert!(eventually(Duration::from_secs(5), async || receiver.events().len() == 1).await);
    let requests = server.received_requests().await.unwrap();
    let signature = requests[0].headers["webhook-signature"].to_str().unwrap();
    assert_eq!(signature.split(' ').count(), 2, "{signature}");
}

#[tokio::test]
async fn without_webhooks_no_event_is_written() {
    let app = spawn_with(exposing()).await;
    app.mock_token_success(1).await;
    connect(&app, "user_1").await;
    assert_eq!(app.count(callback_gate::store::Table::WebhookOutbox).await, 0);
}

/// The webhook ids a test's receivers saw, once each.
fn distinct_ids(receiver: &Receiver) -> (usize, usize) {
    let ids: Vec<String> = receiver.events().into_iter().map(|(id, _)| id).collect();
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    (ids.len(), distinct.len())
}

#[tokio::test]
async fn two_instances_on_one_database_deliver_each_event_once() {
    let keys = [new_key()];
    let receiver = Receiver::new(&keys);
    let server = receiver.serve().await;
    let database = crate::helpers::postgres_database().await;
    let secret_key = crate::helpers::new_secret_key();
    let first = spawn_with(with_webhooks(
        Options { database: Some(database.url.clone()), secret_key: Some(secret_key.clone()), ..exposing() },
        &server,
        &keys,
    ))
    .await;
    let _second = spawn_with(with_webhooks(
        Options { database: Some(database.url.clone()), secret_key: Some(secret_key), ..exposing() },
        &server,
        &keys,
    ))
    .await;
    for n in 0..40 {
        first.mint_link(&format!("user_{n}")).await;
    }
    assert!(eventually(Duration::from_secs(10), async || receiver.events().len() >= 40).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (received, distinct) = distinct_ids(&receiver);
    assert_eq!((received, distinct), (40, 40), "each of the 40 events delivered once");
}

#[tokio::test]
async fn operators_see_each_delivery_and_can_retry_it_now() {
    let keys = [new_key()];
    let receiver = Receiver::new(&keys).refusing(1);
    let server = receiver.serve().await;
    let app = spawn_with(with_webhooks(exposing(), &server, &keys)).await;
    app.mint_link("user_1").await;
    // The first attempt is refused: the delivery waits for its next attempt, about 5 seconds out. The receiver has
    // the request before the sender records its answer, so the listing is read once it shows that attempt.
    assert!(eventually(Duration::from_secs(5), async || server.received_requests().await.unwrap().len() == 1).await);
    let pending =
        async || crate::lifecycle::call(&app, reqwest::Method::GET, "/v1/webhook-deliveries?status=pending").await;
    eventually(Duration::from_secs(5), async || pending().await.1["data"][0]["attempts"] == 1).await;
    let (status, page) = pending().await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let delivery = &page["data"][0];
    assert_eq!(delivery["type"], "account.status_changed");
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["last_status"], 503);
    assert_eq!(delivery["last_error"], "HTTP 503");
    assert!(delivery["next_attempt_at"].is_string(), "{delivery}");
    assert_eq!(delivery["event"]["data"]["identifier"], "user_1");
    let id = delivery["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("msg_"), "{id}");

    // Retried now rather than in 5 seconds.
    let (status, retried) =
        crate::lifecycle::call(&app, reqwest::Method::POST, &format!("/v1/webhook-deliveries/{id}/retry")).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert!(eventually(Duration::from_secs(3), async || receiver.events().len() == 1).await, "delivered on retry");
    let delivered =
        async || crate::lifecycle::call(&app, reqwest::Method::GET, "/v1/webhook-deliveries?status=delivered").await;
    eventually(Duration::from_secs(5), async || delivered().await.1["data"][0]["id"] == id.as_str()).await;
    let (_, page) = delivered().await;
    assert_eq!(page["data"][0]["id"], id.as_str());
    assert_eq!(page["data"][0]["attempts"], 2);
    assert!(page["data"][0]["delivered_at"].is_string());

    let (status, body) = crate::lifecycle::call(&app, reqwest::Method::GET, "/v1/webhook-deliveries?status=lost").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "status");
    let (status, body) =
        crate::lifecycle::call(&app, reqwest::Method::POST, "/v1/webhook-deliveries/msg_nope/retry").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "delivery_not_found");
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"callback_gate_webhook_deliveries_total{result="retried"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"callback_gate_webhook_deliveries_total{result="delivered"} 1"#), "{metrics}");
    assert!(metrics.contains("callback_gate_webhook_outbox_depth"), "{metrics}");
}

#[tokio::test]
async fn deliveries_are_listed_a_page_at_a_time() {
    let keys = [new_key()];
    let receiver = Receiver::new(&keys);
    let server = receiver.serve().await;
    let app = spawn_with(with_webhooks(exposing(), &server, &keys)).await;
    for n in 0..5 {
        app.mint_link(&format!("user_{n}")).await;
    }
    assert!(eventually(Duration::from_secs(5), async || receiver.events().len() == 5).await);
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = crate::lifecycle::call(
            &app,
            reqwest::Method::GET,
            &format!(
                "/v1/webhook-deliveries?limit=2{}",
                if cursor.is_empty() { String::new() } else { format!("&cursor={cursor}") }
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for delivery in page["data"].as_array().unwrap() {
            seen.push(delivery["event"]["data"]["identifier"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["user_0", "user_1", "user_2", "user_3", "user_4"]);
}

#[tokio::test]
async fn a_slow_or_redirecting_receiver_never_slows_a_flow_and_is_not_followed() {
    let keys = [new_key()];
    let server = MockServer::start().await;
    // A receiver that takes longer than an attempt may, then one that redirects elsewhere.
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(30)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(307).insert_header("location", format!("{}/elsewhere", server.uri())))
        .mount(&server)
        .await;
    let app = spawn_with(with_webhooks(exposing(), &server, &keys)).await;
    app.mock_token_success(3).await;
    for n in 0..3 {
        let started = std::time::Instant::now();
        connect(&app, &format!("user_{n}")).await;
        assert!(started.elapsed() < Duration::from_secs(2), "a flow does not wait for webhooks");
    }
    // The redirect is recorded as a failed attempt, never followed.
    assert!(
        eventually(Duration::from_secs(5), async || {
            let rows = app.sql_rows("SELECT last_error FROM webhook_outbox WHERE last_error LIKE '%redirect%'").await;
            !rows.is_empty()
        })
        .await
    );
    let requests = server.received_requests().await.unwrap();
    assert!(requests.iter().all(|r| r.url.path() == "/hooks"), "the redirect was not followed");
}

#[tokio::test]
async fn an_event_refused_for_a_day_is_marked_failed_and_can_be_retried() {
    let keys = [new_key()];
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path("/hooks")).respond_with(ResponseTemplate::new(500)).mount(&server).await;
    let app = spawn_with(with_webhooks(exposing(), &server, &keys)).await;
    app.mint_link("user_1").await;
    assert!(eventually(Duration::from_secs(5), async || server.received_requests().await.unwrap().len() == 1).await);
    // The event has been refused since a day ago: its next refusal is its last.
    let a_day_ago = time::OffsetDateTime::now_utc().unix_timestamp() * 1000 - 24 * 60 * 60 * 1000 - 60_000;
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    app.sql(&format!("UPDATE webhook_outbox SET created_at = {a_day_ago}, next_attempt_at = {now_ms}")).await;
    assert!(
        eventually(Duration::from_secs(5), async || {
            app.sql_rows("SELECT status FROM webhook_outbox").await[0][0].as_deref() == Some("failed")
        })
        .await,
        "marked failed"
    );
    let (_, page) = crate::lifecycle::call(&app, reqwest::Method::GET, "/v1/webhook-deliveries?status=failed").await;
    let delivery = &page["data"][0];
    assert_eq!(delivery["attempts"], 2);
    assert_eq!(delivery["last_status"], 500);
    assert!(delivery["next_attempt_at"].is_null(), "{delivery}");
    let attempts = server.received_requests().await.unwrap().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(server.received_requests().await.unwrap().len(), attempts, "no more attempts once failed");
    // An operator retries it by hand.
    let id = delivery["id"].as_str().unwrap();
    let (status, _) =
        crate::lifecycle::call(&app, reqwest::Method::POST, &format!("/v1/webhook-deliveries/{id}/retry")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        eventually(Duration::from_secs(3), async || server.received_requests().await.unwrap().len() > attempts).await
    );
}

//! Every claimed flow ends, and every link connects once: callbacks cut short by the browser or a timeout, callbacks
//! whose process stopped, store failures after a successful exchange, and links reopened or forwarded after they
//! connected the account.

use std::time::Duration;

use callback_gate::store::Table;
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{Browser, CONNECTION, Options, TestApp, code_on, reference_on, spawn_app, spawn_with};

/// The flow's status, outcome code and cause, read straight from the store.
async fn flow_row(app: &TestApp) -> (String, Option<String>, Option<String>, Option<String>) {
    let mut rows = app.sql_rows("SELECT status, outcome_code, outcome_cause, reference FROM flows").await;
    assert_eq!(rows.len(), 1, "one flow");
    let mut row = rows.remove(0).into_iter();
    let mut next = || row.next().flatten();
    (next().expect("a status"), next(), next(), next())
}

/// Waits until the only flow has left `exchanging`, for at most five seconds.
async fn ended_flow(app: &TestApp) -> (String, Option<String>, Option<String>, Option<String>) {
    for _ in 0..100 {
        let row = flow_row(app).await;
        if row.0 != "exchanging" {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the flow is still exchanging: {:?}", flow_row(app).await);
}

/// The browser sends the provider's redirect back, then goes away long before the provider's token endpoint answers.
async fn give_up_on_callback(app: &TestApp, browser: &Browser, state: &str) {
    let cut = browser
        .impatient(Duration::from_millis(150))
        .get(app.url(&format!("/connect/callback/{CONNECTION}?code=c-1&state={state}")))
        .send()
        .await;
    assert!(cut.is_err(), "the browser went away before the answer");
}

/// Account writes: what storing a connected account does.
const ACCOUNT_WRITES: (&str, Option<&str>) = ("BEFORE UPDATE ON connected_accounts", None);

fn json_body(status: u16, body: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(body)
}

fn tokens() -> serde_json::Value {
    json!({
        "access_token": "at-secret-value-0001",
        "refresh_token": "rt-secret-value-0001",
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": "read write"
    })
}

// ---------------------------------------------------------------------------------------------------------------
// No limbo
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_callback_whose_browser_goes_away_still_ends_its_flow() {
    let app = spawn_app().await;
    app.mock_token(
        json_body(400, json!({ "error": "invalid_grant", "error_description": "code expired" }))
            .set_delay(Duration::from_millis(800)),
    )
    .await;
    let (browser, started) = app.begin("user_1").await;
    give_up_on_callback(&app, &browser, &started.state).await;

    let (status, code, cause, reference) = ended_flow(&app).await;
    assert_eq!(status, "failed");
    assert_eq!(code.as_deref(), Some("failed_to_exchange_token"));
    assert_eq!(cause.as_deref(), Some("invalid_grant"));
    let reference = reference.expect("the ending has a reference");
    assert_eq!(app.reference(&reference).await["cause"], "invalid_grant");
    let account = app.account("user_1").await;
    assert_eq!(account["last_error"]["reference"], reference.as_str());

    // The browser comes back to the result page: the ending, not "still connecting".
    let flow_id = app.only_flow_id().await;
    let page = browser.get(&app.url(&format!("/connect/result/{flow_id}"))).await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    let page = page.text().await.unwrap();
    assert_eq!(code_on(&page), "failed_to_exchange_token");
    assert_eq!(reference_on(&page), reference);
}

#[tokio::test]
async fn a_callback_whose_browser_goes_away_still_connects_the_account() {
    let app = spawn_app().await;
    app.mock_token(json_body(200, tokens()).set_delay(Duration::from_millis(800))).await;
    let (browser, started) = app.begin("user_1").await;
    give_up_on_callback(&app, &browser, &started.state).await;
    let (status, ..) = ended_flow(&app).await;
    assert_eq!(status, "succeeded");
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");
    assert!(app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.is_some());
}

/// A provider slower than the request timeout: the browser is sent to the result page before the timeout would cut
/// the request, the page reloads itself while the exchange goes on, and then shows the ending.
#[tokio::test]
async fn a_callback_slower_than_the_request_timeout_ends_on_the_result_page() {
    let app = spawn_with(Options { request_timeout: Some(Duration::from_millis(500)), ..Options::default() }).await;
    app.mock_token(json_body(200, tokens()).set_delay(Duration::from_millis(1200))).await;
    let (browser, started) = app.begin("user_1").await;
    let response = app.callback(&browser, &format!("code=c-1&state={}", started.state)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let result = app.url(response.headers()[LOCATION].to_str().unwrap());
    assert_eq!(flow_row(&app).await.0, "exchanging", "the browser was answered before the exchange finished");
    let page = browser.get(&result).await;
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(page.contains("Still connecting") && page.contains(r#"<meta http-equiv="refresh" content="3">"#));

    let (status, ..) = ended_flow(&app).await;
    assert_eq!(status, "succeeded");
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");
    let page = browser.get(&result).await.text().await.unwrap();
    assert!(page.contains("data-outcome=\"connected\""));
    assert!(!page.contains("http-equiv=\"refresh\""), "a finished flow's page stays put");
}

/// A callback whose process stopped mid-exchange: its flow is ended when found, not shown as pending forever.
#[tokio::test]
async fn a_flow_whose_callback_never_finished_is_ended_when_found() {
    let app = spawn_app().await;
    let (browser, _started) = app.begin("user_1").await;
    let an_hour_ago = (time::OffsetDateTime::now_utc().unix_timestamp() - 3600) * 1000;
    app.sql(&format!("UPDATE flows SET status = 'exchanging', claimed_at = {an_hour_ago}")).await;
    let flow_id = app.only_flow_id().await;

    let page = browser.get(&app.url(&format!("/connect/result/{flow_id}"))).await;
    assert_eq!(page.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let page = page.text().await.unwrap();
    assert_eq!(code_on(&page), "internal_error");
    let reference = reference_on(&page);
    assert!(app.reference(&reference).await["detail"].as_str().unwrap().contains("stopped before it finished"));
    assert_eq!(flow_row(&app).await.0, "failed");
    assert_eq!(app.account("user_1").await["last_error"]["reference"], reference.as_str());

    // A claim that is merely slow is left alone.
    let (browser, _started) = app.begin("user_2").await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    app.sql(&format!("UPDATE flows SET status = 'exchanging', claimed_at = {now} WHERE identifier = 'user_2'")).await;
    let flow_id = app.sql_rows("SELECT id FROM flows WHERE identifier = 'user_2'").await[0][0].clone().unwrap();
    let page = browser.get(&app.url(&format!("/connect/result/{flow_id}"))).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("Still connecting"));
}

#[tokio::test]
async fn the_sweeper_ends_abandoned_flows_once() {
    let app = spawn_app().await;
    for identifier in ["user_1", "user_2"] {
        app.begin(identifier).await;
    }
    let an_hour_ago = (time::OffsetDateTime::now_utc().unix_timestamp() - 3600) * 1000;
    app.sql(&format!("UPDATE flows SET status = 'exchanging', claimed_at = {an_hour_ago}")).await;
    let (first, second) = tokio::join!(
        callback_gate::flow::end_abandoned(&app.state, None),
        callback_gate::flow::end_abandoned(&app.state, None)
    );
    assert_eq!(first.unwrap() + second.unwrap(), 2, "each abandoned flow is ended exactly once");
    assert_eq!(app.count(Table::OutcomeEvents).await, 2);
    for identifier in ["user_1", "user_2"] {
        assert_eq!(app.account(identifier).await["last_error"]["code"], "internal_error");
    }
}

/// The exchange succeeded but the account could not be written: the page and the reference name the real cause.
#[tokio::test]
async fn a_store_failure_after_the_exchange_keeps_its_cause() {
    let app = spawn_app().await;
    app.mock_token_success(1).await;
    let (browser, started) = app.begin("user_1").await;
    app.break_writes(&[ACCOUNT_WRITES]).await;
    let response = app.callback(&browser, &format!("code=c-1&state={}", started.state)).await;
    let (status, page) = app.follow(&browser, response).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(code_on(&page), "failed_to_exchange_token");
    assert!(page.contains("cause <strong>post_auth_hook</strong>"), "{page}");
    let reference = reference_on(&page);
    let event = app.reference(&reference).await;
    assert_eq!(event["cause"], "post_auth_hook");
    assert!(event["detail"].as_str().unwrap().contains("simulated disk failure"), "{event}");
    assert!(app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.is_none());
    let (flow_status, code, cause, _) = flow_row(&app).await;
    assert_eq!(
        (flow_status.as_str(), code.as_deref(), cause.as_deref()),
        ("failed", Some("failed_to_exchange_token"), Some("post_auth_hook"))
    );
}

/// Nothing can be written after the exchange: the page is rendered at the callback with its reference, instead of
/// a redirect to a result page that would say "still connecting" forever.
#[tokio::test]
async fn a_store_that_fails_entirely_after_the_exchange_renders_the_page_in_place() {
    let app = spawn_app().await;
    app.mock_token_success(1).await;
    let (browser, started) = app.begin("user_1").await;
    app.break_writes(&[ACCOUNT_WRITES, ("BEFORE UPDATE OF status ON flows", Some("NEW.status <> 'exchanging'"))]).await;
    let response = app.callback(&browser, &format!("code=c-1&state={}", started.state)).await;
    assert!(response.headers().get(LOCATION).is_none(), "rendered in place");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let page = response.text().await.unwrap();
    assert_eq!(code_on(&page), "failed_to_exchange_token");
    assert!(page.contains("cause <strong>post_auth_hook</strong>"));
    let reference = reference_on(&page);
    assert_eq!(app.reference(&reference).await["cause"], "post_auth_hook");
}

// ---------------------------------------------------------------------------------------------------------------
// Links connect once
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_link_that_connected_the_account_starts_no_second_flow() {
    let app = spawn_app().await;
    app.mock_token_success(1).await;
    let link = app.mint_link("user_1").await;
    let browser = Browser::new();
    let started = app.start(&browser, &link).await;
    let response = app.callback(&browser, &format!("code=c-1&state={}", started.state)).await;
    let (status, _) = app.follow(&browser, response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");

    // Forwarded to someone else, or reopened by the user: the link is spent.
    for opener in [Browser::new(), browser] {
        let response = opener.get(&link).await;
        assert_eq!(response.status(), StatusCode::GONE);
        let page = response.text().await.unwrap();
        assert_eq!(code_on(&page), "link_used");
        assert!(!page.contains("data-action=\"restart\""), "a spent link is not offered again");
        assert!(page.contains("data-action=\"return\""));
        let reference = reference_on(&page);
        assert!(app.reference(&reference).await["detail"].as_str().unwrap().contains("already connected"));
    }
    assert_eq!(app.count(Table::Flows).await, 1, "no second flow was started");
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");
    assert!(app.account("user_1").await["last_error"].is_null(), "a spent link says nothing about the account");
}

#[tokio::test]
async fn a_flow_started_in_parallel_from_a_consumed_link_cannot_connect() {
    let app = spawn_app().await;
    let link = app.mint_link("victim").await;
    let attacker = Browser::new();
    let attackers_flow = app.start(&attacker, &link).await;
    let victim = Browser::new();
    let victims_flow = app.start(&victim, &link).await;

    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(json_body(200, tokens()))
        .expect(1)
        .mount(&app.provider)
        .await;
    let response = app.callback(&victim, &format!("code=victims-code&state={}", victims_flow.state)).await;
    assert_eq!(app.follow(&victim, response).await.0, StatusCode::OK);

    let response = app.callback(&attacker, &format!("code=attackers-code&state={}", attackers_flow.state)).await;
    assert_eq!(response.status(), StatusCode::GONE);
    assert_eq!(code_on(&response.text().await.unwrap()), "link_used");
    let tokens = app.open_tokens(CONNECTION, "victim", CONNECTION, "victim").await.unwrap();
    assert_eq!(tokens["access_token"], "at-secret-value-0001");
    app.record_verifiers().await;
    let exchanged: Vec<String> = app
        .provider
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/token")
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(exchanged.len(), 1, "the second flow's code was never exchanged");
    assert!(exchanged[0].contains("victims-code"));
}

//! Operations: who may read `/metrics`, where else it is served, and what it counts.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Browser, Options, spawn_app, spawn_with};

/// The value of the sample `name{labels}` on a metrics page, where it is there.
fn sample(page: &str, name_and_labels: &str) -> Option<f64> {
    page.lines().find_map(|line| line.strip_prefix(name_and_labels)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_need_an_api_key_by_default() {
    let app = spawn_app().await;
    let anonymous = app.api.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let error: Value = anonymous.json().await.unwrap();
    assert_eq!(error["error"]["code"], "unauthorized");
    let wrong = app.api.get(app.url("/metrics")).bearer_auth("not-a-key-0123456789").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let keyed = app.api.get(app.url("/metrics")).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(keyed.status(), StatusCode::OK);
    assert!(keyed.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let page = keyed.text().await.unwrap();
    // Labelled families appear with their first sample (the flow tests below); these have none.
    for family in ["callback_gate_outcome_events_dropped_total counter", "callback_gate_open_connections gauge"] {
        assert!(page.contains(&format!("# TYPE {family}\n")), "{family} missing from:\n{page}");
    }
    assert_eq!(sample(&page, "callback_gate_outcome_events_dropped_total"), Some(0.0), "{page}");
    // The scrape's own connection is open while it is answered, and so are three idle keep-alive ones.
    let idle: Vec<reqwest::Client> = (0..3).map(|_| reqwest::Client::new()).collect();
    for client in &idle {
        assert_eq!(client.get(app.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    }
    let page = app.api.get(app.url("/metrics")).bearer_auth(&app.api_key).send().await.unwrap().text().await.unwrap();
    assert!(sample(&page, "callback_gate_open_connections").is_some_and(|open| open >= 4.0), "{page}");
}

#[tokio::test]
async fn metrics_listen_serves_metrics_without_a_key_on_its_own_address_only() {
    let app =
        spawn_with(Options { extra_config: "[metrics]\nlisten = \"127.0.0.1:0\"".into(), ..Options::default() }).await;
    let port = app.metrics_port.expect("metrics.listen is bound");
    assert_ne!(port, app.port);
    let open = app.api.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap();
    assert_eq!(open.status(), StatusCode::OK);
    assert!(open.text().await.unwrap().contains("# TYPE callback_gate_outcome_events_dropped_total counter"));
    // Nothing else is served there: not the API, not the pages.
    let api = app.api.get(format!("http://127.0.0.1:{port}/v1/connected-accounts")).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
    // The main address still asks for the key.
    assert_eq!(app.api.get(app.url("/metrics")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_flow_is_counted_by_outcome_and_connection_with_its_token_and_store_timings() {
    let app = spawn_app().await;
    app.mock_token_success(1).await;
    let (browser, started) = app.begin("user_metrics").await;
    let response = app.callback(&browser, &format!("code=the-code&state={}", started.state)).await;
    let (status, _) = app.follow(&browser, response).await;
    assert_eq!(status, StatusCode::OK);
    // A callback naming a connection that is not configured is counted under none, whatever it says.
    let stray = Browser::new();
    let _ = app.callback_on(&stray, "not-configured", "code=c&state=s").await;

    let page = app.metrics().await;
    let connected = r#"callback_gate_flow_outcomes_total{outcome="connected",connection="mock"}"#;
    assert_eq!(sample(&page, connected), Some(1.0), "{page}");
    let unknown = r#"callback_gate_flow_outcomes_total{outcome="connection_unknown",connection=""}"#;
    assert_eq!(sample(&page, unknown), Some(1.0), "{page}");
    assert!(!page.contains("not-configured"), "{page}");
    let token = r#"callback_gate_token_request_duration_seconds_count{provider="oauth2",connection="mock",grant="authorization_code",result="ok"}"#;
    assert_eq!(sample(&page, token), Some(1.0), "{page}");
    for operation in ["create_link", "start_flow", "claim_flow", "complete_flow"] {
        let count = format!(r#"callback_gate_store_operation_duration_seconds_count{{operation="{operation}"}}"#);
        assert!(sample(&page, &count).is_some_and(|n| n >= 1.0), "{operation} not timed:\n{page}");
    }
    // The start reads its link in the same operation that stores the flow.
    let find_link = r#"callback_gate_store_operation_duration_seconds_count{operation="find_link"}"#;
    assert_eq!(sample(&page, find_link), None, "{page}");
}

#[tokio::test]
async fn a_refused_refresh_is_timed_under_its_cause() {
    let app = spawn_app().await;
    app.mock_token_success(1).await;
    let (browser, started) = app.begin("user_refresh_metrics").await;
    let response = app.callback(&browser, &format!("code=the-code&state={}", started.state)).await;
    app.follow(&browser, response).await;
    app.provider.reset().await;
    app.mock_token(wiremock::ResponseTemplate::new(400).set_body_json(serde_json::json!({"error": "invalid_grant"})))
        .await;
    let refreshed = app
        .api
        .post(app.url("/v1/connected-accounts/mock/user_refresh_metrics/refresh"))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::BAD_GATEWAY);

    let page = app.metrics().await;
    let token = r#"callback_gate_token_request_duration_seconds_count{provider="oauth2",connection="mock",grant="refresh_token",result="invalid_grant"}"#;
    assert_eq!(sample(&page, token), Some(1.0), "{page}");
    let outcome = r#"callback_gate_flow_outcomes_total{outcome="token_refresh_failed",connection="mock"}"#;
    assert_eq!(sample(&page, outcome), Some(1.0), "{page}");
}

/// The result page a browser is sent to after its callback is answered by the instance that ended the flow from
/// what it just wrote, once, without a store read; the browser check applies as before.
#[tokio::test]
async fn the_result_page_after_a_callback_on_this_instance_reads_no_flow_from_the_store() {
    let app = spawn_app().await;
    let find_flow = r#"callback_gate_store_operation_duration_seconds_count{operation="find_flow"}"#;
    app.mock_token_success(2).await;
    let (browser, started) = app.begin("user_result_connected").await;
    let response = app.callback(&browser, &format!("code=the-code&state={}", started.state)).await;
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let (status, page) = app.follow(&browser, response).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("data-outcome=\"connected\""), "{page}");

    // A flow that failed after its claim: the result page shows the failure and its reference.
    app.provider.reset().await;
    app.mock_token(wiremock::ResponseTemplate::new(400).set_body_json(serde_json::json!({"error": "invalid_grant"})))
        .await;
    let (failing, started) = app.begin("user_result_failed").await;
    let response = app.callback(&failing, &format!("code=the-code&state={}", started.state)).await;
    let (status, page) = app.follow(&failing, response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert_eq!(crate::helpers::code_on(&page), "failed_to_exchange_token");
    let reference = crate::helpers::reference_on(&page);
    assert_eq!(app.reference(&reference).await["code"], "failed_to_exchange_token");
    let page = app.metrics().await;
    assert_eq!(sample(&page, find_flow), None, "a result page read its flow from the store:\n{page}");

    // Opened again, the page reads the store, and shows the same.
    let again = browser.get(&app.url(&location)).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert!(again.text().await.unwrap().contains("data-outcome=\"connected\""));
    assert_eq!(sample(&app.metrics().await, find_flow), Some(1.0));

    // Another browser that comes first is refused from what was kept, and the flow's own browser still gets
    // its page, from the store.
    app.provider.reset().await;
    app.mock_token_success(1).await;
    let (browser, started) = app.begin("user_result_raced").await;
    let response = app.callback(&browser, &format!("code=c&state={}", started.state)).await;
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let stranger = Browser::new().get(&app.url(&location)).await;
    assert_eq!(stranger.status(), StatusCode::FORBIDDEN);
    assert!(!stranger.text().await.unwrap().contains("Connected</h1>"));
    let page = browser.get(&app.url(&location)).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("data-outcome=\"connected\""));
    assert_eq!(sample(&app.metrics().await, find_flow), Some(2.0));

    // The flows are stored as the pages showed them.
    let rows = app.sql_rows("SELECT identifier, status, reference FROM flows ORDER BY identifier").await;
    assert_eq!(
        rows,
        [
            vec![Some("user_result_connected".into()), Some("succeeded".into()), None],
            vec![Some("user_result_failed".into()), Some("failed".into()), Some(reference)],
            vec![Some("user_result_raced".into()), Some("succeeded".into()), None],
        ]
    );
}

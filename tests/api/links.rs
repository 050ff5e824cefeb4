//! The API: authorization links, connected accounts, authentication and input checks.

use callback_gate::store::Table;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{CONNECTION, spawn_app};

#[tokio::test]
async fn minting_a_link_returns_201_and_makes_the_account_pending() {
    let app = spawn_app().await;
    let response = app.post_link(json!({ "connection": CONNECTION, "identifier": "user_1" })).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let link = body["link"].as_str().unwrap();
    assert!(link.starts_with(&app.url("/connect/start/")), "{link}");
    assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));
    let account = app.account("user_1").await;
    assert_eq!(account["status"], "PENDING_AUTH");
    assert_eq!(account["last_error"], Value::Null);
    assert_eq!(app.count(Table::Links).await, 1);
}

#[tokio::test]
async fn the_api_refuses_missing_and_wrong_keys() {
    let app = spawn_app().await;
    let url = app.url("/v1/authorization-links");
    let body = json!({ "connection": CONNECTION, "identifier": "user_1" });
    for request in [
        app.api.post(&url).json(&body),
        app.api.post(&url).bearer_auth("wrong-key-0000000000").json(&body),
        app.api.post(&url).header("Authorization", format!("Basic {}", app.api_key)).json(&body),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "unauthorized");
    }
    assert_eq!(app.count(Table::Links).await, 0);
    assert_eq!(app.count(Table::Accounts).await, 0);
}

#[tokio::test]
async fn an_unknown_connection_is_404_connection_unknown() {
    let app = spawn_app().await;
    let response = app.post_link(json!({ "connection": "nope", "identifier": "user_1" })).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "connection_unknown");
    assert_eq!(app.count(Table::Accounts).await, 0);
}

#[tokio::test]
async fn invalid_identifiers_are_422_naming_the_field() {
    let app = spawn_app().await;
    for identifier in [String::new(), "a".repeat(256), "user\n1".into(), "user\u{1b}[31m".into(), "a\u{0}b".into()] {
        let response = app.post_link(json!({ "connection": CONNECTION, "identifier": identifier })).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{identifier:?}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_identifier");
        assert_eq!(error["error"]["field"], "identifier");
        assert!(error["error"]["message"].as_str().unwrap().starts_with("identifier"));
    }
    let longest = "a".repeat(255);
    assert_eq!(
        app.post_link(json!({ "connection": CONNECTION, "identifier": longest })).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(app.count(Table::Accounts).await, 1);
}

#[tokio::test]
async fn invalid_return_to_is_422_naming_the_field() {
    let app = spawn_app().await;
    for return_to in [
        "https://evil.example.com/",
        "javascript:alert(1)",
        "data:text/html,hi",
        "/relative/path",
        "https://app.example.com@evil.example.com/",
        "https://user:pw@app.example.com/",
        "https:\\\\evil.example.com",
        "https://app.example.com\t.evil.example.com/",
        "http://app.example.com/",
    ] {
        let response =
            app.post_link(json!({ "connection": CONNECTION, "identifier": "u", "return_to": return_to })).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{return_to}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_return_to");
        assert_eq!(error["error"]["field"], "return_to");
    }
    let ok = app
        .post_link(json!({ "connection": CONNECTION, "identifier": "u", "return_to": "https://app.example.com/done" }))
        .await;
    assert_eq!(ok.status(), StatusCode::CREATED);
    assert_eq!(app.count(Table::Links).await, 1);
}

#[tokio::test]
async fn malformed_json_is_400_and_wrong_shapes_are_422() {
    let app = spawn_app().await;
    let url = app.url("/v1/authorization-links");
    let send = |body: &'static str| {
        app.api.post(&url).bearer_auth(&app.api_key).header("content-type", "application/json").body(body).send()
    };
    for body in ["{", "not json", "{\"connection\": \"mock\", \"identifier\": }", "\u{0}"] {
        let response = send(body).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body:?}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_json");
    }
    let response = send("{\"connection\": \"mock\"}").await.unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("identifier"), "{error}");
    let response = app.api.post(&url).bearer_auth(&app.api_key).body("{}").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(app.count(Table::Links).await, 0);
}

#[tokio::test]
async fn accounts_list_filters_and_paginates() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.mint_link(&format!("user_{i}")).await;
    }
    let other = app.post_link(json!({ "connection": "other", "identifier": "user_x" })).await;
    assert_eq!(other.status(), StatusCode::CREATED);

    let list = |query: String| {
        let app = &app;
        async move {
            let response = app
                .api
                .get(app.url(&format!("/v1/connected-accounts{query}")))
                .bearer_auth(&app.api_key)
                .send()
                .await
                .unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, page) = list(format!("?connection={CONNECTION}&limit=2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    let mut seen: Vec<String> =
        page["data"].as_array().unwrap().iter().map(|a| a["identifier"].as_str().unwrap().to_owned()).collect();
    let mut cursor = page["next_cursor"].as_str().map(str::to_owned);
    while let Some(next) = cursor {
        let (_, page) = list(format!("?connection={CONNECTION}&limit=2&cursor={next}")).await;
        seen.extend(page["data"].as_array().unwrap().iter().map(|a| a["identifier"].as_str().unwrap().to_owned()));
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, ["user_0", "user_1", "user_2", "user_3", "user_4"]);

    let (_, all) = list(String::new()).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 6);
    let (_, active) = list("?status=ACTIVE".into()).await;
    assert_eq!(active["data"].as_array().unwrap().len(), 0);
    let (_, pending) = list("?status=PENDING_AUTH&connection=other".into()).await;
    assert_eq!(pending["data"].as_array().unwrap().len(), 1);

    let (status, error) = list("?status=SOMETHING".into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["field"], "status");
    let (status, _) = list("?cursor=%%%".into()).await;
    assert!(status.is_client_error());
    let (status, error) = list("?cursor=bm9wZQ".into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["field"], "cursor");
    let (status, _) = list("?limit=0".into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, error) = list("?connection=nope".into()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"]["code"], "connection_unknown");
}

#[tokio::test]
async fn an_unknown_account_is_404() {
    let app = spawn_app().await;
    let response =
        app.api.get(app.url("/v1/connected-accounts/mock/nobody")).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "account_not_found");
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let app = spawn_app().await;
    assert_eq!(app.api.get(app.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(app.api.get(app.url("/readyz")).send().await.unwrap().status(), StatusCode::OK);
    assert!(app.metrics().await.contains("# TYPE callback_gate_outcome_events_dropped_total counter"));
}

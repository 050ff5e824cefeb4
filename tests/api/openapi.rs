//! `GET /v1/openapi.json`: served without a key, and listing exactly the router's `/v1` routes and methods.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app};

/// The API router's paths (`/authorization-links`, `/connected-accounts/{connection}/{identifier}`, ...), read from
/// its `Debug` output: axum has no other way to list a router's routes.
fn router_paths(app: &TestApp) -> BTreeSet<String> {
    let router = format!("{:?}", callback_gate::api::routes(app.state.clone()));
    let start = router.find("paths: {").expect("axum's Router Debug lists its paths") + "paths: {".len();
    // The map is `{RouteId(1): "/path", ...}`: it ends at the first quote followed by a closing brace.
    let end = start + router[start..].find("\"}").expect("end of the paths map") + 1;
    let paths: BTreeSet<String> =
        router[start..end].split(": \"").skip(1).filter_map(|rest| rest.split('"').next().map(str::to_owned)).collect();
    assert!(paths.len() >= 5, "too few paths read from {router}");
    paths
}

/// The methods a path answers, as the `Allow` header of a request with a method no route has.
async fn router_methods(app: &TestApp, path: &str) -> BTreeSet<String> {
    let concrete = path
        .replace("{connection}", "mock")
        .replace("{identifier}", "user_1")
        .replace("{reference}", "CG-0000-0000")
        .replace("{*path}", "some/path");
    let method = reqwest::Method::from_bytes(b"PROBE").unwrap();
    let response =
        app.api.request(method, app.url(&format!("/v1{concrete}"))).bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
    let allow = response.headers()["allow"].to_str().unwrap().to_owned();
    // axum answers HEAD wherever it answers GET; the document lists GET.
    allow.split(',').map(|m| m.trim().to_lowercase()).filter(|m| m != "head" && !m.is_empty()).collect()
}

async fn document(app: &TestApp) -> Value {
    let response = app.api.get(app.url("/v1/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_served_without_a_key_and_describes_the_key_and_the_error_body() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["components"]["securitySchemes"]["api_key"]["type"], "http");
    assert_eq!(doc["components"]["securitySchemes"]["api_key"]["scheme"], "bearer");
    assert_eq!(doc["security"], serde_json::json!([{ "api_key": [] }]));
    let error = &doc["components"]["schemas"]["ErrorDetail"];
    assert_eq!(error["required"], serde_json::json!(["code", "message"]));
    // Every operation but the document itself needs the key; every one documents its errors.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let open = path == "/v1/openapi.json";
            assert_eq!(operation.get("security").is_some(), open, "{method} {path}");
            if !open {
                assert!(operation["responses"]["401"].is_object(), "{method} {path} documents 401");
                assert!(operation["responses"]["default"].is_object(), "{method} {path} documents other errors");
            }
        }
    }
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_and_methods_of_the_router() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let documented: BTreeMap<String, BTreeSet<String>> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| (path.clone(), item.as_object().unwrap().keys().cloned().collect()))
        .collect();
    let mut routed = BTreeMap::new();
    for path in router_paths(&app) {
        let methods = router_methods(&app, &path).await;
        // The proxy's catch-all `{*path}` is the document's `{path}`.
        routed.insert(format!("/v1{}", path.replace("{*path}", "{path}")), methods);
    }
    assert_eq!(routed, documented, "every /v1 route needs a #[utoipa::path] listed in openapi::ApiDoc");
}

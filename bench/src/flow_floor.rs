//! The flow floor: the five steps of a connection flow served from memory by a minimal axum service, the floor
//! for complete flows as the ceiling server is for single requests.
//!
//! It answers every request the simulated browsers send the way callback-gate does (a link from the API, a start
//! that sets a browser cookie and redirects to the provider, a callback that checks the state and the cookie, asks
//! the mock provider's token endpoint for tokens over HTTP and redirects to the result page, a result page), so a
//! flow makes the same requests and the same token round trip on the same cores. It keeps no database, writes no
//! log, seals nothing and keeps its flows in a map under a mutex: what it measures is what the machine, the
//! harness and the provider cost a flow before any service does real work. Its requests are also a little smaller
//! than callback-gate's (no PKCE challenge or verifier, no client secret, a shorter result page), which only lowers
//! the floor. It runs as its own process (`callback-gate-bench flow-floor --provider URL`), and `flows --flow-floor`
//! runs a concurrency row against it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;

/// The API key the floor accepts, the one `flows --flow-floor` sends.
pub const API_KEY: &str = "bench-floor";

const COOKIE: &str = "floor-browser";

#[derive(Clone)]
struct Floor {
    base: Arc<str>,
    /// Where the provider sends the browser back: the same for every flow, so made once.
    redirect_uri: Arc<str>,
    provider: Arc<str>,
    client: reqwest::Client,
    next: Arc<AtomicU64>,
    /// Link id → identifier, until a start uses it.
    links: Arc<Mutex<HashMap<String, String>>>,
    /// State → (flow id, browser), until its callback takes it.
    flows: Arc<Mutex<HashMap<String, (String, String)>>>,
    /// Flow id → (browser, access token), until its result page is shown.
    ended: Arc<Mutex<HashMap<String, (String, String)>>>,
}

/// Serves on an ephemeral loopback port, printing `listening <port>` once bound.
pub async fn serve(provider: String) -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()
        .map_err(|err| std::io::Error::other(err.to_string()))?;
    let floor = Floor {
        base: format!("http://{addr}").into(),
        redirect_uri: format!("http://{addr}/connect/callback/bench").into(),
        provider: provider.trim_end_matches('/').into(),
        client,
        next: Arc::new(AtomicU64::new(1)),
        links: Arc::default(),
        flows: Arc::default(),
        ended: Arc::default(),
    };
    let router = Router::new()
        .route("/v1/authorization-links", post(link))
        .route("/connect/start/{link}", get(start))
        .route("/connect/callback/{connection}", get(callback))
        .route("/connect/result/{flow}", get(result))
        .with_state(floor);
    crate::announce(addr.port());
    axum::serve(listener, router).with_graceful_shutdown(crate::terminated()).await
}

impl Floor {
    fn id(&self, prefix: &str) -> String {
        format!("{prefix}{:016x}", self.next.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
}

fn refused(status: StatusCode, why: &'static str) -> Response {
    (status, why).into_response()
}

fn browser_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE).and_then(|rest| rest.strip_prefix('=')))
}

/// `POST /v1/authorization-links`: a link for the identifier in the JSON body.
async fn link(State(floor): State<Floor>, headers: HeaderMap, body: Bytes) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.strip_prefix("Bearer ") == Some(API_KEY));
    if !authorized {
        return refused(StatusCode::UNAUTHORIZED, "no API key");
    }
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return refused(StatusCode::BAD_REQUEST, "not JSON");
    };
    let Some(identifier) = request["identifier"].as_str() else {
        return refused(StatusCode::BAD_REQUEST, "no identifier");
    };
    let id = floor.id("l");
    if let Ok(mut links) = floor.links.lock() {
        links.insert(id.clone(), identifier.to_owned());
    }
    let answer = serde_json::json!({ "link": format!("{}/connect/start/{id}", floor.base) }).to_string();
    (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/json")], answer).into_response()
}

/// `GET /connect/start/{link}`: the browser's cookie, a flow under a fresh state, and off to the provider.
async fn start(State(floor): State<Floor>, Path(link): Path<String>, headers: HeaderMap) -> Response {
    if floor.links.lock().ok().and_then(|mut links| links.remove(&link)).is_none() {
        return refused(StatusCode::NOT_FOUND, "no such link");
    }
    let (browser, set_cookie) = match browser_of(&headers) {
        Some(browser) => (browser.to_owned(), None),
        None => {
            let browser = floor.id("b");
            let cookie = format!("{COOKIE}={browser}; HttpOnly; SameSite=Lax; Path=/");
            (browser, Some(cookie))
        }
    };
    let (flow, state) = (floor.id("f"), floor.id("s"));
    if let Ok(mut flows) = floor.flows.lock() {
        flows.insert(state.clone(), (flow, browser));
    }
    let location = format!(
        "{}/authorize?{}",
        floor.provider,
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", "bench-client")
            .append_pair("redirect_uri", &floor.redirect_uri)
            .append_pair("state", &state)
            .finish()
    );
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
    if let Some(cookie) = set_cookie.and_then(|cookie| header::HeaderValue::from_str(&cookie).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `GET /connect/callback/{connection}`: the state's flow, for this browser only, its code exchanged at the
/// provider's token endpoint, and off to the result page.
async fn callback(State(floor): State<Floor>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let query = query.unwrap_or_default();
    let (mut code, mut state) = (None, None);
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "code" => code = Some(value.into_owned()),
            "state" => state = Some(value.into_owned()),
            _ => {}
        }
    }
    let (Some(code), Some(state)) = (code, state) else {
        return refused(StatusCode::BAD_REQUEST, "no code or state");
    };
    let Some((flow, browser)) = floor.flows.lock().ok().and_then(|mut flows| flows.remove(&state)) else {
        return refused(StatusCode::BAD_REQUEST, "no such flow");
    };
    if browser_of(&headers) != Some(browser.as_str()) {
        return refused(StatusCode::BAD_REQUEST, "another browser");
    }
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", &code)
        .append_pair("redirect_uri", &floor.redirect_uri)
        .append_pair("client_id", "bench-client")
        .finish();
    let answer = floor
        .client
        .post(format!("{}/token", floor.provider))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await;
    let tokens = match answer {
        Ok(answer) if answer.status().is_success() => answer.bytes().await.ok(),
        _ => None,
    };
    let access_token = tokens
        .and_then(|body| serde_json::from_slice::<serde_json::Value>(&body).ok())
        .and_then(|tokens| tokens["access_token"].as_str().map(str::to_owned));
    let Some(access_token) = access_token else {
        return refused(StatusCode::BAD_GATEWAY, "no tokens");
    };
    if let Ok(mut ended) = floor.ended.lock() {
        ended.insert(flow.clone(), (browser, access_token));
    }
    (StatusCode::SEE_OTHER, [(header::LOCATION, format!("/connect/result/{flow}"))]).into_response()
}

/// `GET /connect/result/{flow}`: the page saying the account is connected, for the flow's browser.
async fn result(State(floor): State<Floor>, Path(flow): Path<String>, headers: HeaderMap) -> Response {
    let Some((browser, _)) = floor.ended.lock().ok().and_then(|mut ended| ended.remove(&flow)) else {
        return refused(StatusCode::NOT_FOUND, "no such flow");
    };
    if browser_of(&headers) != Some(browser.as_str()) {
        return refused(StatusCode::FORBIDDEN, "another browser");
    }
    Html(crate::ceiling::PAGE).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_browser_is_read_from_its_own_cookie_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(browser_of(&headers), None);
        headers.append(header::COOKIE, "other=1; floor-browserx=2".parse().unwrap());
        assert_eq!(browser_of(&headers), None);
        headers.append(header::COOKIE, "a=b; floor-browser=b42".parse().unwrap());
        assert_eq!(browser_of(&headers), Some("b42"));
    }
}

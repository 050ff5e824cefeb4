//! The mock OAuth provider on loopback: its authorization endpoint answers at once with a code (no consent page),
//! its token endpoint answers with tokens after a fixed delay (0 for the fast provider, 2 s for the slow one).
//!
//! It runs as its own process (`callback-gate-bench provider`), and times each token request from the moment its
//! handler starts until its answer is ready. The harness subtracts that from the callback's latency to get what
//! callback-gate itself adds; the provider's own queueing before its handler runs is counted against
//! callback-gate, which errs on the harsh side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;

#[derive(Clone)]
struct Provider {
    token_delay: Duration,
    next_code: Arc<AtomicU64>,
    /// `(code, microseconds the token endpoint took)` since the harness last collected them.
    token_times: Arc<Mutex<Vec<(String, u64)>>>,
}

pub fn router(token_delay: Duration) -> Router {
    let provider =
        Provider { token_delay, next_code: Arc::new(AtomicU64::new(1)), token_times: Arc::new(Mutex::new(Vec::new())) };
    Router::new()
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .route("/token-times", get(token_times))
        .with_state(provider)
}

/// Serves on an ephemeral loopback port, printing `listening <port>` once bound.
pub async fn serve(token_delay: Duration) -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    crate::announce(listener.local_addr()?.port());
    axum::serve(listener, router(token_delay)).with_graceful_shutdown(crate::terminated()).await
}

/// `GET /authorize`: what a provider does after the user consents, at once: back to `redirect_uri` with a code.
async fn authorize(State(provider): State<Provider>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let mut redirect_uri = None;
    let mut state = None;
    let mut response_type_code = false;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "redirect_uri" => redirect_uri = Some(value.into_owned()),
            "state" => state = Some(value.into_owned()),
            "response_type" => response_type_code = value == "code",
            _ => {}
        }
    }
    let (Some(redirect_uri), Some(state), true) = (redirect_uri, state, response_type_code) else {
        return (StatusCode::BAD_REQUEST, "authorization request without redirect_uri, state or response_type=code")
            .into_response();
    };
    let code = format!("code-{}", provider.next_code.fetch_add(1, Ordering::Relaxed));
    let location = format!(
        "{redirect_uri}?{}",
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("code", &code)
            .append_pair("state", &state)
            .finish()
    );
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// `POST /token`: the authorization-code grant, answered with tokens after the configured delay.
async fn token(State(provider): State<Provider>, body: Bytes) -> Response {
    let started = Instant::now();
    let code = url::form_urlencoded::parse(&body).find(|(key, _)| key == "code").map(|(_, value)| value.into_owned());
    let Some(code) = code else {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":"invalid_request","error_description":"no code"}"#,
        )
            .into_response();
    };
    if !provider.token_delay.is_zero() {
        tokio::time::sleep(provider.token_delay).await;
    }
    let body = format!(
        r#"{{"access_token":"at-{code}","refresh_token":"rt-{code}","token_type":"Bearer","expires_in":3600,"scope":"read write"}}"#
    );
    let took = started.elapsed().as_micros() as u64;
    if let Ok(mut times) = provider.token_times.lock() {
        times.push((code, took));
    }
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

/// `GET /token-times`: every `code microseconds` line recorded since the last call, then forgets them.
async fn token_times(State(provider): State<Provider>) -> String {
    let times = provider.token_times.lock().map(|mut times| std::mem::take(&mut *times)).unwrap_or_default();
    let mut out = String::with_capacity(times.len() * 24);
    for (code, micros) in times {
        out.push_str(&code);
        out.push(' ');
        out.push_str(&micros.to_string());
        out.push('\n');
    }
    out
}

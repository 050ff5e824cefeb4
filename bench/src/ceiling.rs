//! The ceiling: the least an axum service on this machine can do per request, a handler returning a small page.
//! It runs as its own process (`callback-gate-bench ceiling`) with the same runtime shape as callback-gate (tokio's
//! multi-threaded runtime, one worker per core), so the load tool measures both the same way.

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use tokio::net::TcpListener;

/// About the size of the head and first paragraph of a real page, well under one TCP segment.
const PAGE: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Ceiling</title></head>\
<body><main><h1>Connected</h1><p>You can close this window and go back to the app.</p></main></body></html>";

pub fn router() -> Router {
    Router::new().route("/", get(|| async { Html(PAGE) })).route("/healthz", get(|| async { "ok" }))
}

/// Serves on an ephemeral loopback port, printing `listening <port>` once bound.
pub async fn serve() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    crate::announce(listener.local_addr()?.port());
    axum::serve(listener, router()).with_graceful_shutdown(crate::terminated()).await
}

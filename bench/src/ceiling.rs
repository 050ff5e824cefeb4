//! The ceiling: the least an axum service on this machine can do per request, a handler returning a small page.
//! It runs as its own process (`callback-gate-bench ceiling`) with the same runtime shape as callback-gate (tokio's
//! multi-threaded runtime, one worker per core), so the load tool measures both the same way.
//!
//! With `--log-file`, the same process also answers `/floor`: a page of a failure page's size and one JSON log line
//! of a failure event's size written to that file, the least any failure page must do (show its page, log its
//! outcome) with nothing of callback-gate's own work.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use tokio::net::TcpListener;

/// About the size of the head and first paragraph of a real page, well under one TCP segment.
pub const PAGE: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Ceiling</title></head>\
<body><main><h1>Connected</h1><p>You can close this window and go back to the app.</p></main></body></html>";

/// Bytes of callback-gate's failure page for a missing or unknown state, as the load tool receives it.
const FAILURE_PAGE_BYTES: usize = 1_600;

#[derive(Clone)]
struct Floor {
    page: Bytes,
    log: Arc<File>,
    count: Arc<AtomicU64>,
}

pub fn router(log: Option<File>) -> Router {
    let router = Router::new().route("/", get(|| async { Html(PAGE) })).route("/healthz", get(|| async { "ok" }));
    let Some(log) = log else { return router };
    let mut page = String::from(PAGE);
    while page.len() < FAILURE_PAGE_BYTES {
        page.push_str("<p>Padding to the size of a failure page.</p>");
    }
    let floor = Floor { page: Bytes::from(page), log: Arc::new(log), count: Arc::default() };
    router.route("/floor", get(floor_page).with_state(floor))
}

/// A page of a failure page's size, and one log line as callback-gate writes it: formatted, then one write.
async fn floor_page(State(floor): State<Floor>) -> Result<Html<Bytes>, StatusCode> {
    let n = floor.count.fetch_add(1, Ordering::Relaxed);
    let line = format!(
        "{{\"timestamp\":\"{}\",\"level\":\"WARN\",\"message\":\"flow failed\",\"outcome\":\"state_missing\",\
         \"class\":\"security\",\"reference\":\"CG-{:04X}-{:04X}\",\"connection\":\"bench\",\
         \"detail\":\"the callback has no state parameter\",\"stored\":true,\"latency_ms\":0.003,\
         \"target\":\"callback_gate::outcome\"}}\n",
        timestamp_now(),
        (n >> 16) & 0xFFFF,
        n & 0xFFFF
    );
    (&*floor.log).write_all(line.as_bytes()).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(Html(floor.page.clone()))
}

/// Seconds and nanoseconds since the epoch: the work of a timestamp, without a date library.
fn timestamp_now() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}Z", now.as_secs(), now.subsec_nanos())
}

/// Serves on an ephemeral loopback port, printing `listening <port>` once bound.
pub async fn serve(log_file: Option<&Path>) -> std::io::Result<()> {
    let log = log_file.map(|path| File::options().create(true).append(true).open(path)).transpose()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    crate::announce(listener.local_addr()?.port());
    axum::serve(listener, router(log)).with_graceful_shutdown(crate::terminated()).await
}

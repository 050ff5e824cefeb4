//! Limits that keep the service answering under abuse: request sizes refused with a clear page before any handler
//! runs, and per-client rate limits on the browser routes that create or consume flows.
//!
//! Size limits answer 414, 431 and 413 with the same safe page (JSON under `/v1`). Requests larger still than the
//! HTTP parser's own buffer (about 400 KiB of head) are refused by the parser with a bare status; nothing is
//! buffered beyond it.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;

use crate::config::LimitSettings;
use crate::i18n::Language;
use crate::pages::{self, Frame};

/// Longest request target (path and query) accepted.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header bytes (names and values) accepted.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most headers accepted.
pub const MAX_HEADERS: usize = 64;
/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Refuses requests whose target, headers or declared body are too large.
pub async fn refuse_oversized(State(frame): State<Arc<Frame>>, request: Request, next: Next) -> Response {
    let language = Language::from_headers(request.headers());
    let api = request.uri().path().starts_with("/v1/");
    let target_len = request.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > MAX_URI_BYTES {
        return too_large(&frame, &language, api, StatusCode::URI_TOO_LONG, "uri_too_long");
    }
    let headers = request.headers();
    let header_bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return too_large(&frame, &language, api, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large");
    }
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return too_large(&frame, &language, api, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    }
    next.run(request).await
}

fn too_large(frame: &Frame, language: &Language, api: bool, status: StatusCode, code: &str) -> Response {
    tracing::debug!(target: "callback_gate::limits", status = status.as_u16(), code, "request refused by a size limit");
    let title_id = format!("{}-title", code.replace('_', "-"));
    if api {
        let body = json!({ "error": { "code": code, "message": Language::default().text(&title_id) } });
        return (status, axum::Json(body)).into_response();
    }
    pages::plain_notice(frame, language, status, &title_id, "refused-body")
}

/// Per-client rate limits for starting flows and for callbacks.
#[derive(Clone)]
pub struct RateLimits {
    starts: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    callbacks: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    trust_forwarded_for: bool,
    frame: Arc<Frame>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").field("trust_forwarded_for", &self.trust_forwarded_for).finish_non_exhaustive()
    }
}

fn quota(per_minute: NonZeroU32, burst: NonZeroU32) -> Quota {
    Quota::per_minute(per_minute).allow_burst(burst)
}

impl RateLimits {
    pub fn new(settings: &LimitSettings, frame: Arc<Frame>) -> Self {
        Self {
            starts: Arc::new(RateLimiter::keyed(quota(settings.starts_per_minute, settings.burst))),
            callbacks: Arc::new(RateLimiter::keyed(quota(settings.callbacks_per_minute, settings.burst))),
            trust_forwarded_for: settings.trust_forwarded_for,
            frame,
        }
    }

    /// Forgets clients that are back to a full allowance, so the limiter's memory stays bounded.
    pub fn forget_idle(&self) {
        self.starts.retain_recent();
        self.callbacks.retain_recent();
        self.starts.shrink_to_fit();
        self.callbacks.shrink_to_fit();
    }

    /// The client a request counts against: the peer address, or (only when configured, behind a proxy that
    /// appends it) the right-most `X-Forwarded-For` address, the one the proxy itself added.
    fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        if self.trust_forwarded_for {
            // Only the last entry was written by the proxy; anything before it came from the client.
            let last_entry = headers.get_all("x-forwarded-for").iter().next_back().and_then(|v| v.to_str().ok());
            let forwarded = last_entry.and_then(|v| v.rsplit(',').next()).and_then(|v| v.trim().parse::<IpAddr>().ok());
            if forwarded.is_some() {
                return forwarded;
            }
        }
        peer.map(|addr| addr.ip())
    }
}

/// Applies the start or callback limit, by path; every other route passes.
pub async fn rate_limit(State(limits): State<RateLimits>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let limiter = if path.starts_with("/connect/start/") {
        &limits.starts
    } else if path.starts_with("/connect/callback/") {
        &limits.callbacks
    } else {
        return next.run(request).await;
    };
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0);
    let Some(client) = limits.client(peer, request.headers()) else {
        return next.run(request).await;
    };
    if limiter.check_key(&client).is_ok() {
        return next.run(request).await;
    }
    tracing::debug!(target: "callback_gate::limits", path, "request refused by a rate limit");
    let language = Language::from_headers(request.headers());
    let mut response = pages::plain_notice(
        &limits.frame,
        &language,
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited-title",
        "rate-limited-body",
    );
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    response
}

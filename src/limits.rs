//! Limits that keep the service answering under abuse: request sizes refused with a clear page before any handler
//! runs, and per-client rate limits on the browser routes that create or consume flows.
//!
//! The client a request counts against is its peer address, unless the peer is one of `limits.trusted_proxies`:
//! then `X-Forwarded-For` is read right to left (every such header, in order, each a comma-separated list), each
//! trusted proxy's entry is skipped, and the first address that is not a trusted proxy is the client. Every entry
//! left of it was written by the client, who can write anything there, so none of them is read. If every entry is a
//! trusted proxy, the left-most is the client. An entry that is not an address (`unknown`, a typo, anything forged)
//! stops the walk and the last trusted hop is the client: skipping it would let a value that only a client could
//! have placed there choose the bucket, and guessing would be worse. IPv6 clients are counted per /64, the
//! smallest network one subscriber is usually given, so that rotating addresses inside it buys no new allowance.
//!
//! Size limits answer 414, 431 and 413 with the same safe page (JSON under `/v1`). Requests larger still than the
//! HTTP parser's own buffer (about 400 KiB of head) are refused by the parser with a bare status; nothing is
//! buffered beyond it.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
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
/// Largest request body accepted for a call through `/v1/proxy`.
pub const MAX_PROXY_BODY_BYTES: usize = crate::proxy::MAX_REQUEST_BYTES;

/// The refusal of a request whose target, headers or declared body are too large; `None` lets it through.
pub fn refuse_oversized(frame: &Frame, request: &Request) -> Option<Response> {
    let api = request.uri().path().starts_with("/v1/");
    let target_len = request.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    let headers = request.headers();
    let refused = |status, code| Some(too_large(frame, &Language::from_headers(headers), api, status, code));
    if target_len > MAX_URI_BYTES {
        return refused(StatusCode::URI_TOO_LONG, "uri_too_long");
    }
    let header_bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large");
    }
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    // Calls through the proxy carry the app's payloads for the provider's API (a message, an attachment).
    let most = if request.uri().path().starts_with("/v1/proxy/") { MAX_PROXY_BODY_BYTES } else { MAX_BODY_BYTES };
    if declared.is_some_and(|len| len > most as u64) {
        return refused(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    }
    None
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

/// Per-client rate limits for starting flows and for callbacks. One shared allocation: the middleware clones its
/// state for every request.
#[derive(Clone)]
pub struct RateLimits(Arc<Limiters>);

struct Limiters {
    starts: DefaultKeyedRateLimiter<IpAddr>,
    callbacks: DefaultKeyedRateLimiter<IpAddr>,
    trusted_proxies: Vec<IpNet>,
    frame: Arc<Frame>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").field("trusted_proxies", &self.0.trusted_proxies).finish_non_exhaustive()
    }
}

fn quota(per_minute: NonZeroU32, burst: NonZeroU32) -> Quota {
    Quota::per_minute(per_minute).allow_burst(burst)
}

impl RateLimits {
    pub fn new(settings: &LimitSettings, frame: Arc<Frame>) -> Self {
        Self(Arc::new(Limiters {
            starts: RateLimiter::keyed(quota(settings.starts_per_minute, settings.burst)),
            callbacks: RateLimiter::keyed(quota(settings.callbacks_per_minute, settings.burst)),
            trusted_proxies: settings.trusted_proxies.clone(),
            frame,
        }))
    }

    /// Applies the start or callback limit (which also counts credential forms), by path: the refusal of a
    /// request over its client's allowance; `None` lets it through, as every other route.
    pub fn refuse(&self, request: &Request) -> Option<Response> {
        let limits = &self.0;
        let path = request.uri().path();
        let limiter = if path.starts_with("/connect/start/") {
            &limits.starts
        } else if path.starts_with("/connect/callback/") || path.starts_with("/connect/credential/") {
            &limits.callbacks
        } else {
            return None;
        };
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>()?.0;
        let client = client_address(peer.ip(), request.headers(), &limits.trusted_proxies);
        if limiter.check_key(&bucket(client)).is_ok() {
            return None;
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
        Some(response)
    }

    /// Forgets clients that are back to a full allowance, so the limiter's memory stays bounded.
    pub fn forget_idle(&self) {
        self.0.starts.retain_recent();
        self.0.callbacks.retain_recent();
        self.0.starts.shrink_to_fit();
        self.0.callbacks.shrink_to_fit();
    }
}

/// The client a request from `peer` counts against (see the module's first lines).
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpNet]) -> IpAddr {
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|range| range.contains(ip));
    let mut client = peer.to_canonical();
    if !trusted(&client) {
        return client;
    }
    let entries = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|value| value.as_bytes().rsplit(|byte| *byte == b','))
        .map(<[u8]>::trim_ascii)
        // Empty list elements are allowed by HTTP's list syntax and say nothing.
        .filter(|entry| !entry.is_empty());
    for entry in entries {
        let Some(hop) = forwarded_address(entry) else {
            break;
        };
        client = hop;
        if !trusted(&client) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, or an address with a port as some proxies write it.
fn forwarded_address(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry).ok()?;
    let ip = entry.parse::<IpAddr>().or_else(|_| entry.parse::<SocketAddr>().map(|address| address.ip())).ok()?;
    Some(ip.to_canonical())
}

/// The rate limiter's key for a client: its address, or its /64 for IPv6.
pub fn bucket(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(values: &[&str]) -> Vec<IpNet> {
        values.iter().map(|value| value.parse().unwrap()).collect()
    }

    fn client(peer: &str, forwarded: &[&str], trusted: &[&str]) -> String {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", HeaderValue::from_bytes(value.as_bytes()).unwrap());
        }
        client_address(peer.parse().unwrap(), &headers, &ranges(trusted)).to_string()
    }

    #[test]
    fn forwarded_for_is_read_only_from_a_trusted_peer() {
        assert_eq!(client("198.51.100.9", &["203.0.113.1"], &[]), "198.51.100.9");
        assert_eq!(client("198.51.100.9", &["203.0.113.1"], &["10.0.0.0/8"]), "198.51.100.9");
        assert_eq!(client("10.1.2.3", &["203.0.113.1"], &["10.0.0.0/8"]), "203.0.113.1");
        assert_eq!(client("10.1.2.3", &[], &["10.0.0.0/8"]), "10.1.2.3", "no header: the proxy itself");
    }

    #[test]
    fn the_client_is_the_right_most_address_that_is_not_a_trusted_proxy() {
        let trusted = ["10.0.0.0/8", "192.0.2.7/32"];
        assert_eq!(client("10.0.0.1", &["203.0.113.66, 198.51.100.1, 192.0.2.7, 10.9.9.9"], &trusted), "198.51.100.1");
        // Several headers are one list, in order; whitespace around entries is ignored.
        assert_eq!(client("10.0.0.1", &["203.0.113.66", " 198.51.100.1 ,\t10.2.2.2 "], &trusted), "198.51.100.1");
        assert_eq!(client("10.0.0.1", &["203.0.113.66, 198.51.100.1", "10.2.2.2,,"], &trusted), "198.51.100.1");
        // Every hop trusted: the left-most is the client.
        assert_eq!(client("10.0.0.1", &["10.3.3.3, 10.2.2.2"], &trusted), "10.3.3.3");
        // Addresses with ports, as some proxies write them.
        assert_eq!(client("10.0.0.1", &["198.51.100.1:4711"], &trusted), "198.51.100.1");
        assert_eq!(client("10.0.0.1", &["[2001:db8::1]:443"], &trusted), "2001:db8::1");
    }

    #[test]
    fn an_entry_that_is_not_an_address_stops_at_the_last_trusted_hop() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(client("10.0.0.1", &["203.0.113.5, unknown, 10.2.2.2"], &trusted), "10.2.2.2");
        assert_eq!(client("10.0.0.1", &["203.0.113.5, garbage"], &trusted), "10.0.0.1");
        assert_eq!(client("10.0.0.1", &["203.0.113.5, 10.0.0.256"], &trusted), "10.0.0.1");
        // Garbage left of the client is never read.
        assert_eq!(client("10.0.0.1", &["garbage, 198.51.100.1"], &trusted), "198.51.100.1");
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_bytes(b"203.0.113.5, \xff\xfe").unwrap());
        let peer = "10.0.0.1".parse().unwrap();
        assert_eq!(client_address(peer, &headers, &ranges(&trusted)).to_string(), "10.0.0.1");
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_ranges() {
        assert_eq!(client("::ffff:10.0.0.1", &["203.0.113.1"], &["10.0.0.0/8"]), "203.0.113.1");
        assert_eq!(client("::ffff:198.51.100.2", &["203.0.113.1"], &["10.0.0.0/8"]), "198.51.100.2");
        assert_eq!(client("10.0.0.1", &["::ffff:10.0.0.2, ::ffff:198.51.100.3"], &["10.0.0.0/8"]), "198.51.100.3");
        assert_eq!(client("10.0.0.1", &["198.51.100.3, ::ffff:10.0.0.2"], &["10.0.0.0/8"]), "198.51.100.3");
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let a = bucket("2001:db8:1:2:aaaa::1".parse().unwrap());
        assert_eq!(a, bucket("2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap()));
        assert_eq!(a.to_string(), "2001:db8:1:2::");
        assert_ne!(a, bucket("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(bucket("198.51.100.7".parse().unwrap()).to_string(), "198.51.100.7");
    }
}

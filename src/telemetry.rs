//! How the service reports: `tracing` set up for operators (JSON in production), reference ids, escaping of
//! untrusted text before it reaches a log line, and the metrics behind `/metrics`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, prometheus_text};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use time::OffsetDateTime;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

mod json_line;
mod log_lines;

pub use log_lines::flush as flush_log_lines;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl LogFormat {
    /// JSON in production mode or when `CALLBACK_GATE_LOG_FORMAT=json`; text otherwise.
    pub fn choose(production: bool) -> Self {
        match std::env::var("CALLBACK_GATE_LOG_FORMAT").as_deref() {
            Ok("json") => Self::Json,
            Ok("text") => Self::Text,
            _ if production => Self::Json,
            _ => Self::Text,
        }
    }
}

/// Installs the global subscriber, writing to stderr (in batches on the runtime's workers, whose park and stop hooks
/// call [`flush_log_lines`]). `RUST_LOG` refines the default `info` level.
pub fn init(format: LogFormat) {
    init_with_writer(format, log_lines::Stderr);
}

/// Installs the global subscriber with another writer (tests capture the log this way).
pub fn init_with_writer<W>(format: LogFormat, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,hyper=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_span_events(FmtSpan::NONE);
    // A second initialisation (tests build several apps in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.event_format(json_line::JsonLine).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

/// The first `max` characters of `text`, and how many bytes were left out.
pub fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}… [{} more bytes]", &text[..cut], text.len() - cut),
        None => text.to_owned(),
    }
}

/// Crockford base32: no I, L, O or U, so a reference read over the phone is not misheard.
const REFERENCE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A fresh reference id, `CG-XXXX-XXXX` (40 random bits).
///
/// A reference is not a secret (it is shown on the page and looked up only with an API key), so its bits come from
/// the thread's generator, a CSPRNG seeded from the operating system, rather than from a system call per request.
pub fn new_reference() -> String {
    use rand::Rng as _;
    let mut bits: u64 = rand::rng().random::<u64>() & ((1 << 40) - 1);
    let mut reference = String::with_capacity(12);
    reference.push_str("CG-");
    for at in 0..8 {
        if at == 4 {
            reference.push('-');
        }
        reference.push(char::from(REFERENCE_ALPHABET[((bits >> 35) & 31) as usize]));
        bits <<= 5;
    }
    reference
}

/// Whether a string has the shape of a reference id.
pub fn is_reference(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() == 12
        && value.starts_with("CG-")
        && bytes[7] == b'-'
        && bytes.iter().enumerate().all(|(i, b)| i < 3 || i == 7 || REFERENCE_ALPHABET.contains(b))
}

/// Escapes characters that could forge or hide log lines: C0 and C1 controls, DEL, line and paragraph
/// separators and bidirectional overrides, whatever the log format.
pub fn escape(value: &str) -> String {
    // Almost every value has nothing to escape: copy it whole rather than character by character.
    if is_plain_ascii(value) || !value.chars().any(is_hidden_char) {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if is_hidden_char(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// Printable ASCII only, so nothing [`is_hidden_char`]: checked without an early return, many bytes at once, which
/// is cheaper than decoding each character for the values that are.
fn is_plain_ascii(value: &str) -> bool {
    !value.bytes().fold(false, |other, byte| other | !(0x20..0x7f).contains(&byte))
}

/// Characters that break, hide or reorder text when shown: C0 and C1 controls, DEL, the line and paragraph
/// separators, and Unicode's bidirectional controls (Bidi_Control).
pub fn is_hidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// [`escape`], cut to a length a log line can carry.
pub fn escape_bounded(value: &str) -> String {
    escape(&excerpt(value, 1024))
}

pub fn millis_since(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

/// Numbers zero-padded to their widths, each followed by its separator: the digits of a date and time, written into
/// `buffer` without `format!`, whose width handling cost several times as much on every log line and failure page.
/// The widths must fit the buffer; what does not fit is left out.
pub fn padded_digits(fields: &[(u32, u32, u8)], buffer: &mut [u8; 32]) -> usize {
    let mut at = 0;
    for &(value, width, after) in fields {
        for place in (0..width).rev() {
            let Some(slot) = buffer.get_mut(at) else { return at };
            *slot = b'0' + (value / 10u32.pow(place) % 10) as u8;
            at += 1;
        }
        let Some(slot) = buffer.get_mut(at) else { return at };
        *slot = after;
        at += 1;
    }
    at
}

pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// Upper bounds, in seconds, of the token request histogram: a token endpoint answers in tens of milliseconds
/// to a few seconds, and `token_timeout_seconds` stops a request at 20 s at most.
const TOKEN_REQUEST_BUCKETS: [f64; 11] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 20.0];
/// Upper bounds, in seconds, of the store operation histogram: most operations take well under a millisecond on
/// SQLite; the upper buckets show a database waiting on a lock or a network.
const STORE_OPERATION_BUCKETS: [f64; 12] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Flows ended, by outcome code and connection.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// `connected`, `pending_verification`, or a failure code from the outcome catalog.
    outcome: &'static str,
    /// A configured connection's name; empty when the request named none, or one that is not configured (the
    /// label's values stay bounded by the config whatever a client sends).
    connection: String,
}

/// One webhook delivery attempt.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    /// `delivered`, `retried` (not delivered, tried again later) or `failed` (given up).
    result: &'static str,
}

/// One call through the proxy.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyLabels {
    /// A configured connection's name.
    connection: String,
    /// The provider's status class (`2xx`, `3xx`, `4xx`, `5xx`), `401` and `403` on their own, or `unanswered`.
    status: &'static str,
}

/// One token endpoint request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenRequestLabels {
    /// The connection's provider: a preset name, `oauth2` or `oidc`.
    provider: &'static str,
    connection: String,
    /// `authorization_code` or `refresh_token`.
    grant: &'static str,
    /// `ok`, or the cause of a failure (`invalid_grant`, `timeout`, `provider_unavailable`, ...).
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    /// The store method called (`find_flow`, `complete_flow`, `account`, ...).
    operation: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The metrics exported at `/metrics` in the Prometheus text format, each app with its own registry (tests run
/// several apps in one process).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: HashSet<String>,
    outcomes: Family<OutcomeLabels, Counter>,
    token_requests: HistogramFamily<TokenRequestLabels>,
    store_operations: HistogramFamily<StoreLabels>,
    proxy_calls: Family<ProxyLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
    outbox_depth: Gauge,
    open_connections: Gauge,
}

impl Metrics {
    /// Metrics for a service with these configured connections; `dropped_events` reads the number of outcome
    /// events dropped because their write queue was full.
    pub fn new(
        connections: impl IntoIterator<Item = String>,
        dropped_events: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        let mut registry = Registry::default();
        let outcomes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "callback_gate_flow_outcomes",
            "Flows ended, by outcome code (\"connected\" for success) and connection",
            outcomes.clone(),
        );
        let token_requests: HistogramFamily<TokenRequestLabels> =
            Family::new_with_constructor(|| Histogram::new(TOKEN_REQUEST_BUCKETS));
        registry.register_with_unit(
            "callback_gate_token_request_duration",
            "Time the provider's token endpoint took to answer a code exchange or a refresh, by provider",
            Unit::Seconds,
            token_requests.clone(),
        );
        let store_operations: HistogramFamily<StoreLabels> =
            Family::new_with_constructor(|| Histogram::new(STORE_OPERATION_BUCKETS));
        registry.register_with_unit(
            "callback_gate_store_operation_duration",
            "Time one store operation took, by operation",
            Unit::Seconds,
            store_operations.clone(),
        );
        let proxy_calls = Family::<ProxyLabels, Counter>::default();
        registry.register(
            "callback_gate_proxy_calls",
            "Calls through /v1/proxy, by connection and the provider's status (its class; 401 and 403 on their own)",
            proxy_calls.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "callback_gate_webhook_deliveries",
            "Webhook delivery attempts, by result: delivered, retried (not delivered, tried again later) or failed",
            deliveries.clone(),
        );
        let outbox_depth = Gauge::default();
        registry.register(
            "callback_gate_webhook_outbox_depth",
            "Webhook events waiting for delivery, as this instance last counted them",
            outbox_depth.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "callback_gate_open_connections",
            "Client connections the service holds open now",
            open_connections.clone(),
        );
        registry.register_collector(Box::new(DroppedEvents(Box::new(dropped_events))));
        Self {
            registry,
            connections: connections.into_iter().collect(),
            outcomes,
            token_requests,
            store_operations,
            proxy_calls,
            deliveries,
            outbox_depth,
            open_connections,
        }
    }

    /// Counts a flow's ending. A connection that is not configured is counted under the empty name.
    pub fn record_outcome(&self, outcome: &'static str, connection: Option<&str>) {
        let connection = connection.filter(|name| self.connections.contains(*name)).unwrap_or_default().to_owned();
        self.outcomes.get_or_create(&OutcomeLabels { outcome, connection }).inc();
    }

    /// Records how long a token endpoint took: `result` is `ok` or the failure's cause.
    pub fn observe_token_request(
        &self,
        provider: &'static str,
        connection: &str,
        grant: &'static str,
        result: &'static str,
        elapsed: Duration,
    ) {
        let labels = TokenRequestLabels { provider, connection: connection.to_owned(), grant, result };
        self.token_requests.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// Records one store operation's duration. `operation` names the store method; it must be a fixed string,
    /// never anything a request carries.
    pub fn observe_store(&self, operation: &'static str, elapsed: Duration) {
        self.store_operations.get_or_create(&StoreLabels { operation }).observe(elapsed.as_secs_f64());
    }

    /// Counts one call through the proxy, by the provider's status (none when it did not answer).
    pub fn record_proxy_call(&self, connection: &str, provider_status: Option<u16>) {
        let status = match provider_status {
            None => "unanswered",
            Some(401) => "401",
            Some(403) => "403",
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(_) => "5xx",
        };
        let connection = if self.connections.contains(connection) { connection.to_owned() } else { String::new() };
        self.proxy_calls.get_or_create(&ProxyLabels { connection, status }).inc();
    }

    /// Counts one webhook delivery attempt by its result.
    pub fn record_delivery(&self, result: &'static str) {
        self.deliveries.get_or_create(&DeliveryLabels { result }).inc();
    }

    /// Sets how many webhook events wait for delivery.
    pub fn set_outbox_depth(&self, depth: i64) {
        self.outbox_depth.set(depth);
    }

    /// Counts one open client connection until the returned guard is dropped: the accept loop holds one for each
    /// connection it serves.
    pub fn open_connection(&self) -> OpenConnection {
        self.open_connections.inc();
        OpenConnection(self.open_connections.clone())
    }

    /// Every metric, in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would leave a partial page, which is still valid.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const METRICS_CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// One open connection, counted in `callback_gate_open_connections` while it lives.
#[derive(Debug)]
#[must_use = "the connection is counted only while the guard is held"]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `callback_gate_outcome_events_dropped_total`, read from the event queue at each scrape.
struct DroppedEvents(Box<dyn Fn() -> u64 + Send + Sync>);

impl std::fmt::Debug for DroppedEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DroppedEvents")
    }
}

impl Collector for DroppedEvents {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new((self.0)());
        let metric = encoder.encode_descriptor(
            "callback_gate_outcome_events_dropped",
            "Outcome events dropped because the write queue was full.",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_character_that_hides_text_is_escaped_and_only_those() {
        let samples = (0u32..0x3000).filter_map(char::from_u32).chain(['\u{feff}', '日', '\u{10ffff}']);
        for c in samples {
            let value = format!("a{c}b");
            let escaped = escape(&value);
            if is_hidden_char(c) {
                assert_eq!(escaped, format!("a\\u{{{:x}}}b", c as u32), "{:x}", c as u32);
            } else {
                assert_eq!(escaped, value, "{:x}", c as u32);
            }
        }
    }

    #[test]
    fn references_have_their_shape() {
        for _ in 0..100 {
            let reference = new_reference();
            assert!(is_reference(&reference), "{reference}");
        }
        assert!(!is_reference("CG-0000-000I"));
        assert!(!is_reference("cg-0000-0000"));
    }

    #[test]
    fn an_open_connection_is_counted_while_its_guard_lives() {
        let metrics = Metrics::new(["mock".to_owned()], || 7);
        let first = metrics.open_connection();
        let second = metrics.open_connection();
        assert!(metrics.render().contains("\ncallback_gate_open_connections 2\n"), "{}", metrics.render());
        drop(first);
        assert!(metrics.render().contains("\ncallback_gate_open_connections 1\n"));
        drop(second);
        assert!(metrics.render().contains("\ncallback_gate_open_connections 0\n"));
        assert!(metrics.render().contains("\ncallback_gate_outcome_events_dropped_total 7\n"));
    }

    #[test]
    fn store_operations_are_timed_by_name() {
        let metrics = Metrics::new([], || 0);
        metrics.observe_store("find_flow", Duration::from_millis(3));
        let page = metrics.render();
        assert!(
            page.contains("callback_gate_store_operation_duration_seconds_count{operation=\"find_flow\"} 1\n"),
            "{page}"
        );
        assert!(
            page.contains(
                "callback_gate_store_operation_duration_seconds_bucket{le=\"0.005\",operation=\"find_flow\"} 1\n"
            ) || page.contains(
                "callback_gate_store_operation_duration_seconds_bucket{operation=\"find_flow\",le=\"0.005\"} 1\n"
            ),
            "{page}"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("a\r\nb\u{1b}[31m\u{2028}\u{202e}"), "a\\u{d}\\u{a}b\\u{1b}[31m\\u{2028}\\u{202e}");
        assert_eq!(escape("plain é"), "plain é");
    }
}

//! How the service reports: `tracing` set up for operators (JSON in production), reference ids, escaping of
//! untrusted text before it reaches a log line, and the counters behind `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use time::OffsetDateTime;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::Mode;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl LogFormat {
    /// JSON in production mode or when `CALLBACK_GATE_LOG_FORMAT=json`; text otherwise.
    pub fn choose(mode: Mode) -> Self {
        match std::env::var("CALLBACK_GATE_LOG_FORMAT").as_deref() {
            Ok("json") => Self::Json,
            Ok("text") => Self::Text,
            _ if mode == Mode::Production => Self::Json,
            _ => Self::Text,
        }
    }
}

/// Installs the global subscriber, writing to stderr. `RUST_LOG` refines the default `info` level.
pub fn init(format: LogFormat) {
    init_with_writer(format, std::io::stderr);
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
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

/// Crockford base32: no I, L, O or U, so a reference read over the phone is not misheard.
const REFERENCE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A fresh reference id, `CG-XXXX-XXXX` (40 random bits).
pub fn new_reference() -> String {
    let mut bytes = [0u8; 5];
    getrandom::fill(&mut bytes).unwrap_or_else(|err| panic!("the operating system's random source failed: {err}"));
    let mut bits = bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let mut chars = [0u8; 8];
    for slot in chars.iter_mut().rev() {
        *slot = REFERENCE_ALPHABET[(bits & 31) as usize];
        bits >>= 5;
    }
    let text = String::from_utf8_lossy(&chars).into_owned();
    format!("CG-{}-{}", &text[..4], &text[4..])
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
    escape(&crate::provider::exchange::excerpt(value, 1024))
}

pub fn millis_since(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// Counters exported at `/metrics` in the Prometheus text format.
#[derive(Debug, Default)]
pub struct Metrics {
    outcomes: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub fn record_outcome(&self, code: &'static str) {
        if let Ok(mut outcomes) = self.outcomes.lock() {
            *outcomes.entry(code).or_default() += 1;
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP callback_gate_flow_outcomes_total Flows ended, by outcome code (\"connected\" for success).\n\
             # TYPE callback_gate_flow_outcomes_total counter\n",
        );
        if let Ok(outcomes) = self.outcomes.lock() {
            for (code, count) in outcomes.iter() {
                let _ = writeln!(out, "callback_gate_flow_outcomes_total{{outcome=\"{code}\"}} {count}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn control_characters_are_escaped() {
        assert_eq!(escape("a\r\nb\u{1b}[31m\u{2028}\u{202e}"), "a\\u{d}\\u{a}b\\u{1b}[31m\\u{2028}\\u{202e}");
        assert_eq!(escape("plain é"), "plain é");
    }
}

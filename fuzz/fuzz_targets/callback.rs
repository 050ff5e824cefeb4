//! Fuzzes the callback's query parsing and the outcome mapping behind it.
//!
//! Arbitrary bytes, decoded lossily, go to `CallbackQuery::parse`. Its answer is checked against a small independent
//! model of the strict grammar (each known key at most once, strict percent-encoding, UTF-8), so "repeated keys are
//! always rejected" and "nothing is decoded leniently" are checked on every input, not only "no panic". A parsed
//! query with an `error` then goes through the outcome mapping and the log escaping, whose invariants are asserted.

#![no_main]

use callback_gate::flow::query::{interpretable, is_rfc6749_text};
use callback_gate::flow::{CallbackQuery, QueryError};
use callback_gate::outcome::{self, CATALOG, Failure};
use callback_gate::provider::exchange::ExchangeError;
use callback_gate::telemetry;
use libfuzzer_sys::fuzz_target;

const KNOWN: [&str; 6] = ["state", "code", "error", "error_description", "error_uri", "iss"];

/// What the model expects: the values in `KNOWN` order, or the error.
type Expected = Result<[Option<String>; 6], QueryError>;

/// Strict `application/x-www-form-urlencoded` decoding, written independently of the service's: `+` is a space,
/// `%` must start two hex digits, and the bytes must be UTF-8.
fn strict_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let text = std::str::from_utf8(hex).ok()?;
                if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(text, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn model(raw: &str) -> Expected {
    let mut values: [Option<String>; 6] = Default::default();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = strict_decode(key).ok_or(QueryError::Encoding)?;
        let Some(slot) = KNOWN.iter().position(|k| *k == key) else { continue };
        let value = strict_decode(value).ok_or(QueryError::Encoding)?;
        if values[slot].replace(value).is_some() {
            return Err(QueryError::Repeated(KNOWN[slot]));
        }
    }
    Ok(values)
}

/// Characters that could forge or hide a log line.
fn forges_logs(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn check_escaped(value: &str) {
    let escaped = telemetry::escape(value);
    assert!(!escaped.chars().any(forges_logs), "escape left a control character in {escaped:?}");
    if !value.chars().any(forges_logs) {
        assert_eq!(escaped, value, "escape changed text that needed no escaping");
    }
    let bounded = telemetry::escape_bounded(value);
    assert!(!bounded.chars().any(forges_logs), "escape_bounded left a control character in {bounded:?}");
}

fn check_row(failure: &Failure) {
    assert!(CATALOG.iter().any(|e| std::ptr::eq(e, failure.entry)), "{failure} is not a catalog row");
    let entry = outcome::entry(failure.code(), failure.cause());
    assert!(entry.code == failure.code() && entry.cause == failure.cause(), "{failure} has no row of its own");
    assert!((400..600).contains(&entry.status), "{failure}: status {}", entry.status);
}

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let parsed = CallbackQuery::parse(Some(&raw));
    let expected = model(&raw);
    let query = match (parsed, expected) {
        (Ok(query), Ok(values)) => {
            let got = [
                query.state.as_ref().map(|s| s.expose().to_owned()),
                query.code.as_ref().map(|s| s.expose().to_owned()),
                query.error.clone(),
                query.error_description.clone(),
                query.error_uri.clone(),
                query.iss.clone(),
            ];
            assert_eq!(got, values, "parsed values differ from the strict model for {raw:?}");
            query
        }
        (Err(got), Err(want)) => {
            assert_eq!(got, want, "wrong refusal for {raw:?}");
            return;
        }
        (got, want) => panic!("parser and strict model disagree for {raw:?}: {got:?} vs {want:?}"),
    };

    let Some(error) = query.error.as_deref() else { return };
    let description = query.error_description.as_deref();
    let uri = query.error_uri.as_deref();

    if let Some(description) = description {
        let prefix = interpretable(description);
        assert!(description.starts_with(prefix));
        assert!(prefix.chars().all(is_rfc6749_text));
        if let Some(next) = description[prefix.len()..].chars().next() {
            assert!(!is_rfc6749_text(next), "interpretable stopped early at {next:?}");
        }
    }

    let code = outcome::recognize_callback_error(error, description.map(interpretable));
    assert_eq!(outcome::entry(code, None).code, code, "{code} has no catalog row");
    let failure = Failure::from_callback_error(error, description, uri);
    assert_eq!(failure.code(), code);
    check_row(&failure);
    assert_eq!(failure.error.as_deref(), Some(error));
    assert_eq!(failure.error_description.as_deref(), description);
    assert_eq!(failure.error_uri.as_deref(), uri);

    // The same text at the token endpoint: every answer names a row and a cause.
    let status = 200 + u16::from(data.first().copied().unwrap_or(0)) % 4 * 100;
    let rejected = ExchangeError::Rejected {
        status,
        error: error.to_owned(),
        error_description: description.map(str::to_owned),
        error_uri: uri.map(str::to_owned),
        body: String::new(),
    };
    let cause = outcome::exchange_cause(&rejected);
    let exchanged = Failure::from_exchange(&rejected);
    check_row(&exchanged);
    assert_eq!(outcome::entry("failed_to_exchange_token", Some(cause)).cause, Some(cause), "cause {cause} has no row");

    for value in
        [Some(error), description, uri, query.iss.as_deref(), Some(failure.detail.as_str())].into_iter().flatten()
    {
        check_escaped(value);
    }
});

//! Property tests of the callback's strict query parser and of everything that turns provider text into an outcome,
//! a log line or a stored excerpt: the parser never panics, refuses every repeated parameter and every invalid
//! encoding, round-trips valid encodings; outcome mapping is total; escaping and redaction hold for any input; and a
//! production page never echoes what the provider sent.
//!
//! The cargo-fuzz target in `fuzz/` explores the same parser and mapping with coverage guidance; these properties
//! run on every `cargo test`.

#[path = "api/helpers.rs"]
mod helpers;

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use callback_gate::config;
use callback_gate::flow::query::{interpretable, is_rfc6749_text};
use callback_gate::flow::{CallbackQuery, QueryError};
use callback_gate::outcome::{self, CATALOG, Failure};
use callback_gate::provider::exchange::{BODY_EXCERPT_CHARS, ExchangeError, parse_token_response, redact_body};
use callback_gate::server::Application;
use callback_gate::telemetry;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};

/// The parameters the parser reads; each may appear once.
const KNOWN: [&str; 6] = ["state", "code", "error", "error_description", "error_uri", "iss"];

/// `error` values with a row or a recognition of their own.
const NAMED_ERRORS: [&str; 16] = [
    "access_denied",
    "invalid_request",
    "unauthorized_client",
    "unsupported_response_type",
    "invalid_scope",
    "server_error",
    "temporarily_unavailable",
    "login_required",
    "consent_required",
    "interaction_required",
    "admin_policy_enforced",
    "org_internal",
    "app_approval_request_pending",
    "invalid_team_for_non_distributed_app",
    "redirect_uri_mismatch",
    "application_suspended",
];

/// Fragments of `error_description` that providers use to say something specific.
const DESCRIPTION_SIGNALS: [&str; 8] = [
    "AADSTS65001",
    "aadsts90094",
    "AADSTS50020",
    "AADSTS50011",
    "AADSTS700016",
    "AADSTS7000215",
    "has not completed the Google verification process",
    "App Is Currently Being Tested",
];

/// Characters that have broken parsers, pages and log lines before.
const NASTY: [char; 34] = [
    '&', '=', '%', '+', '#', '?', ';', '"', '\'', '\\', '<', '>', '\0', '\t', '\r', '\n', '\u{1b}', '\u{7f}', '\u{85}',
    '\u{9b}', '\u{2028}', '\u{2029}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}',
    '\u{061c}', '\u{feff}', 'é', '漢', '😀', '\u{fffd}',
];

fn config(cases: u32) -> Config {
    Config { cases, ..Config::default() }
}

fn nasty_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        3 => proptest::char::range(' ', '~'),
        2 => select(NASTY.to_vec()),
        1 => proptest::char::range('\0', '\u{a0}'),
    ]
}

/// Text of up to `max` characters, weighted towards what breaks things.
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(nasty_char(), 0..=max).prop_map(String::from_iter)
}

/// Text made only of RFC 6749's `error` characters.
fn rfc_text(max: usize) -> impl Strategy<Value = String> {
    let allowed: Vec<char> = (' '..='~').filter(|c| is_rfc6749_text(*c)).collect();
    proptest::collection::vec(select(allowed), 0..=max).prop_map(String::from_iter)
}

fn form(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Every byte as `%XX`.
fn percent_all(value: &str, upper: bool) -> String {
    value.bytes().map(|b| if upper { format!("%{b:02X}") } else { format!("%{b:02x}") }).collect()
}

/// A valid encoding of `value`, chosen by `mode`.
fn encode(value: &str, mode: u8) -> String {
    match mode % 4 {
        0 => form(value),
        1 => percent_all(value, true),
        2 => percent_all(value, false),
        // Spaces as %20 rather than `+`, as RFC 3986 encoders do.
        _ => form(value).replace('+', "%20"),
    }
}

/// A key spelled with some of its characters percent-encoded (bit `i` of `mask` encodes character `i`).
fn spell_key(key: &str, mask: u64, upper: bool) -> String {
    key.chars()
        .enumerate()
        .map(
            |(i, c)| {
                if (mask >> (i % 64)) & 1 == 1 { percent_all(c.encode_utf8(&mut [0; 4]), upper) } else { c.to_string() }
            },
        )
        .collect()
}

/// How a known key may be written: `key=value`, `key=` or a bare `key` (an empty value).
#[derive(Debug, Clone)]
struct Spelling {
    mask: u64,
    upper: bool,
    shape: u8,
    mode: u8,
}

impl Spelling {
    fn write(&self, key: &str, value: &str) -> String {
        let key = spell_key(key, self.mask, self.upper);
        match self.shape % 4 {
            0 => format!("{key}="),
            1 => key,
            _ => format!("{key}={}", encode(value, self.mode)),
        }
    }
}

fn spelling() -> impl Strategy<Value = Spelling> {
    (prop_oneof![Just(0u64), any::<u64>()], any::<bool>(), any::<u8>(), any::<u8>())
        .prop_map(|(mask, upper, shape, mode)| Spelling { mask, upper, shape, mode })
}

/// A parameter the parser ignores: a validly encoded unknown key, and a value that is never decoded (so anything
/// without `&`).
fn unknown_pair() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        "[a-zA-Z0-9_.~-]{1,16}",
        (text(12), any::<u8>()).prop_map(|(k, mode)| encode(&k, mode)),
        // Near misses of the known keys.
        select(vec!["State", "STATE", "state ", " state", "code_", "errors", "error-uri", "iss2", "state[]"])
            .prop_map(form),
    ];
    let value = prop_oneof![
        text(24).prop_map(|v| v.replace('&', "")),
        Just("%zz%".to_owned()),
        (text(24), any::<u8>()).prop_map(|(v, mode)| encode(&v, mode)),
    ];
    (key, value)
        .prop_filter("the key must stay unknown", |(key, _)| {
            let decoded = percent_encoding::percent_decode_str(&key.replace('+', " ")).decode_utf8_lossy().into_owned();
            !KNOWN.contains(&decoded.as_str())
        })
        .prop_map(|(key, value)| format!("{key}={value}"))
}

/// A `&`/`=` soup: fragments that look like queries, joined without any care.
fn soup() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        select(vec![
            "&",
            "=",
            "&&",
            "==",
            "%",
            "%2",
            "%25",
            "%26",
            "%3D",
            "%3d",
            "+",
            "%zz",
            "%ff",
            "%c3%28",
            "%e2%82",
            "%ed%a0%80",
            "%00",
            "state",
            "code",
            "error",
            "error_description",
            "error_uri",
            "iss",
            "st%61te",
            "%63ode",
        ])
        .prop_map(str::to_owned),
        text(8),
    ];
    proptest::collection::vec(fragment, 0..40).prop_map(|parts| parts.concat())
}

/// Arbitrary bytes as percent-encoded text, some escapes upper case, some lower, some bytes literal where printable.
fn percent_bytes() -> impl Strategy<Value = String> {
    proptest::collection::vec((any::<u8>(), 0u8..3), 0..256).prop_map(|bytes| {
        bytes
            .into_iter()
            .map(|(b, how)| match how {
                0 if b.is_ascii_graphic() => (b as char).to_string(),
                1 => format!("%{b:02X}"),
                _ => format!("%{b:02x}"),
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(config(512))]

    /// The parser returns for anything: random text, `&`/`=` soup, encoded bytes, and every known key over them.
    #[test]
    fn parse_never_panics(raw in prop_oneof![text(300), soup(), percent_bytes()]) {
        let _ = CallbackQuery::parse(Some(&raw));
        for key in KNOWN {
            let _ = CallbackQuery::parse(Some(&format!("{key}={raw}")));
            let _ = CallbackQuery::parse(Some(&format!("{raw}&{key}=1&{raw}")));
        }
    }

    /// Whatever parses, parses to what a strict decoder says: no field ever holds a replacement character that was
    /// not sent, and the secrets never show in Debug output.
    #[test]
    fn parsed_fields_are_exact_and_secrets_stay_hidden(
        state in "[A-Za-z0-9]{12,24}",
        code in "[A-Za-z0-9]{12,24}",
        noise in proptest::collection::vec(unknown_pair(), 0..6),
    ) {
        let mut parts = noise;
        parts.push(format!("state={state}"));
        parts.push(format!("code={code}"));
        let query = CallbackQuery::parse(Some(&parts.join("&"))).expect("a valid query parses");
        prop_assert_eq!(query.state.as_ref().map(|s| s.expose()), Some(state.as_str()));
        prop_assert_eq!(query.code.as_ref().map(|s| s.expose()), Some(code.as_str()));
        let debug = format!("{query:?}");
        prop_assert!(!debug.contains(&state) && !debug.contains(&code), "a secret in {debug}");
    }
}

proptest! {
    #![proptest_config(config(32))]

    /// Huge values and huge numbers of parameters are handled without panicking or quadratic blow-up.
    #[test]
    fn parse_survives_huge_input(
        key in select(KNOWN.to_vec()),
        fill in select(vec!['A', '%', '&', '=', '+', 'é']),
        len in 1usize..200_000,
    ) {
        let huge: String = std::iter::repeat_n(fill, len).collect();
        let _ = CallbackQuery::parse(Some(&huge));
        let _ = CallbackQuery::parse(Some(&format!("{key}={huge}")));
        let encoded = CallbackQuery::parse(Some(&format!("{key}={}", form(&huge))));
        prop_assert!(encoded.is_ok(), "a valid encoding of a huge value parses");
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// A known key appearing two or more times, anywhere, spelled any valid way, with any values, is refused as
    /// repeated. Other known keys (once each) and ignored parameters around it change nothing.
    #[test]
    fn repeated_keys_are_always_rejected(
        key in select(KNOWN.to_vec()),
        repeats in proptest::collection::vec((spelling(), text(40)), 2..=4),
        others in proptest::collection::vec((any::<bool>(), spelling(), text(20)), KNOWN.len()),
        noise in proptest::collection::vec(unknown_pair(), 0..8),
        empties in 0usize..4,
        order in any::<u64>(),
    ) {
        let mut parts: Vec<String> = repeats.iter().map(|(spelling, value)| spelling.write(key, value)).collect();
        for (other, (present, spelling, value)) in KNOWN.iter().zip(&others) {
            if *other != key && *present {
                parts.push(spelling.write(other, value));
            }
        }
        parts.extend(noise);
        parts.extend(std::iter::repeat_n(String::new(), empties));
        shuffle(&mut parts, order);
        let raw = parts.join("&");
        prop_assert_eq!(CallbackQuery::parse(Some(&raw)).err(), Some(QueryError::Repeated(key)), "query {:?}", raw);
    }

    /// Invalid percent-encoding or invalid UTF-8 anywhere in a known key's value is refused, never replaced.
    #[test]
    fn invalid_encoding_in_a_known_value_is_rejected(
        key in select(KNOWN.to_vec()),
        spelling in spelling(),
        prefix in text(20),
        suffix in text(20),
        bad in bad_escape(),
        others in proptest::collection::vec((any::<bool>(), spelling(), text(20)), KNOWN.len()),
        noise in proptest::collection::vec(unknown_pair(), 0..6),
        order in any::<u64>(),
    ) {
        let (bad, at_end) = bad;
        let suffix = if at_end { String::new() } else { encode(&suffix, spelling.mode) };
        let value = format!("{}{bad}{suffix}", encode(&prefix, spelling.mode));
        let mut parts = vec![format!("{}={value}", spell_key(key, spelling.mask, spelling.upper))];
        for (other, (present, spelling, value)) in KNOWN.iter().zip(&others) {
            if *other != key && *present {
                parts.push(spelling.write(other, value));
            }
        }
        parts.extend(noise);
        shuffle(&mut parts, order);
        let raw = parts.join("&");
        prop_assert_eq!(CallbackQuery::parse(Some(&raw)).err(), Some(QueryError::Encoding), "query {:?}", raw);
    }

    /// A key that is itself badly encoded is refused, whether or not it would have been known.
    #[test]
    fn invalid_encoding_in_a_key_is_rejected(key in text(12), bad in bad_escape(), value in text(12)) {
        let raw = format!("{}{}={}", form(&key), bad.0, form(&value));
        prop_assert_eq!(CallbackQuery::parse(Some(&raw)).err(), Some(QueryError::Encoding), "query {:?}", raw);
    }

    /// Any UTF-8 text, validly encoded, comes back exactly.
    #[test]
    fn valid_encodings_round_trip(
        key in select(KNOWN.to_vec()),
        value in text(200),
        mode in any::<u8>(),
        noise in proptest::collection::vec(unknown_pair(), 0..4),
    ) {
        let mut parts = noise;
        parts.push(format!("{key}={}", encode(&value, mode)));
        let query = CallbackQuery::parse(Some(&parts.join("&"))).expect("a valid encoding parses");
        let parsed = match key {
            "state" => query.state.as_ref().map(|s| s.expose().to_owned()),
            "code" => query.code.as_ref().map(|s| s.expose().to_owned()),
            "error" => query.error,
            "error_description" => query.error_description,
            "error_uri" => query.error_uri,
            _ => query.iss,
        };
        prop_assert_eq!(parsed, Some(value));
    }
}

/// A malformed escape, and whether it only counts as malformed at the end of a value (`%`, `%4`).
fn bad_escape() -> impl Strategy<Value = (String, bool)> {
    let hex = select("0123456789abcdefABCDEF".chars().collect::<Vec<_>>());
    let not_hex = select(vec!['g', 'z', 'G', 'Z', '%', '+', '=', ' ', '_', '-', '.', '~', 'é', '\0']);
    prop_oneof![
        not_hex.clone().prop_map(|c| (format!("%{c}"), false)),
        (hex.clone(), not_hex).prop_map(|(h, c)| (format!("%{h}{c}"), false)),
        Just(("%".to_owned(), true)),
        hex.prop_map(|h| (format!("%{h}"), true)),
        // Valid escapes, invalid UTF-8: a lone continuation byte, bytes never in UTF-8, a truncated sequence, a
        // surrogate, an overlong form.
        select(vec![
            "%80",
            "%bf",
            "%ff",
            "%FE",
            "%c3%28",
            "%e2%82",
            "%f0%9f%98",
            "%ed%a0%80",
            "%c0%af",
            "%f8%88%80%80%80"
        ])
        .prop_map(|s| (s.to_owned(), false)),
    ]
}

/// A deterministic Fisher-Yates shuffle driven by `seed`, so the order shrinks with the rest of the case.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let j = (seed >> 33) as usize % (i + 1);
        items.swap(i, j);
    }
}

/// An `error` value: a named one, an RFC 6749 one, or anything.
fn error_value() -> impl Strategy<Value = String> {
    prop_oneof![select(NAMED_ERRORS.to_vec()).prop_map(str::to_owned), "[a-z_]{1,30}", rfc_text(40), text(60),]
}

/// An `error_description`: anything, or text around a provider signal, possibly behind a character RFC 6749 does
/// not allow.
fn description_value() -> impl Strategy<Value = String> {
    prop_oneof![
        text(200),
        (rfc_text(30), select(DESCRIPTION_SIGNALS.to_vec()), text(60)).prop_map(|(a, s, b)| format!("{a}{s}{b}")),
        (text(30), select(DESCRIPTION_SIGNALS.to_vec()), text(60)).prop_map(|(a, s, b)| format!("{a}{s}{b}")),
    ]
}

fn has_row(code: &str, cause: Option<&str>) -> bool {
    CATALOG.iter().any(|e| e.code == code && e.cause == cause)
}

proptest! {
    #![proptest_config(config(512))]

    /// Every callback error maps to a code with a row of its own (never silently to the internal_error fallback),
    /// the same way every time, and only the interpretable part of the description is interpreted.
    #[test]
    fn callback_error_mapping_is_total_and_stable(
        error in error_value(),
        description in proptest::option::of(description_value()),
        uri in proptest::option::of(text(60)),
    ) {
        let interpreted = description.as_deref().map(interpretable);
        let code = outcome::recognize_callback_error(&error, interpreted);
        prop_assert!(has_row(code, None), "{code} has no catalog row");
        prop_assert_eq!(outcome::entry(code, None).code, code);
        prop_assert_eq!(outcome::recognize_callback_error(&error, interpreted), code, "stable");

        let failure = Failure::from_callback_error(&error, description.as_deref(), uri.as_deref());
        prop_assert_eq!(failure.code(), code);
        prop_assert!(CATALOG.iter().any(|e| std::ptr::eq(e, failure.entry)), "the entry is a catalog row");
        prop_assert_eq!(failure.error.as_deref(), Some(error.as_str()), "the raw error is kept as evidence");
        prop_assert_eq!(failure.error_description.as_deref(), description.as_deref());
        prop_assert_eq!(failure.error_uri.as_deref(), uri.as_deref());

        // What follows the first character outside RFC 6749's set is evidence only: it cannot change the code.
        if let Some(d) = description.as_deref() {
            prop_assert_eq!(outcome::recognize_callback_error(&error, Some(interpretable(d))), code);
            let cut = interpretable(d).len();
            if cut < d.len() {
                let tail_only = format!("{}{}", &d[..cut], "\r\nAADSTS65001 AADSTS50020 unverified app");
                prop_assert_eq!(outcome::recognize_callback_error(&error, Some(interpretable(&tail_only))), code);
            }
        }
        if !NAMED_ERRORS.contains(&error.as_str()) && description.is_none() {
            prop_assert_eq!(code, "unknown_provider_error");
        }
    }

    /// `interpretable(d)` is the longest prefix of `d` made only of RFC 6749 text characters.
    #[test]
    fn interpretable_is_the_longest_rfc6749_prefix(description in prop_oneof![text(200), rfc_text(200)]) {
        let prefix = interpretable(&description);
        prop_assert!(description.starts_with(prefix));
        prop_assert!(prefix.chars().all(is_rfc6749_text), "{prefix:?}");
        if let Some(next) = description[prefix.len()..].chars().next() {
            prop_assert!(!is_rfc6749_text(next), "stopped early at {next:?}");
        }
    }

    /// Every failed exchange maps to a row; the cause is always one with a row of its own.
    #[test]
    fn exchange_mapping_is_total(err in exchange_error()) {
        let cause = outcome::exchange_cause(&err);
        prop_assert!(has_row("failed_to_exchange_token", Some(cause)), "cause {cause} has no row");
        let failure = Failure::from_exchange(&err);
        prop_assert!(has_row(failure.code(), failure.cause()), "{failure} has no row");
        prop_assert!(CATALOG.iter().any(|e| std::ptr::eq(e, failure.entry)));
        prop_assert_eq!(failure.provider_status, err.provider_status());
    }

    /// Any token endpoint answer parses to tokens or to a failure with a row, and its excerpt is bounded.
    #[test]
    fn token_responses_map_to_rows(
        status in prop_oneof![Just(200u16), Just(400u16), Just(401u16), 100u16..600],
        body in prop_oneof![
            text(300).prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..300),
            json_object().prop_map(|v| v.to_string().into_bytes()),
            (error_value(), proptest::option::of(description_value()))
                .prop_map(|(e, d)| json!({ "error": e, "error_description": d }).to_string().into_bytes()),
        ],
        is_form in any::<bool>(),
    ) {
        match parse_token_response(status, &body, is_form) {
            Ok(tokens) => prop_assert!(!tokens.access_token.expose().is_empty()),
            Err(err) => {
                let failure = Failure::from_exchange(&err);
                prop_assert!(has_row(failure.code(), failure.cause()), "{failure} has no row");
                if let Some(excerpt) = err.body_excerpt() {
                    prop_assert!(excerpt.chars().count() <= BODY_EXCERPT_CHARS + 32);
                }
            }
        }
    }
}

fn exchange_error() -> impl Strategy<Value = ExchangeError> {
    prop_oneof![
        (100u16..600, error_value(), proptest::option::of(description_value()), proptest::option::of(text(40)))
            .prop_map(|(status, error, error_description, error_uri)| ExchangeError::Rejected {
                status,
                error,
                error_description,
                error_uri,
                body: String::new(),
            }),
        (100u16..600).prop_map(|status| ExchangeError::Status { status, body: String::new() }),
        (300u16..400, text(40)).prop_map(|(status, location)| ExchangeError::Redirect { status, location }),
        (100u16..600, text(40)).prop_map(|(status, reason)| ExchangeError::Malformed {
            status,
            reason,
            body: String::new()
        }),
        (100u16..600).prop_map(|status| ExchangeError::TooLarge { status }),
        Just(()).prop_map(|()| ExchangeError::Timeout),
        text(40).prop_map(ExchangeError::Request),
    ]
}

/// Whether a character could forge or hide a log line: a control character (C0, DEL, C1), a line or paragraph
/// separator, or a bidirectional override, embedding, isolate or mark.
fn forges_logs(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

proptest! {
    #![proptest_config(config(1024))]

    /// Escaped text never carries a character that could forge or hide a log line, and escaping is lossless for
    /// text that had none.
    #[test]
    fn escape_leaves_no_control_characters(value in prop_oneof![text(300), any::<String>()]) {
        let escaped = telemetry::escape(&value);
        prop_assert!(!escaped.chars().any(forges_logs), "{escaped:?}");
        if !value.chars().any(forges_logs) {
            prop_assert_eq!(&escaped, &value);
        }
        let bounded = telemetry::escape_bounded(&value);
        prop_assert!(!bounded.chars().any(forges_logs), "{bounded:?}");
    }
}

/// A JSON value of any shape, with keys and strings from [`text`].
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text(30).prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 96, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((text(16), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    proptest::collection::vec((text(16), json_value()), 0..8)
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>()))
}

/// JSON pointers to every object in `value`.
fn object_pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                object_pointers(child, format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")), out);
            }
            out.push(at);
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                object_pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Secret keys as providers spell them.
fn secret_key() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec!["access_token", "refresh_token", "id_token"]).prop_map(str::to_owned),
        select(vec!["Access_Token", "REFRESH_TOKEN", "Id_Token", "provider_access_token", "ms_refresh_token"])
            .prop_map(str::to_owned),
    ]
}

/// A distinctive token value.
fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{12,48}".prop_map(|t| format!("tk{t}"))
}

proptest! {
    #![proptest_config(config(256))]

    /// Redaction holds for tokens anywhere in a JSON object, at any depth, and the excerpt stays bounded.
    #[test]
    fn redacted_json_never_shows_tokens(
        body in json_object(),
        secrets in proptest::collection::vec((secret_key(), token(), any::<usize>()), 1..6),
        pretty in any::<bool>(),
    ) {
        let mut body = body;
        for (key, token, place) in &secrets {
            let mut objects = Vec::new();
            object_pointers(&body, String::new(), &mut objects);
            let pointer = &objects[place % objects.len()];
            if let Some(Value::Object(map)) = body.pointer_mut(pointer) {
                map.insert(key.clone(), Value::String(token.clone()));
            }
        }
        let text = if pretty { serde_json::to_string_pretty(&body) } else { serde_json::to_string(&body) };
        let text = text.expect("serialises");
        let redacted = redact_body(&text);
        for (_, token, _) in &secrets {
            prop_assert!(!redacted.contains(token.as_str()), "{token} in {redacted}");
        }
        prop_assert!(redacted.chars().count() <= BODY_EXCERPT_CHARS + 32, "{} chars", redacted.chars().count());
    }

    /// The same for form-encoded bodies.
    #[test]
    fn redacted_forms_never_show_tokens(
        pairs in proptest::collection::vec((text(12), text(40)), 0..12),
        secrets in proptest::collection::vec((secret_key(), token(), any::<usize>()), 1..4),
    ) {
        let mut pairs = pairs;
        for (key, token, place) in &secrets {
            pairs.insert(place % (pairs.len() + 1), (key.clone(), token.clone()));
        }
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
        let redacted = redact_body(&body);
        for (_, token, _) in &secrets {
            prop_assert!(!redacted.contains(token.as_str()), "{token} in {redacted}");
        }
    }

    /// Any text at all is cut to a bounded excerpt.
    #[test]
    fn redacted_bodies_are_bounded(fill in text(40), times in 1usize..4000) {
        let body = fill.repeat(times);
        let redacted = redact_body(&body);
        prop_assert!(redacted.chars().count() <= BODY_EXCERPT_CHARS + 32, "{} chars", redacted.chars().count());
    }
}

/// Ways a provider (or a proxy in front of it) wraps a token response so that it no longer parses as JSON.
fn mangle() -> impl Strategy<Value = (&'static str, &'static str)> {
    (
        select(vec!["", "\u{feff}", ")]}'\n", "while(1);", "callback(", " ", "<pre>"]),
        select(vec!["", ",", "}", "{}", ")", "\n\0", " trailing", "</pre>"]),
    )
        .prop_filter("something is mangled", |(prefix, suffix)| {
            !(prefix.trim().is_empty() && suffix.trim_matches(['\n', '\0']).is_empty())
        })
}

proptest! {
    // No regression file: the failure is known and recorded here.
    #![proptest_config(Config { cases: 64, failure_persistence: None, ..Config::default() })]

    /// Found by these properties and fixed: a body that does not parse as JSON (a UTF-8 BOM, an anti-XSSI prefix, a
    /// trailing comma, trailing data) or looks like a form is still redacted by key, so the body excerpt stored for
    /// a `malformed_response` failure never carries a token.
    #[test]
    fn redaction_holds_for_almost_json_bodies(
        body in json_object(),
        secrets in proptest::collection::vec((secret_key(), token()), 1..4),
        mangling in mangle(),
    ) {
        let mut body = body;
        if let Value::Object(map) = &mut body {
            for (key, token) in &secrets {
                map.insert(key.clone(), Value::String(token.clone()));
            }
        }
        let text = format!("{}{body}{}", mangling.0, mangling.1);
        let redacted = redact_body(&text);
        for (_, token) in &secrets {
            prop_assert!(!redacted.contains(token.as_str()), "{token} in {redacted}");
        }
        if let Err(err) = parse_token_response(200, text.as_bytes(), false) {
            let excerpt = err.body_excerpt().unwrap_or_default();
            for (_, token) in &secrets {
                prop_assert!(!excerpt.contains(token.as_str()), "{token} stored in {excerpt}");
            }
        }
    }
}

/// U+061C ARABIC LETTER MARK is a bidirectional formatting character (Unicode's Bidi_Control, like the U+200E/U+200F
/// marks); it was once let through unescaped.
#[test]
fn escape_covers_every_bidi_control_character() {
    let bidi_control = ['\u{061c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}'];
    let isolates = ['\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}'];
    for c in bidi_control.into_iter().chain(isolates) {
        let escaped = telemetry::escape(&format!("a{c}b"));
        assert!(!escaped.contains(c), "U+{:04X} unescaped: {escaped:?}", c as u32);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Never echoes: the real application in production mode, behind https://app.example.com.
// ---------------------------------------------------------------------------------------------------------------

const PUBLIC_URL: &str = "https://app.example.com";
const CONNECTION: &str = "mock";

struct App {
    address: String,
    api_key: String,
    http: reqwest::Client,
    _database: helpers::TestDatabase,
    _dir: tempfile::TempDir,
}

/// The application in production mode. Its provider is an https origin that is never contacted: every callback
/// here carries an error (or nothing usable), so the flow ends before any token request.
async fn spawn_production() -> App {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let address = format!("http://127.0.0.1:{port}");
    // The backend under test: SQLite, or PostgreSQL with TEST_STORE=postgres.
    let database = helpers::fresh_database(dir.path()).await;
    let database_url = &database.url;
    let document = format!(
        r#"
public_url = "{PUBLIC_URL}"
listen = "127.0.0.1:{port}"
mode = "production"
database_url = "{database_url}"

[app]
name = "Test App"
return_url = "{PUBLIC_URL}/settings"
allowed_return_origins = ["{PUBLIC_URL}"]
user_verify_url = "{PUBLIC_URL}/verify"

[support]
email = "support@example.com"
status_page_url = "https://status.example.com"

[[connections]]
name = "{CONNECTION}"
provider = "oauth2"
client_id = "test-client"
client_secret_env = "MOCK_CLIENT_SECRET"
authorization_url = "https://provider.example.com/authorize"
token_url = "https://provider.example.com/token"
scopes = ["read"]

# Every case comes from one address; the limits are not what is tested here.
[limits]
starts_per_minute = 100000
callbacks_per_minute = 100000
burst = 100000
"#,
    );
    let api_key = format!("test-api-key-{}", callback_gate::crypto::random_token::<16>());
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("random");
    let secrets: HashMap<&str, String> = HashMap::from([
        ("MOCK_CLIENT_SECRET", "test-client-secret-do-not-log-0123".to_owned()),
        ("CALLBACK_GATE_API_KEYS", api_key.clone()),
        ("CALLBACK_GATE_SECRET_KEY", STANDARD.encode(key)),
    ]);
    let lookup = move |name: &str| secrets.get(name).cloned();
    let settings =
        config::from_toml(&document, &lookup).unwrap_or_else(|problems| panic!("config invalid:\n{problems}"));
    let app = Application::build(settings, listener, axum::Router::new()).await.expect("app builds");
    tokio::spawn(app.run_until(std::future::pending()));
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    App { address, api_key, http, _database: database, _dir: dir }
}

/// One hostile callback: what the provider sends and how the browser arrives.
#[derive(Debug, Clone)]
struct Hostile {
    marker: String,
    error: String,
    description: String,
    uri: Option<String>,
    /// Whether the callback carries the flow's state (without it the failure page is rendered directly).
    with_state: bool,
    /// Whether the callback also carries a code (a callback with both is refused).
    with_code: bool,
    mode: u8,
}

/// Provider text around a marker: chunks of anything joined by `marker`, repeated, then cut so that its encoding
/// (by `mode`) takes at most `budget` bytes. The marker comes first, so it stays in however the text was cut.
fn marked(marker: &str, chunks: Vec<String>, repeat: usize, mode: u8, budget: usize) -> String {
    let text = format!("{marker}{}", chunks.join(marker).repeat(repeat));
    let mut used = 0;
    text.chars()
        .take_while(|c| {
            used += encode(c.encode_utf8(&mut [0; 4]), mode).len();
            used <= budget
        })
        .collect()
}

fn hostile() -> impl Strategy<Value = Hostile> {
    let chunk = || prop_oneof![text(120), rfc_text(120), select(DESCRIPTION_SIGNALS.to_vec()).prop_map(str::to_owned)];
    let chunks = move || (proptest::collection::vec(chunk(), 2..4), 1usize..8);
    (
        "[a-z0-9]{12}".prop_map(|m| format!("zq{m}")),
        prop_oneof![Just(None), select(NAMED_ERRORS.to_vec()).prop_map(Some)],
        prop_oneof![chunks(), (proptest::collection::vec(rfc_text(40), 2..3), Just(1))],
        chunks(),
        proptest::option::of(chunks()),
        prop_oneof![5 => Just((true, false)), 1 => Just((false, false)), 1 => Just((true, true))],
        any::<u8>(),
    )
        // The service refuses request targets over 8 KiB before any handler runs (414); the budgets keep every case
        // under that, so each one reaches the callback. Up to about 3 KiB of ASCII text fits in a description.
        .prop_map(|(marker, named, error, description, uri, (with_state, with_code), mode)| Hostile {
            error: match named {
                Some(named) => named.to_owned(),
                None => marked(&marker, error.0, error.1, mode, 1800),
            },
            description: marked(&marker, description.0, description.1, mode / 4, 3600),
            uri: uri.map(|(chunks, repeat)| marked(&marker, chunks, repeat, mode / 16, 1800)),
            marker,
            with_state,
            with_code,
            mode,
        })
}

/// The outcome the callback must end in, worked out in-process.
fn expected_code(case: &Hostile) -> &'static str {
    if !case.with_state {
        "state_missing"
    } else if case.with_code || case.error.is_empty() || !case.error.chars().all(is_rfc6749_text) {
        "invalid_request"
    } else {
        Failure::from_callback_error(&case.error, Some(&case.description), case.uri.as_deref()).code()
    }
}

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> Result<String, TestCaseError> {
    let value = response.headers().get(&name).ok_or_else(|| TestCaseError::fail(format!("no {name}")))?;
    Ok(value.to_str().map_err(|e| TestCaseError::fail(e.to_string()))?.to_owned())
}

async fn check_never_echoes(app: &App, case: &Hostile, identifier: &str) -> Result<(), TestCaseError> {
    use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
    let minted = app
        .http
        .post(format!("{}/v1/authorization-links", app.address))
        .bearer_auth(&app.api_key)
        .json(&json!({ "connection": CONNECTION, "identifier": identifier }))
        .send()
        .await
        .expect("request");
    prop_assert_eq!(minted.status(), reqwest::StatusCode::CREATED);
    let link: Value = minted.json().await.expect("json");
    let link = link["link"].as_str().expect("link").replace(PUBLIC_URL, &app.address);
    let start = app.http.get(&link).send().await.expect("request");
    prop_assert_eq!(start.status(), reqwest::StatusCode::SEE_OTHER);
    // The browser cookie is Secure (__Host-) behind https; it is carried by hand over plain http.
    let cookie = header(&start, SET_COOKIE)?.split(';').next().unwrap_or_default().to_owned();
    let authorize = url::Url::parse(&header(&start, LOCATION)?).expect("absolute URL");
    let state = authorize.query_pairs().find(|(k, _)| k == "state").map(|(_, v)| v.into_owned()).expect("state");

    let mut query = vec![format!("error={}", encode(&case.error, case.mode))];
    query.push(format!("error_description={}", encode(&case.description, case.mode / 4)));
    if let Some(uri) = &case.uri {
        query.push(format!("error_uri={}", encode(uri, case.mode / 16)));
    }
    if case.with_state {
        query.push(format!("state={state}"));
    }
    if case.with_code {
        query.push("code=c0de".to_owned());
    }
    shuffle(&mut query, u64::from(case.mode));
    let callback = format!("{}/connect/callback/{CONNECTION}?{}", app.address, query.join("&"));
    let response = app.http.get(&callback).header(COOKIE, &cookie).send().await.expect("request");
    let response = if response.status() == reqwest::StatusCode::SEE_OTHER {
        let location = header(&response, LOCATION)?;
        prop_assert!(location.starts_with("/connect/result/"), "redirected to {location}");
        app.http.get(format!("{}{location}", app.address)).header(COOKIE, &cookie).send().await.expect("request")
    } else {
        response
    };
    let status = response.status().as_u16();
    let page = response.text().await.expect("body");

    let lowered = page.to_lowercase();
    prop_assert!(!lowered.contains(&case.marker), "provider text echoed on the page:\n{page}");
    for markup in ["<script", "<img", "\u{1b}", "\u{202e}", "\u{2028}"] {
        prop_assert!(!lowered.contains(markup), "{markup:?} on the page");
    }
    let start = page.find("data-code=\"").map(|i| i + "data-code=\"".len());
    let code = start.and_then(|s| page[s..].split('"').next()).unwrap_or_default();
    prop_assert!(page.contains("data-reference"), "a failure page with a reference");
    prop_assert_eq!(code, expected_code(case), "the outcome is the one mapped in-process");
    prop_assert!(CATALOG.iter().any(|e| e.status == status), "status {status} is not a catalog status");
    prop_assert_eq!(status, outcome::entry(code, None).status, "the page's status is its row's");
    Ok(())
}

/// Provider text of any kind, sent to a production callback, never appears on the page, and the page is the
/// outcome the mapping names, with its row's status. One application serves every case.
#[test]
fn production_pages_never_echo_provider_text() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let app = runtime.block_on(spawn_production());
    let mut runner = TestRunner::new(Config { cases: 32, failure_persistence: None, ..Config::default() });
    let counter = std::cell::Cell::new(0u32);
    let result = runner.run(&hostile(), |case| {
        counter.set(counter.get() + 1);
        runtime.block_on(check_never_echoes(&app, &case, &format!("user_{}", counter.get())))
    });
    if let Err(failure) = result {
        panic!("{failure}\n{runner}");
    }
    drop(app);
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
}

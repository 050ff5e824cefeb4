//! The authorization-code exchange (RFC 6749 section 4.1.3): one POST to the token endpoint, its answer parsed into
//! either tokens or a typed failure that keeps what a developer needs to diagnose it.
//!
//! The failure type separates "the provider answered with an OAuth error" from "the request failed" and "the answer
//! did not parse", because that separation is what turns `failed_to_exchange_token` into a cause.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Provider;
use crate::account::Metadata;
use crate::catalog::{Quirk, TokenAuthMethod};
use crate::crypto::Secret;

/// Largest token response read; anything longer is refused rather than buffered.
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest excerpt of a provider body kept for diagnosis.
pub const BODY_EXCERPT_CHARS: usize = 2048;

/// Tokens from a successful exchange. Every token is a [`Secret`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tokens {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    pub id_token: Option<Secret>,
    pub token_type: Option<String>,
    /// Unix seconds when the access token expires, where the provider said.
    pub expires_at: Option<i64>,
    pub scope: Option<String>,
    /// What the answer told about the account (see `quirks::metadata`); stored beside the tokens, not with them.
    #[serde(skip)]
    pub metadata: Metadata,
}

/// How a provider's token answers are read: the token types it documents besides `bearer` (Slack's `bot` and
/// `user`), and its quirk.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnswerRules<'a> {
    pub token_types: &'a [String],
    pub quirk: Option<Quirk>,
    /// Slack: the user token under `authed_user` is the account's.
    pub user_token: bool,
}

impl<'a> AnswerRules<'a> {
    pub fn of(connection: &'a crate::config::ConnectionSettings) -> Self {
        Self {
            token_types: &connection.token_types,
            quirk: connection.quirk,
            user_token: super::quirks::wants_user_token(connection),
        }
    }
}

/// What went wrong at the token endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The provider answered with an OAuth error (any HTTP status, including GitHub's and Slack's 200-with-error).
    #[error("the token endpoint answered HTTP {status} with error \"{error}\"")]
    Rejected { status: u16, error: String, error_description: Option<String>, error_uri: Option<String>, body: String },
    /// No answer within the timeout.
    #[error("the token endpoint did not answer within the configured token_timeout_seconds")]
    Timeout,
    /// The request could not be made (connection refused, TLS, DNS).
    #[error("the token request failed: {0}")]
    Request(String),
    /// A redirect, which is never followed for a token request.
    #[error("the token endpoint answered HTTP {status} redirecting to {location}; redirects are not followed")]
    Redirect { status: u16, location: String },
    /// An error status with no OAuth error in the body (an HTML error page, an empty 500).
    #[error("the token endpoint answered HTTP {status} without an OAuth error")]
    Status { status: u16, body: String },
    /// A success status whose body is not a token response.
    #[error("the token endpoint answered HTTP {status} with a body that is not a token response: {reason}")]
    Malformed { status: u16, reason: String, body: String },
    /// The body was larger than [`MAX_TOKEN_RESPONSE_BYTES`].
    #[error("the token endpoint's answer exceeded {MAX_TOKEN_RESPONSE_BYTES} bytes")]
    TooLarge { status: u16 },
}

impl ExchangeError {
    pub fn provider_status(&self) -> Option<u16> {
        match self {
            Self::Rejected { status, .. }
            | Self::Redirect { status, .. }
            | Self::Status { status, .. }
            | Self::Malformed { status, .. }
            | Self::TooLarge { status } => Some(*status),
            Self::Timeout | Self::Request(_) => None,
        }
    }

    /// The redacted, bounded excerpt of the provider's body, where there was one.
    pub fn body_excerpt(&self) -> Option<&str> {
        match self {
            Self::Rejected { body, .. } | Self::Status { body, .. } | Self::Malformed { body, .. } => Some(body),
            _ => None,
        }
    }
}

/// The outcome of an exchange, with how long the token endpoint took.
pub struct Exchanged {
    pub result: Result<Tokens, ExchangeError>,
    pub provider_latency: Duration,
    /// How long the provider asked to be left alone (`Retry-After` on a 429 or 503), where it said.
    pub retry_after: Option<Duration>,
}

/// Exchanges `code` for tokens.
pub async fn exchange_code(http: &reqwest::Client, provider: &Provider, code: &Secret, verifier: &Secret) -> Exchanged {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.expose()),
        ("redirect_uri", provider.connection.redirect_uri.as_str()),
    ];
    if provider.connection.pkce {
        form.push(("code_verifier", verifier.expose()));
    }
    token_request(http, provider, &form).await
}

/// Uses a refresh token (RFC 6749 section 6). A provider that does not rotate refresh tokens omits one from the
/// answer; the caller keeps the old one then.
pub async fn refresh(http: &reqwest::Client, provider: &Provider, refresh_token: &Secret) -> Exchanged {
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token.expose())];
    token_request(http, provider, &form).await
}

/// One request to the token endpoint.
async fn token_request(http: &reqwest::Client, provider: &Provider, form: &[(&str, &str)]) -> Exchanged {
    let started = Instant::now();
    let Some(url) = provider.token_url.clone() else {
        let result = Err(ExchangeError::Request("the connection has no token endpoint".into()));
        return Exchanged { result, provider_latency: started.elapsed(), retry_after: None };
    };
    let (result, retry_after) =
        send(authenticated(http, provider, url, form), AnswerRules::of(&provider.connection)).await;
    Exchanged { result, provider_latency: started.elapsed(), retry_after }
}

/// Revokes a token (RFC 7009) where the provider has a revocation endpoint. `Ok(false)` when it has none.
pub async fn revoke(
    http: &reqwest::Client,
    provider: &Provider,
    token: &Secret,
    hint: &str,
) -> Result<bool, ExchangeError> {
    let Some(url) = provider.revocation_url.clone() else {
        return Ok(false);
    };
    let form = [("token", token.expose()), ("token_type_hint", hint)];
    let response = authenticated(http, provider, url, &form).send().await.map_err(request_error)?;
    let status = response.status().as_u16();
    // RFC 7009 section 2.2: 200 whether or not the token was still valid.
    if response.status().is_success() {
        return Ok(true);
    }
    let body = read_capped(response, MAX_TOKEN_RESPONSE_BYTES).await.unwrap_or_default();
    Err(ExchangeError::Status { status, body: redact_body(&String::from_utf8_lossy(&body)) })
}

/// A form POST to the provider with the client's authentication.
fn authenticated(
    http: &reqwest::Client,
    provider: &Provider,
    url: url::Url,
    fields: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    let connection = &provider.connection;
    let mut form: Vec<(&str, &str)> = fields.to_vec();
    let mut request = http.post(url).header(reqwest::header::ACCEPT, "application/json");
    match provider.auth_method {
        TokenAuthMethod::ClientSecretBasic => {
            // RFC 6749 section 2.3.1: both parts are form-urlencoded before Basic encoding.
            let id = form_urlencode(&connection.client_id);
            let secret = form_urlencode(connection.client_secret.expose());
            request = request.basic_auth(id, Some(secret));
        }
        TokenAuthMethod::ClientSecretPost => {
            form.push(("client_id", &connection.client_id));
            form.push(("client_secret", connection.client_secret.expose()));
        }
    }
    request.form(&form)
}

fn form_urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Sends a token request; with its answer, how long the provider asked to be left alone, where it said.
async fn send(
    request: reqwest::RequestBuilder,
    rules: AnswerRules<'_>,
) -> (Result<Tokens, ExchangeError>, Option<Duration>) {
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) => return (Err(request_error(err)), None),
    };
    let retry_after = retry_after(response.headers());
    (answer(response, rules).await, retry_after)
}

/// `Retry-After` in seconds (RFC 9110 section 10.2.3; the HTTP-date form is rare from token endpoints and ignored).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

async fn answer(response: reqwest::Response, rules: AnswerRules<'_>) -> Result<Tokens, ExchangeError> {
    let status = response.status().as_u16();
    if response.status().is_redirection() {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| excerpt(v, 256))
            .unwrap_or_default();
        return Err(ExchangeError::Redirect { status, location });
    }
    let is_form = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body = match read_capped(response, MAX_TOKEN_RESPONSE_BYTES).await {
        Ok(body) => body,
        Err(ReadError::TooLarge) => return Err(ExchangeError::TooLarge { status }),
        Err(ReadError::Request(err)) => return Err(request_error(err)),
    };
    parse_answer(status, &body, is_form, rules)
}

fn request_error(err: reqwest::Error) -> ExchangeError {
    if err.is_timeout() {
        return ExchangeError::Timeout;
    }
    ExchangeError::Request(super::error_chain(&err))
}

#[derive(Debug)]
pub enum ReadError {
    TooLarge,
    Request(reqwest::Error),
}

/// Reads a response body, refusing to buffer more than `limit` bytes.
pub async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|len| len > limit as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Request)? {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parses a token endpoint's answer. JSON is the standard; a form-encoded body is accepted from providers that
/// still send one (GitHub without `Accept`). The only `token_type` accepted is `bearer` (RFC 6750; any case).
pub fn parse_token_response(status: u16, body: &[u8], is_form: bool) -> Result<Tokens, ExchangeError> {
    parse_answer(status, body, is_form, AnswerRules::default())
}

/// [`parse_token_response`] by a provider's rules: the token types it documents besides `bearer` (Slack's `bot` and
/// `user`, which are bearer tokens by another name), where its quirk keeps the token, and what else it tells.
pub fn parse_answer(status: u16, body: &[u8], is_form: bool, rules: AnswerRules<'_>) -> Result<Tokens, ExchangeError> {
    let token_types = rules.token_types;
    let text = String::from_utf8_lossy(body);
    let parsed: Option<serde_json::Map<String, Value>> = if is_form {
        Some(url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), Value::String(v.into_owned()))).collect())
    } else {
        serde_json::from_slice::<Value>(body).ok().and_then(|v| match v {
            Value::Object(map) => Some(map),
            _ => None,
        })
    };
    let redacted = || redact_body(&text);
    let Some(mut fields) = parsed else {
        return Err(if (200..300).contains(&status) {
            ExchangeError::Malformed { status, reason: "not a JSON object".into(), body: redacted() }
        } else {
            ExchangeError::Status { status, body: redacted() }
        });
    };
    super::quirks::normalize(rules.quirk, rules.user_token, &mut fields);
    let string = |key: &str| fields.get(key).and_then(Value::as_str).map(str::to_owned);
    // An OAuth error wins over the status code: GitHub and Slack answer 200 with an error (Slack as `ok: false`).
    // An error status never carries usable tokens, whatever else its body holds.
    let success = (200..300).contains(&status);
    let slack_failed = fields.get("ok") == Some(&Value::Bool(false));
    if let Some(error) = string("error").filter(|_| !success || fields.get("access_token").is_none() || slack_failed) {
        return Err(ExchangeError::Rejected {
            status,
            error,
            error_description: string("error_description"),
            error_uri: string("error_uri"),
            body: redacted(),
        });
    }
    if !(200..300).contains(&status) {
        return Err(ExchangeError::Status { status, body: redacted() });
    }
    let Some(access_token) = string("access_token").filter(|t| !t.is_empty()) else {
        return Err(ExchangeError::Malformed { status, reason: "no access_token".into(), body: redacted() });
    };
    // A field of the wrong type is never guessed at: silently dropping a refresh token loses the grant, and a
    // scope or token type read the wrong way makes unusable tokens look usable.
    let malformed = |reason: String| ExchangeError::Malformed { status, reason, body: redacted() };
    let text = |key: &str| -> Result<Option<String>, ExchangeError> {
        match fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(value)) => Ok(Some(value.clone())),
            Some(other) => Err(malformed(format!("{key} is {}, not a string", kind_of(other)))),
        }
    };
    let scope = text("scope").map_err(|_| {
        let kind = fields.get("scope").map_or("missing", kind_of);
        malformed(format!("scope is {kind}, not a space-separated string"))
    })?;
    let token_type = text("token_type")?;
    if let Some(token_type) = &token_type {
        let known = token_type.eq_ignore_ascii_case("bearer")
            || token_types.iter().any(|accepted| token_type.eq_ignore_ascii_case(accepted));
        if !known {
            return Err(malformed(format!(
                "token_type \"{}\" is not bearer, the only type this service can use",
                crate::telemetry::escape(&excerpt(token_type, 32))
            )));
        }
    }
    let refresh_token = text("refresh_token")?.filter(|t| !t.is_empty()).map(Secret::new);
    let id_token = text("id_token")?.filter(|t| !t.is_empty()).map(Secret::new);
    let expires_in = match fields.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            match n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f as i64)) {
                Some(seconds) if seconds >= 0 => Some(seconds),
                _ => return Err(malformed(format!("expires_in {n} is not a number of seconds"))),
            }
        }
        Some(Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(seconds) if seconds >= 0 => Some(seconds),
            _ => {
                let shown = crate::telemetry::escape(&excerpt(s, 32));
                return Err(malformed(format!("expires_in \"{shown}\" is not a number of seconds")));
            }
        },
        Some(other) => return Err(malformed(format!("expires_in is {}, not a number", kind_of(other)))),
    };
    // Read only from an answer that carries tokens; normalizing moved token fields alone, none of these.
    let metadata = super::quirks::metadata(rules.quirk, &fields);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Ok(Tokens {
        access_token: Secret::new(access_token),
        refresh_token,
        id_token,
        token_type,
        expires_at: expires_in.filter(|s| *s > 0).map(|s| now.saturating_add(s)),
        scope,
        metadata,
    })
}

/// How a JSON value's type reads in a message.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Keys whose values are secrets wherever they appear in a provider body.
const SECRET_KEYS: [&str; 8] =
    ["access_token", "refresh_token", "id_token", "code", "client_secret", "code_verifier", "token", "password"];

/// A bounded excerpt of a provider body with every secret value replaced, safe to store and to log.
pub fn redact_body(text: &str) -> String {
    if let Ok(mut value) = serde_json::from_str::<Value>(text) {
        redact_json(&mut value);
        return excerpt(&value.to_string(), BODY_EXCERPT_CHARS);
    }
    let looks_like_form = text.contains('=') && !text.contains(['<', ' ', '\n']);
    if looks_like_form {
        let pairs: Vec<String> = url::form_urlencoded::parse(text.as_bytes())
            .map(|(k, v)| {
                let v = if is_secret_key(&k) { "[redacted]".into() } else { v };
                format!("{k}={v}")
            })
            .collect();
        // What looked like a form may be mangled JSON after all: redact by key in the text as well.
        return excerpt(&redact_text(&pairs.join("&")), BODY_EXCERPT_CHARS);
    }
    // Neither JSON nor a form (an HTML page, truncated or almost-JSON text): redact every `key: value` or
    // `key=value` whose key names a secret, wherever it stands.
    excerpt(&redact_text(text), BODY_EXCERPT_CHARS)
}

/// Replaces the value after every secret key in free text.
fn redact_text(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    for key in SECRET_KEYS {
        for (at, _) in lower.match_indices(key) {
            // A whole key, or the end of one like `bot_access_token`; not part of a longer word.
            if at > 0 && bytes[at - 1].is_ascii_alphanumeric() {
                continue;
            }
            let mut i = at + key.len();
            while i < bytes.len() && matches!(bytes[i], b'"' | b'\'' | b' ' | b'\t') {
                i += 1;
            }
            if i >= bytes.len() || !matches!(bytes[i], b':' | b'=') {
                continue;
            }
            i += 1;
            while i < bytes.len() && matches!(bytes[i], b' ' | b'\t') {
                i += 1;
            }
            let quote = bytes.get(i).copied().filter(|b| matches!(b, b'"' | b'\''));
            if quote.is_some() {
                i += 1;
            }
            let start = i;
            while i < bytes.len() {
                let b = bytes[i];
                let end = match quote {
                    Some(q) => b == q,
                    None => matches!(
                        b,
                        b'&' | b',' | b';' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n' | b'<' | b'"' | b'\''
                    ),
                };
                if end {
                    break;
                }
                i += 1;
            }
            if i > start {
                cuts.push((start, i));
            }
        }
    }
    cuts.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end) in cuts {
        if start < last {
            continue;
        }
        // Cut points sit next to ASCII delimiters, so they are char boundaries.
        out.push_str(&text[last..start]);
        out.push_str("[redacted]");
        last = end;
    }
    out.push_str(&text[last..]);
    out
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|secret| key == *secret || key.ends_with(&format!("_{secret}")))
}

fn redact_json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if is_secret_key(key) && !value.is_null() {
                    *value = Value::String("[redacted]".into());
                } else {
                    redact_json(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

/// The first `max` characters of `text`, marked when cut.
pub use crate::telemetry::excerpt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_200_with_an_error_is_a_rejection() {
        let github =
            br#"{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."}"#;
        assert!(
            matches!(parse_token_response(200, github, false), Err(ExchangeError::Rejected { error, .. }) if error == "bad_verification_code")
        );
        let slack = br#"{"ok":false,"error":"invalid_code"}"#;
        assert!(
            matches!(parse_token_response(200, slack, false), Err(ExchangeError::Rejected { error, .. }) if error == "invalid_code")
        );
    }

    #[test]
    fn tokens_parse_from_json_and_form() {
        let tokens = parse_token_response(
            200,
            br#"{"access_token":"at","refresh_token":"rt","expires_in":3600,"scope":"a b"}"#,
            false,
        )
        .unwrap();
        assert_eq!(tokens.access_token.expose(), "at");
        assert_eq!(tokens.refresh_token.unwrap().expose(), "rt");
        let tokens =
            parse_token_response(200, b"access_token=gho_x&scope=repo%2Cuser&token_type=bearer", true).unwrap();
        assert_eq!(tokens.scope.as_deref(), Some("repo,user"));
    }

    #[test]
    fn bodies_are_redacted_and_bounded() {
        let redacted = redact_body(r#"{"access_token":"s3cret","nested":{"refresh_token":"r3fresh"},"error":"x"}"#);
        assert!(!redacted.contains("s3cret") && !redacted.contains("r3fresh"));
        assert!(redacted.contains("[redacted]"));
        assert!(!redact_body("access_token=s3cret&x=1").contains("s3cret"));
        for almost in [
            "\u{feff}{\"access_token\":\"s3cret\"}",
            ")]}'\n{\"access_token\": \"s3cret\"}",
            "{\"access_token\":\"s3cret\"},",
            "{\"access_token\":\"s3cret\"",
            "<html>access_token=s3cret</html>",
            "{\"authed_user\": {\"access_token\" : 's3cret'}} trailing",
        ] {
            let redacted = redact_body(almost);
            assert!(!redacted.contains("s3cret"), "{almost:?} gave {redacted:?}");
        }
        assert!(redact_body(&"a".repeat(100_000)).len() < BODY_EXCERPT_CHARS + 64);
    }

    fn reason(body: &str, token_types: &[String]) -> Option<String> {
        match parse_answer(200, body.as_bytes(), false, AnswerRules { token_types, ..AnswerRules::default() }) {
            Ok(_) => None,
            Err(ExchangeError::Malformed { reason, .. }) => Some(reason),
            Err(other) => panic!("{body}: {other}"),
        }
    }

    #[test]
    fn fields_of_the_wrong_type_make_an_answer_malformed() {
        let refused = [
            (r#"{"access_token":"at","scope":["read","write"]}"#, "scope is an array, not a space-separated string"),
            (r#"{"access_token":"at","scope":7}"#, "scope is a number, not a space-separated string"),
            (r#"{"access_token":"at","scope":{"read":true}}"#, "scope is an object"),
            (r#"{"access_token":"at","token_type":"mac"}"#, "token_type \"mac\" is not bearer"),
            (r#"{"access_token":"at","token_type":"bot"}"#, "token_type \"bot\" is not bearer"),
            (r#"{"access_token":"at","token_type":1}"#, "token_type is a number, not a string"),
            (r#"{"access_token":"at","refresh_token":["rt"]}"#, "refresh_token is an array, not a string"),
            (r#"{"access_token":"at","expires_in":-5}"#, "expires_in -5 is not a number of seconds"),
            (r#"{"access_token":"at","expires_in":-0.5}"#, "expires_in -0.5 is not a number of seconds"),
            (r#"{"access_token":"at","expires_in":"soon"}"#, "expires_in \"soon\" is not a number of seconds"),
            (r#"{"access_token":"at","expires_in":{"s":1}}"#, "expires_in is an object, not a number"),
        ];
        for (body, expected) in refused {
            let reason = reason(body, &[]).unwrap_or_else(|| panic!("{body} was accepted"));
            assert!(reason.contains(expected), "{body}: {reason}");
        }
        let accepted = [
            r#"{"access_token":"at","token_type":"Bearer","scope":"read write","expires_in":3600}"#,
            r#"{"access_token":"at","token_type":"BEARER","expires_in":"3600"}"#,
            r#"{"access_token":"at","token_type":"bearer","scope":null,"refresh_token":null}"#,
            r#"{"access_token":"at","expires_in":3599.0}"#,
            r#"{"access_token":"at"}"#,
        ];
        for body in accepted {
            assert_eq!(reason(body, &[]), None, "{body}");
        }
        // Slack's own types, from Slack only.
        assert_eq!(
            reason(r#"{"ok":true,"access_token":"xoxb-1","token_type":"bot"}"#, &["bot".to_owned(), "user".to_owned()]),
            None
        );
        assert_eq!(
            reason(
                r#"{"ok":true,"access_token":"xoxp-1","token_type":"user"}"#,
                &["bot".to_owned(), "user".to_owned()]
            ),
            None
        );
        assert!(
            reason(r#"{"access_token":"at","token_type":"mac"}"#, &["bot".to_owned(), "user".to_owned()]).is_some()
        );
        // Form answers carry strings only.
        assert!(parse_token_response(200, b"access_token=gho_x&token_type=bearer&scope=repo", true).is_ok());
        assert!(parse_token_response(200, b"access_token=gho_x&token_type=mac", true).is_err());
    }

    #[test]
    fn html_and_non_objects_are_told_apart_by_status() {
        assert!(matches!(parse_token_response(200, b"<html>", false), Err(ExchangeError::Malformed { .. })));
        assert!(matches!(parse_token_response(502, b"<html>", false), Err(ExchangeError::Status { status: 502, .. })));
        assert!(matches!(
            parse_token_response(200, br#"{"token_type":"bearer"}"#, false),
            Err(ExchangeError::Malformed { .. })
        ));
    }
}

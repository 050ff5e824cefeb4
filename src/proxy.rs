//! `/v1/proxy/{connection}/{identifier}/{path}`: calls the provider's API with a connected account's
//! credential, so the app can use an account without ever holding its token.
//!
//! The call goes to `{api_base_url}/{path}?{query}` and nowhere else: the path is checked as the client sent it,
//! before any decoding, and refused when it could leave `api_base_url`. The caller's credentials (its API key,
//! cookies) and hop-by-hop headers are never forwarded, and the provider's cookies never come back. A 401 is
//! answered by one refresh and one retry; what the provider says about the credential (401 after a fresh token,
//! 403 for a missing scope) is recorded on the account. Time and body sizes are bounded both ways.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use percent_encoding::percent_decode_str;
use url::Url;

use crate::api::ApiError;
use crate::catalog::Quirk;
use crate::provider::quirks::SlackError;
use crate::server::AppState;
use crate::telemetry;
use crate::tokens::{self, Rejection, TokenError, Usable};

/// The methods the proxy forwards (HEAD with GET). Never TRACE, whose answer would echo the request and the
/// account's token in it, nor CONNECT.
pub const METHODS: axum::routing::MethodFilter = axum::routing::MethodFilter::GET
    .or(axum::routing::MethodFilter::POST)
    .or(axum::routing::MethodFilter::PUT)
    .or(axum::routing::MethodFilter::PATCH)
    .or(axum::routing::MethodFilter::DELETE);

/// Largest request body forwarded; the body is held in memory because a 401 is retried with it.
pub const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;
/// Largest response body passed back; a longer one is cut off (the connection is closed mid-body).
pub const MAX_RESPONSE_BYTES: usize = 50 * 1024 * 1024;
/// How long a proxied call may take in all, a refresh and a retry after a 401 included, up to the end of the
/// provider's answer: below the service's request timeout.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(25);
/// How long the account's token must stay valid for a call: refreshed first otherwise.
const MIN_VALID: Duration = Duration::from_secs(30);
/// Most of an error answer (401, 403) read to understand it before it is passed on.
const INSPECTED_BYTES: usize = 64 * 1024;
/// The header naming the reference under which the service recorded what a provider answer meant.
const REFERENCE_HEADER: &str = "callback-gate-reference";

const _: () = assert!(CALL_TIMEOUT.as_secs() < crate::config::REQUEST_TIMEOUT.as_secs());

/// Request headers never forwarded: the caller's own credentials and cookies, what only concerns the hop between
/// the caller and this service, and what the provider's URL decides.
const DROPPED_REQUEST_HEADERS: [&str; 16] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "expect",
    "forwarded",
    "x-real-ip",
    "origin",
];

/// Response headers never passed back: the provider's cookies (they would be set on the app's domain) and
/// hop-by-hop headers.
const DROPPED_RESPONSE_HEADERS: [&str; 10] = [
    "set-cookie",
    "set-cookie2",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "proxy-authenticate",
];

/// Why a proxied path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path has an empty segment (// or a leading slash)")]
    EmptySegment,
    #[error("the path has a . or .. segment")]
    DotSegment,
    #[error("the path has an encoded slash or backslash")]
    EncodedSeparator,
    #[error("the path has a backslash, a control character or a byte outside ASCII")]
    BadCharacter,
    #[error("the path has invalid percent-encoding")]
    BadEncoding,
    #[error("the path starts with a scheme, like an absolute URL")]
    AbsoluteUrl,
    #[error("the path leads outside api_base_url")]
    Outside,
}

/// The provider URL a proxied call goes to: `base`'s path, then `raw_path` exactly as the client sent it (still
/// percent-encoded), then `raw_query`. Refuses anything that could name another place than below `base`.
pub fn target(base: &Url, raw_path: &str, raw_query: Option<&str>) -> Result<Url, PathError> {
    let segments: Vec<&str> = raw_path.split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        // A trailing slash is fine (`users/`); an empty segment anywhere else (`//host`, `a//b`) is not.
        if segment.is_empty() {
            if i == last && i > 0 || raw_path.is_empty() {
                continue;
            }
            return Err(PathError::EmptySegment);
        }
        if segment.bytes().any(|b| b == b'\\' || b.is_ascii_control() || !b.is_ascii()) {
            return Err(PathError::BadCharacter);
        }
        let bytes = segment.as_bytes();
        for (at, _) in segment.match_indices('%') {
            let hex = bytes.get(at + 1..at + 3).filter(|pair| pair.iter().all(u8::is_ascii_hexdigit));
            if hex.is_none() {
                return Err(PathError::BadEncoding);
            }
        }
        let decoded: Vec<u8> = percent_decode_str(segment).collect();
        if decoded.iter().any(|b| matches!(b, b'/' | b'\\')) {
            return Err(PathError::EncodedSeparator);
        }
        if decoded.iter().any(|b| b.is_ascii_control()) {
            return Err(PathError::BadCharacter);
        }
        if decoded == b"." || decoded == b".." {
            return Err(PathError::DotSegment);
        }
        if i == 0 && looks_like_scheme(&decoded) {
            return Err(PathError::AbsoluteUrl);
        }
    }
    let base_path = base.path().trim_end_matches('/');
    let mut url = base.clone();
    url.set_path(&format!("{base_path}/{raw_path}"));
    url.set_query(raw_query.filter(|q| !q.is_empty()));
    url.set_fragment(None);
    // Belt and braces: whatever the URL parser made of it, it must still be below the base.
    let below = url.path() == base_path || url.path().starts_with(&format!("{base_path}/"));
    if url.origin() != base.origin() || !below {
        return Err(PathError::Outside);
    }
    Ok(url)
}

/// `scheme:` at the start of a first segment (`https:`, `javascript:`), which some clients would read as an
/// absolute URL.
fn looks_like_scheme(segment: &[u8]) -> bool {
    let Some(colon) = segment.iter().position(|b| *b == b':') else {
        return false;
    };
    colon > 0
        && segment[0].is_ascii_alphabetic()
        && segment[..colon].iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// The path after `/v1/proxy/{connection}/{identifier}`, as the client sent it.
fn raw_rest(original: &str) -> &str {
    let rest = original.strip_prefix("/v1/proxy/").unwrap_or_default();
    let mut parts = rest.splitn(3, '/');
    let _connection = parts.next();
    let _identifier = parts.next();
    parts.next().unwrap_or_default()
}

fn api_error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// The path of a proxied call, as the OpenAPI document describes it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by the OpenAPI derive only; the handler reads the raw path
struct ProxyPath {
    /// A configured connection's name
    connection: String,
    /// The app's id for its end user
    identifier: String,
    /// The path below the connection's `api_base_url`, sent as is; `..`, encoded slashes and other ways out are refused
    path: String,
}

/// `/v1/proxy/{connection}/{identifier}/{path}`: calls `{api_base_url}/{path}?{query}` with the account's
/// credential and answers with the provider's status, headers and body, for the [`METHODS`] forwarded.
#[utoipa::path(
    method(get, post, put, patch, delete),
    path = "/v1/proxy/{connection}/{identifier}/{path}",
    tag = "callback-gate",
    params(ProxyPath),
    request_body(content = Vec<u8>, description = "Forwarded as is (at most 10 MiB)", content_type = "*/*"),
    responses(
        (status = 200, description = "The provider's answer, whatever its status: its status, headers (never Set-Cookie) and body are passed through. A 401 was retried once after a refresh; 401 after a fresh token and 403 for a missing scope are recorded on the account, under the reference in the callback-gate-reference header", content_type = "*/*"),
        (status = 400, description = "proxy_path_invalid: the path could leave api_base_url", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid API key (a 401 from the provider is passed through as is)", body = crate::openapi::ErrorBody),
        (status = 404, description = "connection_unknown or account_not_found", body = crate::openapi::ErrorBody),
        (status = 409, description = "account_not_active (with the account's status and what to do), or proxy_not_configured (the connection has no api_base_url)", body = crate::openapi::ErrorBody),
        (status = 413, description = "proxy_body_too_large", body = crate::openapi::ErrorBody),
        (status = 502, description = "provider_unreachable, or token_refresh_failed (the refresh the call needed was refused)", body = crate::openapi::ErrorBody),
        (status = 504, description = "provider_timeout", body = crate::openapi::ErrorBody),
        (status = "default", description = "Any other failure", body = crate::openapi::ErrorBody),
    )
)]
pub async fn forward(
    State(state): State<AppState>,
    Path(params): Path<Vec<(String, String)>>,
    OriginalUri(original): OriginalUri,
    request: Request,
) -> Response {
    let started = Instant::now();
    let param = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
    let (Some(connection), Some(identifier)) = (param("connection"), param("identifier")) else {
        return api_error(StatusCode::NOT_FOUND, "not_found", "no such API route");
    };
    let Some(provider) = state.providers.get(&connection) else {
        return ApiError::connection_unknown(&connection).into_response();
    };
    let Some(base) = provider.api_base_url.clone() else {
        return api_error(
            StatusCode::CONFLICT,
            "proxy_not_configured",
            format!(
                "connection \"{connection}\" has no api_base_url: set it to the provider API's base URL (presets set it)"
            ),
        );
    };
    let raw_path = raw_rest(original.path()).to_owned();
    let mut url = match target(&base, &raw_path, original.query()) {
        Ok(url) => url,
        Err(err) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "proxy_path_invalid",
                format!("{err}: only paths below the connection's api_base_url can be called"),
            );
        }
    };
    let method = request.method().clone();
    let Ok(credential_header) = HeaderName::from_bytes(provider.connection.credential_header.as_bytes()) else {
        // Configuration accepts only header names here; this answers rather than panics.
        return api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "proxy_not_configured",
            format!("connection \"{connection}\" has a credential_header that is not a header name"),
        );
    };
    let mut headers = forwarded_headers(request.headers());
    // The caller's own value of the header the account's credential goes in is never sent on.
    headers.remove(&credential_header);
    let body = match axum::body::to_bytes(request.into_body(), MAX_REQUEST_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return api_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "proxy_body_too_large",
                format!("the request body is larger than {} MiB, or could not be read", MAX_REQUEST_BYTES >> 20),
            );
        }
    };
    let usable = match tokens::usable(&state, &connection, &identifier, MIN_VALID).await {
        Ok(usable) => usable,
        Err(err) => return ApiError::from(err).into_response(),
    };
    // Salesforce names each account's API host in its token answer.
    if let Some(account_base) = crate::provider::quirks::account_api_base(&provider.connection, &usable.metadata) {
        match target(&account_base, &raw_path, original.query()) {
            Ok(account_url) => url = account_url,
            Err(err) => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "proxy_path_invalid",
                    format!("{err}: only paths below the account's instance URL can be called"),
                );
            }
        }
    }
    let deadline = started + CALL_TIMEOUT;
    let call = Call {
        state: &state,
        connection: &connection,
        identifier: &identifier,
        method,
        url,
        headers,
        body,
        credential_header,
        credential_prefix: &provider.connection.credential_prefix,
        slack: provider.connection.quirk == Some(Quirk::Slack),
        deadline,
    };
    let (response, retried) = match call.send(&usable).await {
        Ok(first) if first.status() == reqwest::StatusCode::UNAUTHORIZED => {
            call.after_unauthorized(read(first).await, &usable).await
        }
        // Slack answers errors with 200 and `ok: false`: a refused token is handled like a 401, a missing scope
        // like a 403 for one.
        Ok(first) if call.slack && first.status() == reqwest::StatusCode::OK => {
            let answer = peek(first).await;
            match answer.slack_error() {
                Some(SlackError::Refused(_)) => call.after_unauthorized(answer, &usable).await,
                Some(SlackError::MissingScope(needed)) => (call.scope_missing(answer, needed, &usable).await, false),
                _ => (answer, false),
            }
        }
        Ok(response) => (Answer::Streamed(response), false),
        Err(err) => (Answer::Failed(err), false),
    };
    let answer = match response {
        Answer::Streamed(response) if response.status() == reqwest::StatusCode::FORBIDDEN => {
            call.after_forbidden(response, &usable).await
        }
        other => other,
    };
    let status = answer.status();
    state.metrics.record_proxy_call(&connection, status);
    tracing::info!(
        target: "callback_gate::proxy",
        connection = %connection,
        identifier = %telemetry::escape(&identifier),
        method = %call.method,
        path = %telemetry::escape(&telemetry::excerpt(&raw_path, 512)),
        provider_status = status,
        retried,
        latency_ms = telemetry::millis_since(started),
        "proxied call"
    );
    answer.into_response()
}

/// One proxied call, which may be sent twice (after a 401 and a refresh).
struct Call<'a> {
    state: &'a AppState,
    connection: &'a str,
    identifier: &'a str,
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Bytes,
    /// How the account's credential is sent: `Authorization: Bearer {token}` unless the connection says otherwise.
    credential_header: HeaderName,
    credential_prefix: &'a str,
    /// Whether answers are read for Slack's `ok: false` errors.
    slack: bool,
    /// When the whole call must be over, retry included.
    deadline: Instant,
}

/// What goes back to the caller.
enum Answer {
    /// The provider's answer, its body streamed through.
    Streamed(reqwest::Response),
    /// The provider's answer, whose first part was read to understand it (Slack's), the rest streamed after it.
    Prefixed {
        status: reqwest::StatusCode,
        headers: reqwest::header::HeaderMap,
        prefix: Bytes,
        rest: reqwest::Response,
    },
    /// The provider's answer, read already (to understand it), with a reference where one was recorded.
    Read { status: reqwest::StatusCode, headers: reqwest::header::HeaderMap, body: Bytes, reference: Option<String> },
    /// No answer from the provider.
    Failed(reqwest::Error),
}

impl Answer {
    /// The provider's status, where it answered.
    fn status(&self) -> Option<u16> {
        match self {
            Self::Streamed(response) => Some(response.status().as_u16()),
            Self::Read { status, .. } | Self::Prefixed { status, .. } => Some(status.as_u16()),
            Self::Failed(_) => None,
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            Self::Streamed(response) => {
                let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                let headers = returned_headers(response.headers());
                let mut answer = Response::new(Body::from_stream(capped(response)));
                *answer.status_mut() = status;
                *answer.headers_mut() = headers;
                answer
            }
            Self::Prefixed { status, headers, prefix, rest } => {
                let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                let headers = returned_headers(&headers);
                let stream = futures_util::stream::once(async move { Ok(prefix) }).chain(capped(rest));
                let mut answer = Response::new(Body::from_stream(stream));
                *answer.status_mut() = status;
                *answer.headers_mut() = headers;
                answer
            }
            Self::Read { status, headers, body, reference } => {
                let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                let mut answer = Response::new(Body::from(body));
                *answer.status_mut() = status;
                let mut headers = returned_headers(&headers);
                headers.remove(header::CONTENT_LENGTH);
                if let Some(value) = reference.and_then(|r| HeaderValue::from_str(&r).ok()) {
                    headers.insert(HeaderName::from_static(REFERENCE_HEADER), value);
                }
                *answer.headers_mut() = headers;
                answer
            }
            Self::Failed(err) if err.is_timeout() => api_error(
                StatusCode::GATEWAY_TIMEOUT,
                "provider_timeout",
                format!("the provider's API did not answer within {} seconds", CALL_TIMEOUT.as_secs()),
            ),
            // Without the URL: its query is the caller's, and may carry what should not be echoed in errors.
            Self::Failed(err) => api_error(
                StatusCode::BAD_GATEWAY,
                "provider_unreachable",
                format!(
                    "the provider's API could not be reached: {}",
                    crate::provider::error_chain(&err.without_url())
                ),
            ),
        }
    }
}

impl Call<'_> {
    async fn send(&self, usable: &Usable) -> Result<reqwest::Response, reqwest::Error> {
        // What is left of the call's time; a retry that would start with none left still gets a second.
        let left = self.deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        let mut request = self
            .state
            .providers
            .http
            .request(self.method.clone(), self.url.clone())
            .timeout(left)
            .headers(self.headers.clone());
        let credential = format!("{}{}", self.credential_prefix, usable.tokens.access_token.expose());
        match HeaderValue::from_str(&credential) {
            Ok(mut value) => {
                value.set_sensitive(true);
                request = request.header(self.credential_header.clone(), value);
            }
            // A stored credential is checked when it is entered; one that cannot be a header value goes out
            // without it, and the provider's 401 says so.
            Err(_) => {
                tracing::warn!(target: "callback_gate::proxy", connection = self.connection, "the stored credential is not a valid header value")
            }
        }
        if !self.body.is_empty() {
            request = request.body(self.body.clone());
        } else if matches!(self.method, Method::POST | Method::PUT | Method::PATCH) {
            // An empty body goes out without a length otherwise, which some front ends (Google's) answer with 411.
            request = request.header(header::CONTENT_LENGTH, "0");
        }
        request.send().await
    }

    /// A 401: one refresh (unless another caller refreshed meanwhile) and one retry. A 401 to a fresh token is
    /// recorded on the account as `token_rejected`.
    async fn after_unauthorized(&self, first: Answer, usable: &Usable) -> (Answer, bool) {
        match tokens::refresh_after_rejection(self.state, self.connection, self.identifier, usable).await {
            Ok(fresh) => match self.send(&fresh).await {
                Ok(second) if second.status() == reqwest::StatusCode::UNAUTHORIZED => {
                    let second = read(second).await;
                    (self.rejected(second, &fresh).await, true)
                }
                Ok(second) if self.slack && second.status() == reqwest::StatusCode::OK => {
                    let second = peek(second).await;
                    match second.slack_error() {
                        Some(SlackError::Refused(_)) => (self.rejected(second, &fresh).await, true),
                        _ => (second, true),
                    }
                }
                Ok(second) => (Answer::Streamed(second), true),
                Err(err) => (Answer::Failed(err), true),
            },
            // Nothing to refresh with: the token the provider refused is all the account has.
            Err(TokenError::NoRefreshToken | TokenError::Expired(_)) => (self.rejected(first, usable).await, false),
            // The refresh was refused (recorded there, the account EXPIRED on invalid_grant) or could not run.
            Err(TokenError::Refused(recorded)) => (first.with_reference(recorded.reference.clone()), false),
            Err(err) => {
                tracing::warn!(target: "callback_gate::proxy", connection = self.connection, error = %err, "could not refresh after a 401");
                (first, false)
            }
        }
    }

    async fn rejected(&self, answer: Answer, usable: &Usable) -> Answer {
        let Answer::Read { status, ref body, .. } = answer else {
            return answer;
        };
        let error = match crate::provider::quirks::slack_error(body) {
            Some(SlackError::Refused(error)) => Some(error),
            _ => None,
        };
        let rejection =
            Rejection::TokenRejected { provider_status: status.as_u16(), provider_body: Some(excerpt_of(body)), error };
        let recorded = tokens::report_rejection(self.state, self.connection, self.identifier, usable, rejection).await;
        answer.with_reference(recorded.reference)
    }

    /// Slack's `missing_scope`: recorded on the account as `insufficient_scope` with the scopes it `needed`.
    async fn scope_missing(&self, answer: Answer, missing: Vec<String>, usable: &Usable) -> Answer {
        let Answer::Read { status, ref body, .. } = answer else {
            return answer;
        };
        let rejection = Rejection::InsufficientScope {
            missing,
            provider_status: status.as_u16(),
            provider_body: Some(excerpt_of(body)),
        };
        let recorded = tokens::report_rejection(self.state, self.connection, self.identifier, usable, rejection).await;
        answer.with_reference(recorded.reference)
    }

    /// A 403: when it is for a missing scope, recorded on the account as `insufficient_scope`, with the scopes the
    /// provider named.
    async fn after_forbidden(&self, response: reqwest::Response, usable: &Usable) -> Answer {
        let answer = read(response).await;
        let Answer::Read { status, ref headers, ref body, .. } = answer else {
            return answer;
        };
        let Some(missing) = missing_scopes(headers, body) else {
            return answer;
        };
        let rejection = Rejection::InsufficientScope {
            missing,
            provider_status: status.as_u16(),
            provider_body: Some(excerpt_of(body)),
        };
        let recorded = tokens::report_rejection(self.state, self.connection, self.identifier, usable, rejection).await;
        answer.with_reference(recorded.reference)
    }
}

impl Answer {
    /// The Slack error in an answer read whole, if it holds one.
    fn slack_error(&self) -> Option<SlackError> {
        match self {
            Self::Read { body, .. } => crate::provider::quirks::slack_error(body),
            _ => None,
        }
    }

    fn with_reference(self, reference: String) -> Self {
        match self {
            Self::Read { status, headers, body, .. } => {
                Self::Read { status, headers, body, reference: Some(reference) }
            }
            other => other,
        }
    }
}

/// Reads a provider answer to understand it, keeping at most [`INSPECTED_BYTES`] of its body (an error answer
/// longer than that is cut there).
async fn read(mut response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = INSPECTED_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= INSPECTED_BYTES {
                    break;
                }
            }
            Ok(None) => break,
            Err(err) if body.is_empty() => return Answer::Failed(err),
            Err(_) => break,
        }
    }
    Answer::Read { status, headers, body: Bytes::from(body), reference: None }
}

/// Reads a provider answer whole when it is at most [`INSPECTED_BYTES`] (so it can be understood); a longer one
/// keeps what was read and streams the rest after it.
async fn peek(mut response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > INSPECTED_BYTES {
                    return Answer::Prefixed { status, headers, prefix: Bytes::from(body), rest: response };
                }
            }
            Ok(None) => return Answer::Read { status, headers, body: Bytes::from(body), reference: None },
            Err(err) if body.is_empty() => return Answer::Failed(err),
            Err(_) => return Answer::Read { status, headers, body: Bytes::from(body), reference: None },
        }
    }
}

/// A redacted, bounded excerpt of a provider body, for the reference.
fn excerpt_of(body: &[u8]) -> String {
    crate::provider::exchange::redact_body(&String::from_utf8_lossy(body))
}

/// The scopes a 403 says are missing: `Some` (possibly empty, when it names none) when the 403 is about scopes.
///
/// Read from RFC 6750's `WWW-Authenticate: Bearer error="insufficient_scope", scope="..."`, GitHub's
/// `X-Accepted-OAuth-Scopes` against `X-OAuth-Scopes`, and the error bodies of Google
/// (`ACCESS_TOKEN_SCOPE_INSUFFICIENT`, `insufficientPermissions`) and Microsoft Graph ("Insufficient privileges").
pub fn missing_scopes(headers: &reqwest::header::HeaderMap, body: &[u8]) -> Option<Vec<String>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(challenge) = header("www-authenticate")
        && auth_param(&challenge, "error").is_some_and(|error| error == "insufficient_scope")
    {
        let scopes = auth_param(&challenge, "scope").unwrap_or_default();
        return Some(scopes.split_whitespace().map(str::to_owned).collect());
    }
    if let Some(accepted) = header("x-accepted-oauth-scopes").filter(|a| !a.trim().is_empty()) {
        let granted: Vec<String> = header("x-oauth-scopes")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        let accepted: Vec<String> =
            accepted.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
        // GitHub accepts any one of the listed scopes.
        if !accepted.iter().any(|scope| granted.contains(scope)) {
            return Some(accepted);
        }
    }
    let text = String::from_utf8_lossy(body);
    let scope_error = ["ACCESS_TOKEN_SCOPE_INSUFFICIENT", "insufficientPermissions", "insufficient_scope"]
        .iter()
        .any(|marker| text.contains(marker))
        || text.contains("Insufficient privileges");
    scope_error.then(Vec::new)
}

/// One `name="value"` (or `name=value`) parameter of an HTTP authentication challenge.
fn auth_param(challenge: &str, name: &str) -> Option<String> {
    let lower = challenge.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find(name) {
        let at = from + found;
        let before_ok = at == 0 || matches!(lower.as_bytes()[at - 1], b' ' | b',' | b'\t');
        let rest = challenge[at + name.len()..].trim_start();
        if before_ok && let Some(value) = rest.strip_prefix('=') {
            let value = value.trim_start();
            return Some(match value.strip_prefix('"') {
                Some(quoted) => quoted.split('"').next().unwrap_or_default().to_owned(),
                None => value.split([',', ' ']).next().unwrap_or_default().to_owned(),
            });
        }
        from = at + name.len();
    }
    None
}

/// The caller's headers that go on to the provider.
fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    without(headers, |name| DROPPED_REQUEST_HEADERS.contains(&name) || name.starts_with("x-forwarded-"))
}

/// The provider's headers that go back to the caller.
fn returned_headers(headers: &HeaderMap) -> HeaderMap {
    without(headers, |name| DROPPED_RESPONSE_HEADERS.contains(&name))
}

/// `headers` without those `dropped` names and those the `Connection` header names (hop-by-hop by declaration).
fn without(headers: &HeaderMap, dropped: impl Fn(&str) -> bool) -> HeaderMap {
    let named_by_connection: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|name| name.trim().to_ascii_lowercase()))
        .collect();
    headers
        .iter()
        .filter(|(name, _)| !dropped(name.as_str()) && !named_by_connection.iter().any(|named| named == name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// The provider's body as a stream that ends in an error past [`MAX_RESPONSE_BYTES`].
fn capped(response: reqwest::Response) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(Some((response, 0usize)), |state| async move {
        let (mut response, sent) = state?;
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let sent = sent + chunk.len();
                if sent > MAX_RESPONSE_BYTES {
                    tracing::warn!(target: "callback_gate::proxy", limit = MAX_RESPONSE_BYTES, "a proxied answer was cut at the size limit");
                    return Some((Err(std::io::Error::other("the provider's answer is too large")), None));
                }
                Some((Ok(chunk), Some((response, sent))))
            }
            Ok(None) => None,
            Err(err) => Some((Err(std::io::Error::other(err)), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://slack.com/api").unwrap()
    }

    #[test]
    fn paths_below_the_base_are_called_as_sent() {
        let cases = [
            ("chat.postMessage", None, "https://slack.com/api/chat.postMessage"),
            (
                "gmail/v1/users/me/messages",
                Some("q=from%3Abob&maxResults=5"),
                "https://slack.com/api/gmail/v1/users/me/messages?q=from%3Abob&maxResults=5",
            ),
            ("users/me", None, "https://slack.com/api/users/me"),
            ("a%20b", None, "https://slack.com/api/a%20b"),
            ("v1.0/me", None, "https://slack.com/api/v1.0/me"),
            ("users/alice@example.com", None, "https://slack.com/api/users/alice@example.com"),
            ("items/", None, "https://slack.com/api/items/"),
            ("", None, "https://slack.com/api/"),
            ("..a/b..", None, "https://slack.com/api/..a/b.."),
        ];
        for (path, query, expected) in cases {
            assert_eq!(target(&base(), path, query).map(String::from), Ok(expected.to_owned()), "{path}");
        }
        let root = Url::parse("https://api.github.com").unwrap();
        assert_eq!(target(&root, "user/repos", None).map(String::from), Ok("https://api.github.com/user/repos".into()));
    }

    #[test]
    fn paths_that_could_leave_the_base_are_refused() {
        let cases = [
            ("..", PathError::DotSegment),
            ("../admin", PathError::DotSegment),
            ("a/../../x", PathError::DotSegment),
            ("a/./b", PathError::DotSegment),
            ("%2e%2e/admin", PathError::DotSegment),
            ("%2E%2e", PathError::DotSegment),
            (".%2E/x", PathError::DotSegment),
            ("%2e", PathError::DotSegment),
            ("a%2Fb", PathError::EncodedSeparator),
            ("a%2fb", PathError::EncodedSeparator),
            ("a%5Cb", PathError::EncodedSeparator),
            ("%2F%2Fevil.example", PathError::EncodedSeparator),
            ("https:%2F%2Fevil.example", PathError::EncodedSeparator),
            ("/evil.example", PathError::EmptySegment),
            ("//evil.example/x", PathError::EmptySegment),
            ("a//b", PathError::EmptySegment),
            ("https:evil.example", PathError::AbsoluteUrl),
            ("javascript:alert(1)", PathError::AbsoluteUrl),
            ("a\\b", PathError::BadCharacter),
            ("a\u{7f}b", PathError::BadCharacter),
            ("a%00b", PathError::BadCharacter),
            ("a%0ab", PathError::BadCharacter),
            ("é", PathError::BadCharacter),
            ("a%zz", PathError::BadEncoding),
            ("a%2", PathError::BadEncoding),
        ];
        for (path, expected) in cases {
            assert_eq!(target(&base(), path, None), Err(expected), "{path}");
        }
    }

    #[test]
    fn credentials_cookies_and_hop_by_hop_headers_are_not_forwarded() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer the-api-key"),
            ("cookie", "session=1"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("x-forwarded-for", "10.0.0.1"),
            ("host", "app.example.com"),
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("x-custom", "kept"),
        ] {
            headers.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let forwarded = forwarded_headers(&headers);
        let names: Vec<&str> = forwarded.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "accept", "x-custom"]);
    }

    #[test]
    fn scope_errors_are_recognised_where_providers_put_them() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "www-authenticate",
            HeaderValue::from_static(r#"Bearer realm="api", error="insufficient_scope", scope="mail.send mail.read""#),
        );
        assert_eq!(missing_scopes(&headers, b""), Some(vec!["mail.send".into(), "mail.read".into()]));
        let mut github = reqwest::header::HeaderMap::new();
        github.insert("x-accepted-oauth-scopes", HeaderValue::from_static("repo, public_repo"));
        github.insert("x-oauth-scopes", HeaderValue::from_static("user, gist"));
        assert_eq!(missing_scopes(&github, b""), Some(vec!["repo".into(), "public_repo".into()]));
        github.insert("x-oauth-scopes", HeaderValue::from_static("user, repo"));
        assert_eq!(missing_scopes(&github, b""), None, "a 403 for another reason");
        let google = br#"{"error":{"code":403,"status":"PERMISSION_DENIED","details":[{"reason":"ACCESS_TOKEN_SCOPE_INSUFFICIENT"}]}}"#;
        assert_eq!(missing_scopes(&reqwest::header::HeaderMap::new(), google), Some(vec![]));
        assert_eq!(missing_scopes(&reqwest::header::HeaderMap::new(), br#"{"error":"forbidden"}"#), None);
    }
}

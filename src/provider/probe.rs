//! Probes: one read-only call with an account's credential (a "who am I" endpoint: userinfo, `auth.test`,
//! `/user`, or a connection's `verify_path`) that says whether the provider accepts it. The hosted credential form
//! checks a key this way before storing it, and `POST .../verify` checks a stored connection end to end.

use std::time::{Duration, Instant};

use serde_json::Value;
use url::Url;

use super::exchange::{self, ReadError};
use super::quirks::{self, SlackError};
use crate::catalog::Quirk;
use crate::config::ConnectionSettings;
use crate::crypto::Secret;

/// Largest probe answer read (only to find an error inside a 200, as Slack sends them).
const MAX_PROBE_BODY_BYTES: usize = 64 * 1024;

/// What the provider's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx (and, for Slack, `ok: true`).
    Accepted,
    /// The provider refused the credential: 401 or 403, or Slack's `invalid_auth` family.
    Refused,
    /// No usable answer: a timeout, a connection failure, a 5xx, a redirect, or another status.
    Failed,
}

/// A probe's outcome, with what a developer needs to see why.
#[derive(Debug, Clone)]
pub struct Probed {
    pub verdict: Verdict,
    pub status: Option<u16>,
    /// The provider's own error code, where its body names one.
    pub error: Option<String>,
    /// A redacted excerpt of the answer, for failures.
    pub body: Option<String>,
    /// One line saying what happened, without the credential or the query.
    pub detail: String,
    pub latency: Duration,
}

/// GETs `url` with the credential as the connection sends it (`{credential_header}: {credential_prefix}{value}`).
pub async fn call(http: &reqwest::Client, connection: &ConnectionSettings, url: &Url, credential: &Secret) -> Probed {
    let started = Instant::now();
    let shown = format!("GET {}{}", url.origin().ascii_serialization(), url.path());
    let value = format!("{}{}", connection.credential_prefix, credential.expose());
    let request = http
        .get(url.clone())
        .header(connection.credential_header.as_str(), value)
        .header(reqwest::header::ACCEPT, "application/json");
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) => {
            let detail = if err.is_timeout() {
                format!("{shown} did not answer within token_timeout_seconds")
            } else {
                // The chain names the host and the failure, never the URL's query.
                format!("{shown} failed: {}", super::error_chain(&err.without_url()))
            };
            return probed(Verdict::Failed, None, None, None, detail, started);
        }
    };
    let status = response.status().as_u16();
    let body = match exchange::read_capped(response, MAX_PROBE_BODY_BYTES).await {
        Ok(body) => body,
        Err(ReadError::TooLarge) => Vec::new(),
        Err(ReadError::Request(err)) => {
            let detail =
                format!("{shown} answered HTTP {status} but its body could not be read: {}", err.without_url());
            return probed(Verdict::Failed, Some(status), None, None, detail, started);
        }
    };
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    let excerpt = || Some(exchange::redact_body(&String::from_utf8_lossy(&body)));
    if connection.quirk == Some(Quirk::Slack)
        && let Some(slack) = quirks::slack_error(&body)
    {
        let (verdict, error) = match slack {
            SlackError::Refused(error) => (Verdict::Refused, error),
            SlackError::MissingScope(_) => (Verdict::Failed, "missing_scope".to_owned()),
            SlackError::Other(error) => (Verdict::Failed, error),
        };
        let detail = format!("{shown} answered HTTP {status} with ok: false, error \"{error}\"");
        return probed(verdict, Some(status), Some(error), excerpt(), detail, started);
    }
    let error = json.as_ref().and_then(|v| v.get("error")).and_then(Value::as_str).map(str::to_owned);
    match status {
        200..=299 => {
            probed(Verdict::Accepted, Some(status), None, None, format!("{shown} answered HTTP {status}"), started)
        }
        401 | 403 => {
            let detail = format!("{shown} answered HTTP {status}: the provider refused the credential");
            probed(Verdict::Refused, Some(status), error, excerpt(), detail, started)
        }
        _ => {
            let detail = format!("{shown} answered HTTP {status}");
            probed(Verdict::Failed, Some(status), error, excerpt(), detail, started)
        }
    }
}

fn probed(
    verdict: Verdict,
    status: Option<u16>,
    error: Option<String>,
    body: Option<String>,
    detail: String,
    started: Instant,
) -> Probed {
    Probed { verdict, status, error, body, detail, latency: started.elapsed() }
}

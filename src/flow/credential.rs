//! Connections whose users give a credential instead of consenting at a provider (`api_key` and `basic`): the
//! hosted form a started flow shows, and its submission, which is checked against the provider's probe before the
//! credential is sealed and stored like OAuth tokens.
//!
//! The form's anti-forgery token is the flow's signed state: it is only ever written into the page of the browser
//! that started the flow, and the submission is claimed with that browser's cookie, exactly like a callback. So a
//! submission without the cookie, with a forged or foreign token, or sent twice ends as `browser_mismatch`,
//! `state_invalid` or `flow_already_used`, and stores nothing.

use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use time::OffsetDateTime;

use super::{Ending, FailureContext, claim, connect, fail, finish, wait_for};
use crate::catalog::Kind;
use crate::config::ConnectionSettings;
use crate::context::Context;
use crate::crypto::Secret;
use crate::outcome::Failure;
use crate::provider::Provider;
use crate::provider::exchange::Tokens;
use crate::provider::probe::{self, Probed, Verdict};
use crate::store::FlowRecord;

/// Longest credential accepted (an API key, a username or a password); real ones are far shorter.
pub const MAX_CREDENTIAL_BYTES: usize = 4096;

/// Why a submitted form is shown again instead of being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormProblem {
    /// A field was left empty.
    Missing,
    /// A field is longer than [`MAX_CREDENTIAL_BYTES`] or holds a control character (or a username a colon).
    Invalid,
}

impl FormProblem {
    /// The page text that says it.
    pub fn message_id(self) -> &'static str {
        match self {
            Self::Missing => "credential-missing",
            Self::Invalid => "credential-malformed",
        }
    }
}

/// What the hosted form shows.
#[derive(Debug)]
pub struct CredentialForm {
    /// The connection, for the form's target.
    pub connection: String,
    pub display_name: String,
    pub kind: Kind,
    /// The flow's signed state, the form's anti-forgery token.
    pub token: Secret,
    pub problem: Option<FormProblem>,
}

impl CredentialForm {
    pub fn new(connection: &ConnectionSettings, token: Secret, problem: Option<FormProblem>) -> Self {
        Self {
            connection: connection.name.clone(),
            display_name: connection.display_name.clone(),
            kind: connection.kind,
            token,
            problem,
        }
    }
}

/// A posted form, as the browser sent it.
#[derive(Default, serde::Deserialize)]
pub struct CredentialSubmission {
    pub token: Option<Secret>,
    pub api_key: Option<Secret>,
    pub username: Option<Secret>,
    pub password: Option<Secret>,
}

impl std::fmt::Debug for CredentialSubmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialSubmission { [redacted] }")
    }
}

/// The credential a form gives, as the proxy will send it after the connection's prefix: the key itself, or
/// base64 of `username:password` (RFC 7617).
fn credential_of(kind: Kind, submission: &CredentialSubmission) -> Result<Secret, FormProblem> {
    let field = |value: &Option<Secret>| -> Result<String, FormProblem> {
        let value = value.as_ref().map(|v| v.expose().trim()).unwrap_or_default();
        if value.is_empty() {
            return Err(FormProblem::Missing);
        }
        if value.len() > MAX_CREDENTIAL_BYTES || value.chars().any(char::is_control) {
            return Err(FormProblem::Invalid);
        }
        Ok(value.to_owned())
    };
    match kind {
        Kind::Basic => {
            let username = field(&submission.username)?;
            let password = field(&submission.password)?;
            if username.contains(':') {
                return Err(FormProblem::Invalid);
            }
            Ok(Secret::new(STANDARD.encode(format!("{username}:{password}"))))
        }
        // Keys are printable ASCII: anything else was pasted by mistake and could not be sent in a header.
        _ => match field(&submission.api_key)? {
            key if key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') => Ok(Secret::new(key)),
            _ => Err(FormProblem::Invalid),
        },
    }
}

/// `POST /connect/credential/{connection}`: checks the form, claims the flow for this browser, checks the
/// credential with the provider and stores it.
pub async fn submit(
    state: &Context,
    connection: &str,
    submission: CredentialSubmission,
    browser: Option<Secret>,
) -> Ending {
    let started = Instant::now();
    let path_context = FailureContext { connection: Some(connection.to_owned()), ..FailureContext::default() };
    let provider = match state.providers.get(connection) {
        Some(provider) if !provider.connection.kind.is_oauth() => provider,
        Some(_) => {
            let failure = Failure::new("invalid_request")
                .with_detail(format!("connection \"{connection}\" uses OAuth; it has no credential form"));
            return fail(state, failure, path_context, started).await;
        }
        None => {
            let failure = Failure::new("connection_unknown").with_detail(format!(
                "a credential form was posted for connection \"{}\", which is not configured",
                crate::telemetry::escape(connection)
            ));
            return fail(state, failure, FailureContext::default(), started).await;
        }
    };
    let Some(token) = submission.token.as_ref().filter(|t| !t.expose().is_empty()) else {
        let failure = Failure::new("state_missing").with_detail("the credential form came without its token");
        return fail(state, failure, path_context, started).await;
    };
    if !state.settings.secret_key.verify_state(token.expose()) {
        let failure = Failure::new("state_invalid").with_detail("the credential form's token does not verify");
        return fail(state, failure, path_context, started).await;
    }
    // An empty or unusable field is answered with the form again, before the flow is claimed, so the user can
    // correct it. Nothing of what was typed is sent back.
    let credential = match credential_of(provider.connection.kind, &submission) {
        Ok(credential) => credential,
        Err(problem) => {
            let form = CredentialForm::new(&provider.connection, token.clone(), Some(problem));
            return Ending::Form { form, set_browser: None };
        }
    };
    let flow = match claim(state, token, browser.as_ref(), path_context, started).await {
        Ok(claimed) => claimed,
        Err(ending) => return ending,
    };
    let finishing = {
        let (state, flow) = (state.clone(), flow.clone());
        state.tasks.clone().spawn(async move {
            let work = check_and_store(&state, &provider, &flow, credential, started);
            finish(&state, &flow, work, started).await
        })
    };
    wait_for(state, &flow, finishing, started).await
}

async fn check_and_store(
    state: &Context,
    provider: &Provider,
    flow: &FlowRecord,
    credential: Secret,
    started: Instant,
) -> Result<String, Failure> {
    if flow.connection != provider.name() {
        return Err(Failure::new("state_invalid").with_detail(format!(
            "the flow belongs to connection \"{}\" but the form was posted for \"{}\"",
            flow.connection,
            provider.name()
        )));
    }
    if OffsetDateTime::now_utc() >= flow.expires_at {
        return Err(Failure::new("session_expired").with_detail(format!(
            "the form was sent {} s after the flow started; flows last {} s",
            (OffsetDateTime::now_utc() - flow.created_at).whole_seconds(),
            state.settings.flow_ttl.as_secs()
        )));
    }
    let mut provider_ms = 0.0;
    if let Some(probe) = &provider.connection.probe {
        let probed = probe::call(&state.providers.http, &provider.connection, probe, &credential).await;
        provider_ms = probed.latency.as_secs_f64() * 1000.0;
        if let Some(failure) = refusal(&probed) {
            return Err(failure);
        }
    }
    let tokens = Tokens {
        access_token: credential,
        refresh_token: None,
        id_token: None,
        token_type: None,
        expires_at: None,
        scope: None,
        metadata: Default::default(),
    };
    connect(state, provider, flow, &tokens, Vec::new(), provider_ms, started).await
}

/// The failure a probe's answer means, if it is not a success: the provider refusing the credential
/// (`credential_rejected`, which offers to try again) or the check not completing (`credential_check_failed`).
pub fn refusal(probed: &Probed) -> Option<Failure> {
    let code = match probed.verdict {
        Verdict::Accepted => return None,
        Verdict::Refused => "credential_rejected",
        Verdict::Failed => "credential_check_failed",
    };
    let mut failure = Failure::new(code).with_detail(probed.detail.clone());
    failure.provider_status = probed.status;
    failure.error = probed.error.clone();
    failure.provider_body = probed.body.clone();
    Some(failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission(api_key: Option<&str>, username: Option<&str>, password: Option<&str>) -> CredentialSubmission {
        CredentialSubmission {
            token: None,
            api_key: api_key.map(Secret::new),
            username: username.map(Secret::new),
            password: password.map(Secret::new),
        }
    }

    #[test]
    fn a_form_gives_the_key_or_basic_credentials() {
        assert_eq!(credential_of(Kind::ApiKey, &submission(Some(" k-1 "), None, None)).unwrap().expose(), "k-1");
        let basic = credential_of(Kind::Basic, &submission(None, Some("ada"), Some("pa ss"))).unwrap();
        assert_eq!(STANDARD.decode(basic.expose()).unwrap(), b"ada:pa ss");
    }

    #[test]
    fn empty_long_or_control_fields_are_refused() {
        assert_eq!(credential_of(Kind::ApiKey, &submission(Some("  "), None, None)).err(), Some(FormProblem::Missing));
        assert_eq!(credential_of(Kind::ApiKey, &submission(None, None, None)).err(), Some(FormProblem::Missing));
        let long = "k".repeat(MAX_CREDENTIAL_BYTES + 1);
        assert_eq!(credential_of(Kind::ApiKey, &submission(Some(&long), None, None)).err(), Some(FormProblem::Invalid));
        assert_eq!(
            credential_of(Kind::ApiKey, &submission(Some("a\nb"), None, None)).err(),
            Some(FormProblem::Invalid)
        );
        assert_eq!(
            credential_of(Kind::ApiKey, &submission(Some("kl\u{e9}"), None, None)).err(),
            Some(FormProblem::Invalid)
        );
        assert_eq!(
            credential_of(Kind::Basic, &submission(None, Some("a:b"), Some("p"))).err(),
            Some(FormProblem::Invalid)
        );
        assert_eq!(credential_of(Kind::Basic, &submission(None, Some("a"), None)).err(), Some(FormProblem::Missing));
        assert!(format!("{:?}", submission(Some("k-1"), None, None)).contains("redacted"));
    }
}

//! Flows: minting authorization links, starting a flow when a link is opened, and terminating the provider's
//! callback. Every way this can end is an [`Ending`]: a redirect, or a failure that has been recorded under a
//! reference and logged once.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use url::Url;

use crate::account::{AccountStatus, Identifier};
use crate::config::Settings;
use crate::crypto::{self, Pkce, Secret};
use crate::outcome::Failure;
use crate::provider::Provider;
use crate::provider::exchange::{self, Tokens};
use crate::server::AppState;
use crate::store::{
    Claim, FlowRecord, FlowStatus, LinkRecord, Millis, OutcomeEvent, PendingVerification, Store, StoreError, TokenWrite,
};
use crate::telemetry;

pub mod query;

pub use query::{CallbackQuery, QueryError};

/// Who a failure concerns, for its record, its log line and its page.
#[derive(Debug, Clone, Default)]
pub struct FailureContext {
    pub connection: Option<String>,
    pub identifier: Option<String>,
    pub flow_id: Option<String>,
    pub link_id: Option<String>,
    pub return_to: Option<String>,
    /// Whether the failure becomes the account's `last_error`. Replays and foreign browsers do not speak for the
    /// account's owner, so they leave it alone.
    pub touches_account: bool,
}

impl FailureContext {
    pub fn of_flow(flow: &FlowRecord) -> Self {
        Self {
            connection: Some(flow.connection.clone()),
            identifier: Some(flow.identifier.clone()),
            flow_id: Some(flow.id.clone()),
            link_id: Some(flow.link_id.clone()),
            return_to: flow.return_to.clone(),
            touches_account: true,
        }
    }
}

/// A failure that was recorded: what the page needs to render it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub failure: Failure,
    pub reference: String,
    pub context: FailureContext,
    pub at: OffsetDateTime,
}

/// What a failed flow's result page shows, rebuilt from the flow and its stored outcome event, so the page is the
/// same on every refresh.
pub fn stored_failure(flow: &FlowRecord, event: Option<OutcomeEvent>) -> Recorded {
    let code = flow.outcome_code.as_deref().unwrap_or("internal_error");
    let cause = event.as_ref().and_then(|e| e.cause.as_deref());
    let mut failure = Failure::from_entry(crate::outcome::entry(code, cause));
    if let Some(event) = &event {
        failure.error = event.error.clone();
        failure.error_description = event.error_description.clone();
        failure.error_uri = event.error_uri.clone();
        failure.detail = event.detail.clone();
        let specifics = event.hint.strip_prefix(failure.entry.hint).map(str::trim).filter(|s| !s.is_empty());
        failure.hint_detail = specifics.map(str::to_owned);
    }
    Recorded {
        failure,
        reference: flow.reference.clone().unwrap_or_default(),
        context: FailureContext::of_flow(flow),
        at: event.map_or(flow.created_at, |e| e.created_at.0),
    }
}

/// How a browser request ends.
#[derive(Debug)]
pub enum Ending {
    /// Send the browser to the provider (start) or to the result page (callback).
    Redirect { location: String, set_browser: Option<Secret> },
    /// Render the failure page right here.
    Failed(Box<Recorded>),
}

/// The secrets a flow keeps for its callback, sealed in the flow record.
#[derive(Serialize, Deserialize)]
struct FlowSecrets {
    verifier: Secret,
    nonce: Option<Secret>,
}

/// The public form of an authorization link: `{id}.{signature}`. The signature lets a forged or truncated link be
/// refused before the store is asked.
pub fn link_token(settings: &Settings, link_id: &str) -> String {
    format!("{link_id}.{}", settings.secret_key.sign_link(link_id))
}

pub fn link_url(settings: &Settings, link_id: &str) -> String {
    format!("{}connect/start/{}", settings.public_url, link_token(settings, link_id))
}

/// Mints an authorization link; the account becomes PENDING_AUTH if it is new.
pub async fn mint_link(
    settings: &Settings,
    store: &Store,
    connection: &str,
    identifier: &Identifier,
    return_to: Option<&Url>,
) -> Result<(String, OffsetDateTime), StoreError> {
    let now = OffsetDateTime::now_utc();
    let link = LinkRecord {
        id: crypto::random_token::<16>(),
        connection: connection.to_owned(),
        identifier: identifier.as_str().to_owned(),
        return_to: return_to.map(|u| u.to_string()),
        created_at: now,
        expires_at: now + settings.link_ttl,
    };
    store.create_link(&link, settings.limits.links_per_identifier).await?;
    Ok((link_url(settings, &link.id), link.expires_at))
}

/// A browser-binding cookie value as sent back by a browser, if well formed.
pub fn parse_browser(value: Option<&str>) -> Option<Secret> {
    value.filter(|v| crypto::is_random_token(v)).map(Secret::new)
}

/// `GET /connect/start/{link}`: checks the link and starts a flow bound to this browser.
pub async fn start(state: &AppState, token: &str, browser: Option<Secret>) -> Ending {
    let started = Instant::now();
    let Some((link_id, signature)) = token.split_once('.') else {
        return fail(
            state,
            Failure::new("link_invalid").with_detail("the link has no signature"),
            FailureContext::default(),
            started,
        )
        .await;
    };
    if link_id.len() > 64 || !state.settings.secret_key.verify_link(link_id, signature) {
        return fail(
            state,
            Failure::new("link_invalid").with_detail("the link's signature does not verify"),
            FailureContext::default(),
            started,
        )
        .await;
    }
    let link = match state.store.find_link(link_id).await {
        Ok(Some(link)) => link,
        Ok(None) => {
            let failure = Failure::new("link_invalid")
                .with_detail("the link is signed but not stored (swept or from another database)");
            return fail(state, failure, FailureContext::default(), started).await;
        }
        Err(err) => {
            return fail(state, store_failure(&err), FailureContext::default(), started).await;
        }
    };
    let context = FailureContext {
        connection: Some(link.connection.clone()),
        identifier: Some(link.identifier.clone()),
        link_id: Some(link.id.clone()),
        return_to: link.return_to.clone(),
        ..FailureContext::default()
    };
    let now = OffsetDateTime::now_utc();
    if now >= link.expires_at {
        let failure = Failure::new("link_expired")
            .with_detail(format!("the link expired at {}", telemetry::rfc3339(link.expires_at)));
        return fail(state, failure, context, started).await;
    }
    let Some(provider) = state.providers.get(&link.connection) else {
        let failure = Failure::new("connection_unknown")
            .with_detail(format!("connection \"{}\" is not configured", link.connection));
        return fail(state, failure, context, started).await;
    };

    if provider.connection.user_verification && state.settings.app.user_verify_url.is_none() {
        // Caught before the user consents: the flow could not finish without a page to verify the user on.
        let failure = Failure::new("user_verify_url_not_configured").with_detail(format!(
            "connection \"{}\" has user_verification on, but app.user_verify_url is not set",
            link.connection
        ));
        return fail(state, failure, context, started).await;
    }
    let (browser, set_browser) = match browser {
        Some(existing) => (existing, None),
        None => {
            let fresh = Secret::new(crypto::random_token::<32>());
            (fresh.clone(), Some(fresh))
        }
    };
    let flow_id = crypto::random_token::<16>();
    let flow_state = state.settings.secret_key.new_state();
    let pkce = Pkce::new();
    let nonce = provider.is_oidc().then(|| Secret::new(crypto::random_token::<32>()));
    let secrets = FlowSecrets { verifier: pkce.verifier.clone(), nonce: nonce.clone() };
    let Ok(secrets_json) = serde_json::to_vec(&secrets) else {
        unreachable!("flow secrets always serialise");
    };
    let flow = FlowRecord {
        id: flow_id.clone(),
        state_hash: crypto::hash_hex(flow_state.expose()),
        link_id: link.id.clone(),
        connection: link.connection.clone(),
        identifier: link.identifier.clone(),
        browser_hash: crypto::hash_hex(browser.expose()),
        sealed_secrets: state.settings.secret_key.seal(&secrets_json, &crypto::flow_associated_data(&flow_id)),
        return_to: link.return_to.clone(),
        status: FlowStatus::Started,
        outcome_code: None,
        reference: None,
        created_at: now,
        expires_at: now + state.settings.flow_ttl,
    };
    if let Err(err) = state.store.create_flow(&flow, state.settings.limits.flows_per_identifier).await {
        return fail(state, store_failure(&err), context, started).await;
    }
    let location =
        provider.authorization_request(flow_state.expose(), &pkce.challenge, nonce.as_ref().map(Secret::expose));
    tracing::info!(
        target: "callback_gate::flow",
        event = "flow_started",
        flow = %flow.id,
        connection = %flow.connection,
        identifier = %telemetry::escape(&flow.identifier),
        latency_ms = telemetry::millis_since(started),
        "flow started"
    );
    Ending::Redirect { location: location.into(), set_browser }
}

/// `GET /connect/callback/{connection}`: validates the flow, exchanges the code and stores the account.
pub async fn callback(state: &AppState, connection: &str, raw_query: Option<&str>, browser: Option<Secret>) -> Ending {
    let started = Instant::now();
    let path_context = FailureContext { connection: Some(connection.to_owned()), ..FailureContext::default() };
    let Some(provider) = state.providers.get(connection) else {
        let failure = Failure::new("connection_unknown").with_detail(format!(
            "a callback arrived for connection \"{}\", which is not configured",
            telemetry::escape(connection)
        ));
        return fail(state, failure, FailureContext::default(), started).await;
    };
    let query = match CallbackQuery::parse(raw_query) {
        Ok(query) => query,
        Err(err) => {
            return fail(state, Failure::new("invalid_request").with_detail(err.to_string()), path_context, started)
                .await;
        }
    };
    let Some(flow_state) = query.state.as_ref().filter(|s| !s.is_empty()) else {
        let mut failure = Failure::new("state_missing").with_detail("the callback has no state parameter");
        failure.error = query.error.clone();
        failure.error_description = query.error_description.clone();
        return fail(state, failure, path_context, started).await;
    };
    // Only states this deployment signed are looked up: a forged or garbled one costs no store access.
    if !state.settings.secret_key.verify_state(flow_state.expose()) {
        let failure = Failure::new("state_invalid").with_detail(
            "the state's signature does not verify: forged, altered, or signed with a secret key this deployment no longer holds",
        );
        return fail(state, failure, path_context, started).await;
    }
    let state_hash = crypto::hash_hex(flow_state.expose());
    let browser_hash = browser.as_ref().map(|b| crypto::hash_hex(b.expose()));
    let (flow, claim) = match state.store.claim_flow(&state_hash, browser_hash).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            let failure = Failure::new("state_invalid").with_detail("the state matches no flow");
            return fail(state, failure, path_context, started).await;
        }
        Err(err) => return fail(state, store_failure(&err), path_context, started).await,
    };
    let mut context = FailureContext::of_flow(&flow);
    match claim {
        Claim::Claimed => {}
        Claim::OtherBrowser => {
            context.touches_account = false;
            let detail = if browser.is_some() {
                "the browser-binding cookie belongs to another browser"
            } else {
                "the callback carried no browser-binding cookie"
            };
            return fail(state, Failure::new("browser_mismatch").with_detail(detail), context, started).await;
        }
        Claim::NotStarted => {
            context.touches_account = false;
            let failure =
                Failure::new("flow_already_used").with_detail(format!("the flow was already {:?}", flow.status));
            return fail(state, failure, context, started).await;
        }
    }
    // From here on this request owns the flow: every ending records it and sends the browser to the result page.
    let result = finish_claimed(state, &provider, &flow, &query, started).await;
    match result {
        Ok(location) => Ending::Redirect { location, set_browser: None },
        Err(failure) => {
            let recorded = record(state, failure, context, started).await;
            if let Err(err) =
                state.store.fail_flow(&flow.id, recorded.failure.code(), &recorded.reference, recorded.at).await
            {
                tracing::error!(target: "callback_gate::flow", flow = %flow.id, error = %err, "could not mark the flow failed");
            }
            Ending::Redirect { location: result_path(&flow.id), set_browser: None }
        }
    }
}

pub fn result_path(flow_id: &str) -> String {
    format!("/connect/result/{flow_id}")
}

async fn finish_claimed(
    state: &AppState,
    provider: &Provider,
    flow: &FlowRecord,
    query: &CallbackQuery,
    started: Instant,
) -> Result<String, Failure> {
    let now = OffsetDateTime::now_utc();
    if flow.connection != provider.name() {
        return Err(Failure::new("state_invalid").with_detail(format!(
            "the flow belongs to connection \"{}\" but the callback arrived on \"{}\"",
            flow.connection,
            provider.name()
        )));
    }
    if now >= flow.expires_at {
        let age = (now - flow.created_at).whole_seconds();
        return Err(Failure::new("session_expired").with_detail(format!(
            "the provider redirected back {age} s after the flow started; flows last {} s",
            state.settings.flow_ttl.as_secs()
        )));
    }
    if let Some(failure) = issuer_failure(provider, query) {
        return Err(failure);
    }
    let code = match (&query.code, &query.error) {
        // RFC 6749 section 4.1.2: a callback carries either a code or an error, never both and never neither.
        (Some(_), Some(_)) => {
            return Err(
                with_query(Failure::new("invalid_request"), query).with_detail("the callback has both code and error")
            );
        }
        (None, None) => {
            return Err(with_query(Failure::new("invalid_request"), query)
                .with_detail("the callback has neither code nor error"));
        }
        (None, Some(error)) if error.is_empty() || !error.chars().all(query::is_rfc6749_text) => {
            return Err(with_query(Failure::new("invalid_request"), query)
                .with_detail("the callback's error is empty or outside RFC 6749's character set"));
        }
        (None, Some(error)) => {
            let mut failure =
                Failure::from_callback_error(error, query.error_description.as_deref(), query.error_uri.as_deref());
            failure.iss = query.iss.clone();
            return Err(failure);
        }
        (Some(code), None) if code.is_empty() => {
            return Err(with_query(Failure::new("code_missing"), query).with_detail("the callback's code is empty"));
        }
        (Some(code), None) => code,
    };
    let secrets: FlowSecrets = state
        .settings
        .secret_key
        .open(&flow.sealed_secrets, &crypto::flow_associated_data(&flow.id))
        .ok()
        .and_then(|plain| serde_json::from_slice(&plain).ok())
        .ok_or_else(|| {
            Failure::new("internal_error")
                .with_detail("the flow's sealed secrets could not be opened (was the secret key changed?)")
        })?;

    let exchanged = exchange::exchange_code(&state.providers.http, provider, code, &secrets.verifier).await;
    let provider_ms = exchanged.provider_latency.as_secs_f64() * 1000.0;
    let tokens = exchanged.result.map_err(|err| Failure::from_exchange(&err))?;
    if let Some(jwks) = &provider.jwks {
        validate_id_token(state, provider, jwks, &tokens, secrets.nonce.as_ref()).await?;
    }
    let scopes = provider.parse_granted_scopes(tokens.scope.as_deref());
    let missing = missing_scopes(&provider.connection.scopes, tokens.scope.as_deref(), &scopes);
    if !missing.is_empty() {
        // The tokens are dropped here: an account is never made ACTIVE for scopes it lacks.
        return Err(Failure::new("insufficient_scope")
            .with_detail(format!("the provider granted \"{}\"", tokens.scope.as_deref().unwrap_or_default()))
            .with_hint(format!("Missing scopes: {}.", missing.join(", "))));
    }
    let sealed = seal_tokens(state, &flow.connection, &flow.identifier, &tokens)
        .ok_or_else(|| Failure::new("internal_error").with_detail("the tokens could not be serialised for sealing"))?;
    let write = TokenWrite {
        connection: flow.connection.clone(),
        identifier: flow.identifier.clone(),
        status: AccountStatus::Active,
        scopes,
        sealed_tokens: sealed,
        key_id: state.settings.secret_key.id().to_owned(),
        token_expires_at: tokens.expires_at,
    };
    let post_auth = |err: StoreError| {
        Failure::from_entry(crate::outcome::entry("failed_to_exchange_token", Some("post_auth_hook")))
            .with_detail(err.to_string())
    };
    let (outcome, location) = match &state.settings.app.user_verify_url {
        Some(verify_url) if provider.connection.user_verification => {
            // The tokens wait until the app confirms that its logged-in user is the identifier the link was for.
            let request_id = Secret::new(crypto::random_token::<32>());
            let now = OffsetDateTime::now_utc();
            let expires_at = now + state.settings.flow_ttl;
            let request_hash = crypto::hash_hex(request_id.expose());
            state
                .store
                .hold_for_verification(&request_hash, &flow.id, &write, expires_at, now)
                .await
                .map_err(post_auth)?;
            let mut location = verify_url.clone();
            location.query_pairs_mut().append_pair("auth_request_id", request_id.expose());
            ("pending_verification", String::from(location))
        }
        _ => {
            state.store.complete_flow(&flow.id, &write, OffsetDateTime::now_utc()).await.map_err(post_auth)?;
            ("connected", result_path(&flow.id))
        }
    };
    let latency_ms = telemetry::millis_since(started);
    tracing::info!(
        target: "callback_gate::outcome",
        outcome,
        flow = %flow.id,
        connection = %flow.connection,
        identifier = %telemetry::escape(&flow.identifier),
        provider_ms,
        added_ms = (latency_ms - provider_ms).max(0.0),
        latency_ms,
        "flow succeeded"
    );
    state.metrics.record_outcome(outcome);
    Ok(location)
}

/// How a user verification ended.
#[derive(Debug)]
pub enum Verification {
    /// The identifiers matched: the account is ACTIVE; send the user to `redirect_to`.
    Confirmed { connection: String, identifier: String, redirect_to: String },
    /// Mismatch or too late: the held tokens were discarded and the failure recorded.
    Failed { reference: String, redirect_to: String, detail: &'static str },
    /// No held tokens under this request id (unknown, already used, or swept).
    Unknown,
}

/// `POST /v1/user-verifications`: the app says which of its users is logged in; only the identifier the link was
/// minted for may receive the held tokens.
pub async fn verify_user(
    state: &AppState,
    auth_request_id: &str,
    identifier: &Identifier,
) -> Result<Verification, StoreError> {
    let started = Instant::now();
    if !crypto::is_random_token(auth_request_id) {
        return Ok(Verification::Unknown);
    }
    let Some(pending) = state.store.take_verification(&crypto::hash_hex(auth_request_id)).await? else {
        return Ok(Verification::Unknown);
    };
    let redirect_to =
        format!("{}{}", state.settings.public_url.as_str().trim_end_matches('/'), result_path(&pending.flow_id));
    let now = OffsetDateTime::now_utc();
    let matches = crypto::constant_time_eq(pending.tokens.identifier.as_bytes(), identifier.as_str().as_bytes());
    let failure = if now >= pending.expires_at {
        Some("the verification came after the held tokens expired")
    } else if !matches {
        Some("the app's logged-in user is not the identifier the link was minted for")
    } else {
        None
    };
    let Some(detail) = failure else {
        state.store.complete_flow(&pending.flow_id, &pending.tokens, now).await?;
        tracing::info!(
            target: "callback_gate::outcome",
            outcome = "connected",
            flow = %pending.flow_id,
            connection = %pending.tokens.connection,
            identifier = %telemetry::escape(&pending.tokens.identifier),
            verified = true,
            latency_ms = telemetry::millis_since(started),
            "user verified"
        );
        state.metrics.record_outcome("connected");
        let PendingVerification { tokens, .. } = pending;
        return Ok(Verification::Confirmed {
            connection: tokens.connection,
            identifier: tokens.identifier,
            redirect_to,
        });
    };
    let context = FailureContext {
        connection: Some(pending.tokens.connection.clone()),
        identifier: Some(pending.tokens.identifier.clone()),
        flow_id: Some(pending.flow_id.clone()),
        touches_account: true,
        ..FailureContext::default()
    };
    let recorded = record(state, Failure::new("user_verification_failed").with_detail(detail), context, started).await;
    state.store.fail_flow(&pending.flow_id, recorded.failure.code(), &recorded.reference, recorded.at).await?;
    state.store.release_pending_account(&pending.tokens.connection, &pending.tokens.identifier).await?;
    Ok(Verification::Failed { reference: recorded.reference, redirect_to, detail })
}

fn with_query(mut failure: Failure, query: &CallbackQuery) -> Failure {
    failure.error = query.error.clone();
    failure.error_description = query.error_description.clone();
    failure.error_uri = query.error_uri.clone();
    failure.iss = query.iss.clone();
    failure
}

/// RFC 9207: where the provider sends `iss`, it must name this connection's issuer; where it promises to, it must.
/// Returns the failure when the check does not hold.
fn issuer_failure(provider: &Provider, query: &CallbackQuery) -> Option<Failure> {
    match (&query.iss, &provider.issuer) {
        (Some(iss), Some(expected)) if iss.trim_end_matches('/') != expected.trim_end_matches('/') => Some(
            with_query(Failure::new("issuer_mismatch"), query)
                .with_detail(format!("the callback's iss is not the connection's issuer \"{expected}\"")),
        ),
        (None, Some(_)) if provider.iss_required => Some(Failure::new("issuer_mismatch").with_detail(
            "the provider promises RFC 9207 iss in every authorization response, but this callback has none",
        )),
        _ => None,
    }
}

async fn validate_id_token(
    state: &AppState,
    provider: &Provider,
    jwks: &crate::provider::id_token::Jwks,
    tokens: &Tokens,
    nonce: Option<&Secret>,
) -> Result<(), Failure> {
    let invalid = |detail: String| Failure::new("id_token_invalid").with_detail(detail);
    let (Some(id_token), Some(nonce), Some(issuer)) = (&tokens.id_token, nonce, &provider.issuer) else {
        return Err(invalid("the token response of an OpenID connection has no id_token".into()));
    };
    jwks.validate(&state.providers.http, id_token.expose(), issuer, &provider.connection.client_id, nonce.expose())
        .await
        .map(|_| ())
        .map_err(|err| invalid(err.to_string()))
}

fn seal_tokens(state: &AppState, connection: &str, identifier: &str, tokens: &Tokens) -> Option<Vec<u8>> {
    let plain = serde_json::to_vec(tokens).ok()?;
    Some(state.settings.secret_key.seal(&plain, &crypto::account_associated_data(connection, identifier)))
}

fn store_failure(err: &StoreError) -> Failure {
    Failure::new("internal_error").with_detail(err.to_string())
}

async fn fail(state: &AppState, failure: Failure, context: FailureContext, started: Instant) -> Ending {
    Ending::Failed(Box::new(record(state, failure, context, started).await))
}

/// Records a failure under a fresh reference, makes it the account's last error where it speaks for the account,
/// and writes the one log event for this flow outcome.
pub async fn record(state: &AppState, failure: Failure, context: FailureContext, started: Instant) -> Recorded {
    let failure = with_specifics(state, failure, &context);
    let reference = telemetry::new_reference();
    let at = OffsetDateTime::now_utc();
    let entry = failure.entry;
    let event = OutcomeEvent {
        reference: reference.clone(),
        code: entry.code.to_owned(),
        cause: entry.cause.map(str::to_owned),
        class: entry.class.as_str().to_owned(),
        connection: context.connection.clone(),
        identifier: context.identifier.clone().filter(|_| context.touches_account),
        flow_id: context.flow_id.clone(),
        error: failure.error.as_deref().map(bounded),
        error_description: failure.error_description.as_deref().map(bounded),
        error_uri: failure.error_uri.as_deref().map(bounded),
        iss: failure.iss.as_deref().map(bounded),
        provider_status: failure.provider_status.map(i64::from),
        provider_body: failure.provider_body.clone(),
        detail: failure.detail.clone(),
        hint: failure.hint(),
        created_at: Millis(at),
    };
    // Failures that concern no flow and no account (forged or missing state, forged links) can be sent by anyone:
    // their events are written in the background, in batches, instead of on this request's path.
    let stored = if context.flow_id.is_none() && !context.touches_account {
        if state.events.send(event) { Ok(()) } else { Err(StoreError::Corrupt("the event queue is full".into())) }
    } else {
        state.store.record_outcome(&event).await
    };
    let latency_ms = telemetry::millis_since(started);
    tracing::warn!(
        target: "callback_gate::outcome",
        outcome = entry.code,
        cause = entry.cause,
        class = entry.class.as_str(),
        reference = %reference,
        connection = context.connection.as_deref().map(telemetry::escape),
        identifier = context.identifier.as_deref().map(telemetry::escape),
        flow = context.flow_id.as_deref(),
        provider_status = failure.provider_status,
        error = failure.error.as_deref().map(telemetry::escape_bounded),
        error_description = failure.error_description.as_deref().map(telemetry::escape_bounded),
        error_uri = failure.error_uri.as_deref().map(telemetry::escape_bounded),
        iss = failure.iss.as_deref().map(telemetry::escape_bounded),
        provider_body = failure.provider_body.as_deref().map(telemetry::escape_bounded),
        detail = %telemetry::escape(&failure.detail),
        stored = stored.is_ok(),
        latency_ms,
        "flow failed"
    );
    if let Err(err) = stored {
        tracing::error!(target: "callback_gate::store", reference = %reference, error = %err, "could not store the outcome event");
    }
    state.metrics.record_outcome(entry.code);
    Recorded { failure, reference, context, at }
}

/// Adds what only this deployment knows to a failure's hint: the exact redirect URI it sends.
fn with_specifics(state: &AppState, failure: Failure, context: &FailureContext) -> Failure {
    let redirect_mismatch =
        failure.code() == "redirect_uri_mismatch" || failure.cause() == Some("redirect_uri_mismatch");
    let connection = context.connection.as_deref().and_then(|name| state.settings.connection(name));
    match connection {
        Some(connection) if redirect_mismatch && failure.hint_detail.is_none() => {
            let uri = &connection.redirect_uri;
            let specifics = format!(
                "This service sends redirect_uri={uri} for connection \"{}\": paste exactly that into the provider console (scheme {}, host {}, path {}, no trailing slash).",
                connection.name,
                uri.scheme(),
                uri.host_str().unwrap_or_default(),
                uri.path()
            );
            failure.with_hint(specifics)
        }
        _ => failure,
    }
}

/// OpenID scopes that providers expand or leave out of the granted list; their absence is not a narrower grant.
const IMPLICIT_SCOPES: [&str; 6] = ["openid", "offline_access", "email", "profile", "address", "phone"];

/// The configured scopes the provider did not grant, where it said what it granted.
fn missing_scopes(required: &[String], granted: Option<&str>, parsed: &[String]) -> Vec<String> {
    if granted.is_none() {
        return Vec::new();
    }
    required
        .iter()
        .filter(|scope| !IMPLICIT_SCOPES.contains(&scope.as_str()) && !parsed.contains(scope))
        .cloned()
        .collect()
}

/// Raw provider values are stored for diagnosis, but never unbounded.
fn bounded(value: &str) -> String {
    exchange::excerpt(value, 2048)
}

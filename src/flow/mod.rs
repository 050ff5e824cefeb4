//! Flows: minting authorization links, starting a flow when a link is opened, and terminating the provider's
//! callback. Every way this can end is an [`Ending`]: a redirect, or a failure that has been recorded under a
//! reference and logged once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use url::Url;

use crate::account::{AccountStatus, Identifier};
use crate::catalog::Quirk;
use crate::config::Settings;
use crate::context::Context;
use crate::crypto::{self, Pkce, Secret};
use crate::outcome::Failure;
use crate::provider::exchange::{self, Tokens};
use crate::provider::{Provider, Providers, quirks};
use crate::store::{
    Arrival, Claim, Confirmation, FlowEnding, FlowRecord, FlowStatus, LinkRecord, Millis, OutcomeEvent,
    PendingVerification, StartedFlow, Store, StoreError, TokenWrite,
};
use crate::telemetry;

pub mod credential;
pub mod query;

pub use credential::{CredentialForm, CredentialSubmission};
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
    let cause = event.as_ref().and_then(|e| e.cause.as_deref()).or(flow.outcome_cause.as_deref());
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
    /// Show the hosted form on which the user gives an API key or a username and password.
    Form { form: CredentialForm, set_browser: Option<Secret> },
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
        consumed_at: None,
    };
    store.create_link(&link, settings.limits.links_per_identifier).await?;
    Ok((link_url(settings, &link.id), link.expires_at))
}

/// A browser-binding cookie value as sent back by a browser, if well formed.
pub fn parse_browser(value: Option<&str>) -> Option<Secret> {
    value.filter(|v| crypto::is_random_token(v)).map(Secret::new)
}

/// `GET /connect/start/{link}`: checks the link and starts a flow bound to this browser.
pub async fn start(state: &Context, token: &str, browser: Option<Secret>) -> Ending {
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
    let now = OffsetDateTime::now_utc();
    let (browser, set_browser) = match browser {
        Some(existing) => (existing, None),
        None => {
            let fresh = Secret::new(crypto::random_token::<32>());
            (fresh.clone(), Some(fresh))
        }
    };
    let flow_state = state.settings.secret_key.new_state();
    let pkce = Pkce::new();
    // Drawn before the link is read, and used only if its connection is an OpenID one.
    let nonce = Secret::new(crypto::random_token::<32>());
    let fresh = FreshFlow {
        id: crypto::random_token::<16>(),
        state_hash: crypto::hash_hex(flow_state.expose()),
        browser_hash: crypto::hash_hex(browser.expose()),
        verifier: pkce.verifier.clone(),
        nonce: nonce.clone(),
        now,
    };
    // The link is read, checked and the flow stored in one store operation; the checks run again below, on the
    // link as read, to say why a link started no flow.
    let build = {
        let (settings, providers) = (state.settings.clone(), state.providers.clone());
        Box::new(move |link: &LinkRecord| {
            let provider = startable(&settings, &providers, link, now).ok()?;
            Some(fresh.flow(&settings, &provider, link))
        })
    };
    let (link, flow) = match state.store.start_flow(link_id, state.settings.limits.flows_per_identifier, build).await {
        Ok(StartedFlow { link: Some(link), flow }) => (link, flow),
        Ok(StartedFlow { link: None, .. }) => {
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
    let provider = match startable(&state.settings, &state.providers, &link, now) {
        Ok(provider) => provider,
        Err(failure) => return fail(state, *failure, context, started).await,
    };
    let Some(flow) = flow else {
        let failure = Failure::new("internal_error").with_detail("the link passed its checks but started no flow");
        return fail(state, failure, context, started).await;
    };
    tracing::info!(
        target: "callback_gate::flow",
        event = "flow_started",
        flow = %flow.id,
        connection = %flow.connection,
        identifier = %telemetry::escape(&flow.identifier),
        latency_ms = telemetry::millis_since(started),
        "flow started"
    );
    if !provider.connection.kind.is_oauth() {
        let form = CredentialForm::new(&provider.connection, flow_state, None);
        return Ending::Form { form, set_browser };
    }
    let nonce = provider.is_oidc().then_some(nonce);
    let Some(location) =
        provider.authorization_request(flow_state.expose(), &pkce.challenge, nonce.as_ref().map(Secret::expose))
    else {
        // Configuration gives every OAuth connection an authorization URL; this answers rather than panics.
        let failure = Failure::new("internal_error")
            .with_detail(format!("connection \"{}\" has no authorization_url", link.connection));
        return fail(state, failure, context, started).await;
    };
    Ending::Redirect { location: location.into(), set_browser }
}

/// Whether a link can start a flow now, and with which provider; else the failure that says why not.
fn startable(
    settings: &Settings,
    providers: &Providers,
    link: &LinkRecord,
    now: OffsetDateTime,
) -> Result<Arc<Provider>, Box<Failure>> {
    if let Some(consumed_at) = link.consumed_at {
        return Err(Box::new(Failure::new("link_used").with_detail(format!(
            "the link already connected the account at {}; a link connects once, so mint a new one to connect again",
            telemetry::rfc3339(consumed_at)
        ))));
    }
    if now >= link.expires_at {
        return Err(Box::new(
            Failure::new("link_expired")
                .with_detail(format!("the link expired at {}", telemetry::rfc3339(link.expires_at))),
        ));
    }
    let Some(provider) = providers.get(&link.connection) else {
        return Err(Box::new(
            Failure::new("connection_unknown")
                .with_detail(format!("connection \"{}\" is not configured", link.connection)),
        ));
    };
    if provider.connection.user_verification && settings.app.user_verify_url.is_none() {
        // Caught before the user consents: the flow could not finish without a page to verify the user on.
        return Err(Box::new(Failure::new("user_verify_url_not_configured").with_detail(format!(
            "connection \"{}\" has user_verification on, but app.user_verify_url is not set",
            link.connection
        ))));
    }
    Ok(provider)
}

/// What a new flow is made of before its link is read: its id, the hashes of its state and browser, and the
/// secrets its callback will need.
struct FreshFlow {
    id: String,
    state_hash: String,
    browser_hash: String,
    verifier: Secret,
    nonce: Secret,
    now: OffsetDateTime,
}

impl FreshFlow {
    /// The flow record for `link`, its secrets sealed; the nonce is kept only for an OpenID connection.
    fn flow(self, settings: &Settings, provider: &Provider, link: &LinkRecord) -> FlowRecord {
        let secrets = FlowSecrets { verifier: self.verifier, nonce: provider.is_oidc().then_some(self.nonce) };
        let Ok(secrets_json) = serde_json::to_vec(&secrets) else {
            unreachable!("flow secrets always serialise");
        };
        FlowRecord {
            sealed_secrets: settings.secret_key.seal(&secrets_json, &crypto::flow_associated_data(&self.id)),
            id: self.id,
            state_hash: self.state_hash,
            link_id: link.id.clone(),
            connection: link.connection.clone(),
            identifier: link.identifier.clone(),
            browser_hash: self.browser_hash,
            return_to: link.return_to.clone(),
            status: FlowStatus::Started,
            outcome_code: None,
            outcome_cause: None,
            reference: None,
            created_at: self.now,
            expires_at: self.now + settings.flow_ttl,
            claimed_at: None,
        }
    }
}

/// `GET /connect/callback/{connection}`: validates the flow, exchanges the code and stores the account.
pub async fn callback(state: &Context, connection: &str, raw_query: Option<&str>, browser: Option<Secret>) -> Ending {
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
    let flow = match claim(state, flow_state, browser.as_ref(), path_context, started).await {
        Ok(claimed) => claimed,
        Err(ending) => return ending,
    };
    // From here on this request owns the flow. The rest runs as a task of its own, so a browser that goes away or
    // a request timeout cannot cut it short: whatever happens, the flow ends with a recorded outcome.
    let finishing = spawn_finish(state, provider, flow.clone(), query, started);
    wait_for(state, &flow, finishing, started).await
}

/// Waits for a claimed flow's finishing task. A provider slower than the request may wait: the browser goes to the
/// result page, which shows the ending once it is recorded, instead of the request timing out.
async fn wait_for(
    state: &Context,
    flow: &FlowRecord,
    mut finishing: tokio::task::JoinHandle<Ending>,
    started: Instant,
) -> Ending {
    let patience = state.settings.request_timeout.mul_f64(0.8).saturating_sub(started.elapsed());
    match tokio::time::timeout(patience, &mut finishing).await {
        Ok(Ok(ending)) => ending,
        Ok(Err(err)) => {
            let failure =
                Failure::new("internal_error").with_detail(format!("the flow's finishing task failed: {err}"));
            Box::pin(end_failed(state, flow, failure, started)).await
        }
        Err(_) => Ending::Redirect { location: result_path(&flow.id), set_browser: None },
    }
}

/// Claims the flow a signed state names for this browser: from here on, the caller alone finishes it. Anything
/// else (no such flow, another browser, already finished, its link used by another flow) ends here, recorded.
async fn claim(
    state: &Context,
    flow_state: &Secret,
    browser: Option<&Secret>,
    path_context: FailureContext,
    started: Instant,
) -> Result<FlowRecord, Ending> {
    let state_hash = crypto::hash_hex(flow_state.expose());
    let browser_hash = browser.as_ref().map(|b| crypto::hash_hex(b.expose()));
    let claimed = state.store.claim_flow(&state_hash, browser_hash, OffsetDateTime::now_utc()).await;
    let (flow, claim) = match claimed {
        Ok(Some(found)) => found,
        Ok(None) => {
            let failure = Failure::new("state_invalid").with_detail("the state matches no flow");
            return Err(fail(state, failure, path_context, started).await);
        }
        Err(err) => return Err(fail(state, store_failure(&err), path_context, started).await),
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
            return Err(fail(state, Failure::new("browser_mismatch").with_detail(detail), context, started).await);
        }
        Claim::NotStarted => {
            context.touches_account = false;
            let failure =
                Failure::new("flow_already_used").with_detail(format!("the flow was already {:?}", flow.status));
            return Err(fail(state, failure, context, started).await);
        }
        Claim::LinkUsed => {
            // The account was connected through another flow of the same link; this one must not replace it.
            context.touches_account = false;
            let failure = Failure::new("link_used")
                .with_detail("another flow started from the same link connected the account first");
            let recorded = Box::pin(record(state, failure, context, started)).await;
            if let Err(err) = Box::pin(state.store.fail_flow(&flow.id, ending_of(&recorded))).await {
                tracing::error!(target: "callback_gate::flow", flow = %flow.id, error = %err, "could not mark the flow failed");
            }
            return Err(Ending::Failed(Box::new(recorded)));
        }
    }
    Ok(flow)
}

/// How long a claimed callback may take, at most: the token request and the key-set fetch are each bounded by the
/// token timeout, and the store answers or gives up within seconds.
pub fn callback_deadline(settings: &Settings) -> Duration {
    settings.token_timeout * 2 + Duration::from_secs(10)
}

/// After how long a claimed flow whose callback never finished is abandoned: well past [`callback_deadline`], so
/// only a callback whose process stopped is ever ended this way.
pub fn abandoned_after(settings: &Settings) -> Duration {
    callback_deadline(settings) + Duration::from_secs(60)
}

/// Starts [`finish`] as a task of its own. Not async itself, so the task's future never takes room in the
/// callback's own.
fn spawn_finish(
    state: &Context,
    provider: Arc<Provider>,
    flow: FlowRecord,
    query: CallbackQuery,
    started: Instant,
) -> tokio::task::JoinHandle<Ending> {
    let state = state.clone();
    state.tasks.clone().spawn(async move {
        let work = finish_claimed(&state, &provider, &flow, &query, started);
        finish(&state, &flow, work, started).await
    })
}

/// Runs a claimed flow's remaining work within [`callback_deadline`] and records how it ended. From the moment a
/// flow is claimed this runs as a task of its own, so a browser that goes away or a request timeout cannot cut it
/// short: whatever happens, the flow ends with a recorded outcome.
async fn finish(
    state: &Context,
    flow: &FlowRecord,
    work: impl Future<Output = Result<String, Failure>>,
    started: Instant,
) -> Ending {
    let deadline = callback_deadline(&state.settings);
    let result = match tokio::time::timeout(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(Failure::new("internal_error")
            .with_detail(format!("the flow did not finish within {} s of being claimed", deadline.as_secs()))),
    };
    match result {
        Ok(location) => Ending::Redirect { location, set_browser: None },
        Err(failure) => end_failed(state, flow, failure, started).await,
    }
}

/// Records a claimed flow's failure and ends the flow with it. The browser goes to the result page, unless the
/// ending could not be written: then the page is rendered here, so the user still sees what happened and its
/// reference instead of a result page that would wait forever.
async fn end_failed(state: &Context, flow: &FlowRecord, failure: Failure, started: Instant) -> Ending {
    let recorded = record(state, failure, FailureContext::of_flow(flow), started).await;
    let ending = ending_of(&recorded);
    match state.store.fail_flow(&flow.id, ending.clone()).await {
        Ok(ended) => {
            if ended {
                state.endings.failed(flow, &ending);
            }
            Ending::Redirect { location: result_path(&flow.id), set_browser: None }
        }
        Err(err) => {
            tracing::error!(target: "callback_gate::flow", flow = %flow.id, reference = %recorded.reference, error = %err, "could not mark the flow failed; rendering its page in place");
            Ending::Failed(Box::new(recorded))
        }
    }
}

/// How a recorded failure is written on its flow.
fn ending_of(recorded: &Recorded) -> FlowEnding {
    FlowEnding {
        code: recorded.failure.code().to_owned(),
        cause: recorded.failure.cause().map(str::to_owned),
        reference: recorded.reference.clone(),
        at: recorded.at,
    }
}

/// The flow a result page shows: as this process ended it a moment ago, the first time it is shown, else from the
/// store.
pub async fn for_result(state: &Context, flow_id: &str) -> Result<Option<FlowRecord>, StoreError> {
    match state.endings.take(flow_id) {
        Some(ended) => Ok(Some(ended)),
        None => state.store.find_flow(flow_id).await,
    }
}

pub fn result_path(flow_id: &str) -> String {
    format!("/connect/result/{flow_id}")
}

async fn finish_claimed(
    state: &Context,
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
    let result = exchanged.result.as_ref().map_or_else(crate::outcome::exchange_cause, |_| "ok");
    state.metrics.observe_token_request(
        provider.connection.provider_label(),
        &provider.connection.name,
        "authorization_code",
        result,
        exchanged.provider_latency,
    );
    let provider_ms = exchanged.provider_latency.as_secs_f64() * 1000.0;
    let mut tokens = exchanged.result.map_err(|err| Failure::from_exchange(&err))?;
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
    if provider.connection.quirk == Some(Quirk::Atlassian)
        && let Some(base) = &provider.api_base_url
    {
        // Without the cloud id the app cannot address the user's site; a failure here is logged, and the account
        // is connected all the same (the app can list the sites through the proxy).
        match quirks::atlassian_sites(&state.providers.http, base, &tokens.access_token).await {
            Ok(sites) => tokens.metadata.extend(sites),
            Err(reason) => tracing::warn!(
                target: "callback_gate::flow",
                flow = %flow.id,
                connection = %flow.connection,
                reason = %telemetry::escape(&reason),
                "could not read the Atlassian sites the token reaches"
            ),
        }
    }
    connect(state, provider, flow, &tokens, scopes, provider_ms, started).await
}

/// Stores what a flow obtained (tokens from a code exchange, or a credential from the hosted form) as the
/// account's, or holds it for the app's user verification; answers where the browser goes next.
async fn connect(
    state: &Context,
    provider: &Provider,
    flow: &FlowRecord,
    tokens: &Tokens,
    scopes: Vec<String>,
    provider_ms: f64,
    started: Instant,
) -> Result<String, Failure> {
    let sealed = seal_tokens(state, &flow.connection, &flow.identifier, tokens)
        .ok_or_else(|| Failure::new("internal_error").with_detail("the tokens could not be serialised for sealing"))?;
    let write = TokenWrite {
        connection: flow.connection.clone(),
        identifier: flow.identifier.clone(),
        status: AccountStatus::Active,
        scopes,
        sealed_tokens: sealed,
        key_id: state.settings.secret_key.id().to_owned(),
        token_expires_at: tokens.expires_at,
        refresh_due_at: crate::account::refresh_due(
            OffsetDateTime::now_utc(),
            tokens.expires_at,
            tokens.refresh_token.is_some(),
        ),
        metadata: tokens.metadata.clone(),
    };
    let post_auth = |err: StoreError| {
        Failure::from_entry(crate::outcome::entry("failed_to_exchange_token", Some("post_auth_hook")))
            .with_detail(format!("the exchange succeeded, but the connected account could not be stored: {err}"))
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
            let completed =
                state.store.complete_flow(&flow.id, &write, OffsetDateTime::now_utc()).await.map_err(post_auth)?;
            if !completed {
                return Err(Failure::new("internal_error")
                    .with_detail("the flow was ended while its callback was still running; the tokens were dropped"));
            }
            state.endings.succeeded(flow);
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
    state.metrics.record_outcome(outcome, Some(&flow.connection));
    Ok(location)
}

/// The app's answer to a user verification.
#[derive(Debug)]
pub enum Verification {
    /// The identifiers matched. Nothing is connected yet: the app sends the browser to `redirect_to`, and the
    /// account receives the tokens only when that browser is the one that consented.
    Confirmed { connection: String, identifier: String, redirect_to: String, expires_at: OffsetDateTime },
    /// Mismatch or too late: the held tokens were discarded and the failure recorded.
    Failed { reference: String, redirect_to: String, detail: &'static str },
    /// No held tokens wait for an answer under this request id (unknown, already answered, or swept).
    Unknown,
}

/// The route a browser brings an app's confirmation back to.
fn confirmation_path(confirmation: &str) -> String {
    format!("/connect/verified/{confirmation}")
}

fn absolute(settings: &Settings, path: &str) -> String {
    format!("{}{path}", settings.public_url.as_str().trim_end_matches('/'))
}

/// `POST /v1/user-verifications`: the app says which of its users is logged in; only the identifier the link was
/// minted for may receive the held tokens, and only in the browser that consented (see [`arrive`]).
pub async fn verify_user(
    state: &Context,
    auth_request_id: &str,
    identifier: &Identifier,
) -> Result<Verification, StoreError> {
    let started = Instant::now();
    if !crypto::is_random_token(auth_request_id) {
        return Ok(Verification::Unknown);
    }
    let confirmation = Secret::new(crypto::random_token::<32>());
    let ending = verification_refused();
    let answer = state
        .store
        .confirm_verification(
            &crypto::hash_hex(auth_request_id),
            identifier.as_str(),
            &crypto::hash_hex(confirmation.expose()),
            ending.clone(),
        )
        .await?;
    match answer {
        Confirmation::Unknown => Ok(Verification::Unknown),
        Confirmation::Refused { pending, late } => {
            let detail = if late {
                "the verification came after the held tokens expired"
            } else {
                "the app's logged-in user is not the identifier the link was minted for"
            };
            let failure = Failure::new("user_verification_failed").with_detail(detail);
            record_as(state, failure, held_context(&pending), started, ending.reference.clone()).await;
            let redirect_to = absolute(&state.settings, &result_path(&pending.flow_id));
            Ok(Verification::Failed { reference: ending.reference, redirect_to, detail })
        }
        Confirmation::Confirmed(pending) => {
            tracing::info!(
                target: "callback_gate::flow",
                event = "user_confirmed",
                flow = %pending.flow_id,
                connection = %pending.tokens.connection,
                identifier = %telemetry::escape(&pending.tokens.identifier),
                latency_ms = telemetry::millis_since(started),
                "the app confirmed its user; waiting for the browser that consented"
            );
            let PendingVerification { tokens, expires_at, .. } = pending;
            Ok(Verification::Confirmed {
                connection: tokens.connection,
                identifier: tokens.identifier,
                redirect_to: absolute(&state.settings, &confirmation_path(confirmation.expose())),
                expires_at,
            })
        }
    }
}

/// `GET /connect/verified/{confirmation}`: the browser brings the app's confirmation back. The account receives
/// the held tokens only when this is the browser that started the flow and consented at the provider; a
/// confirmation opened in any other browser (a verify URL forwarded to a logged-in victim) discards them.
pub async fn arrive(state: &Context, confirmation: &str, browser: Option<Secret>) -> Ending {
    let started = Instant::now();
    let unknown = || {
        Failure::new("user_verification_failed")
            .with_detail("the confirmation is unknown, was already used, or its flow was swept")
    };
    if !crypto::is_random_token(confirmation) {
        return fail(state, unknown(), FailureContext::default(), started).await;
    }
    let ending = verification_refused();
    let browser_hash = browser.as_ref().map(|b| crypto::hash_hex(b.expose()));
    let arrival = state.store.finish_verification(&crypto::hash_hex(confirmation), browser_hash, ending.clone()).await;
    match arrival {
        Ok(None) => fail(state, unknown(), FailureContext::default(), started).await,
        Ok(Some(Arrival::Connected(pending))) => {
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
            state.metrics.record_outcome("connected", Some(&pending.tokens.connection));
            Ending::Redirect { location: result_path(&pending.flow_id), set_browser: None }
        }
        Ok(Some(Arrival::Refused { pending, other_browser })) => {
            let detail = if other_browser {
                "the app's confirmation was opened in another browser than the one that consented at the provider (a forwarded verify URL, or a switch of browser)"
            } else {
                "the browser brought the app's confirmation after the held tokens expired"
            };
            let failure = Failure::new("user_verification_failed").with_detail(detail);
            let recorded = record_as(state, failure, held_context(&pending), started, ending.reference).await;
            Ending::Failed(Box::new(recorded))
        }
        Err(err) => fail(state, store_failure(&err), FailureContext::default(), started).await,
    }
}

/// Who a failure of held tokens concerns.
fn held_context(pending: &PendingVerification) -> FailureContext {
    FailureContext {
        connection: Some(pending.tokens.connection.clone()),
        identifier: Some(pending.tokens.identifier.clone()),
        flow_id: Some(pending.flow_id.clone()),
        touches_account: true,
        ..FailureContext::default()
    }
}

/// Whether a flow may be one that will never finish by itself, judged from its record alone: a claim older than
/// [`abandoned_after`], or held tokens that must have expired by now. Only then is the store asked
/// ([`end_abandoned`]), so a result page reloading while a flow is under way costs no write.
pub fn may_be_abandoned(settings: &Settings, flow: &FlowRecord, now: OffsetDateTime) -> bool {
    // Flows claimed before `claimed_at` was recorded count from their start.
    let claimed_at = flow.claimed_at.unwrap_or(flow.created_at);
    match flow.status {
        FlowStatus::Exchanging => now >= claimed_at + abandoned_after(settings),
        // Tokens are held from after the claim for flow_ttl.
        FlowStatus::Verifying => now >= claimed_at + settings.flow_ttl,
        _ => false,
    }
}

/// Ends flows that will never finish by themselves (see [`Store::end_abandoned_flows`]), each with a recorded
/// outcome, so no result page waits forever. With `only`, just that flow is looked at. Returns how many ended.
pub async fn end_abandoned(state: &Context, only: Option<&str>) -> Result<usize, StoreError> {
    let started = Instant::now();
    let now = OffsetDateTime::now_utc();
    let claimed_before = now - abandoned_after(&state.settings);
    let ending_of_abandoned = move |was| FlowEnding {
        code: abandonment(was).code().to_owned(),
        cause: None,
        reference: telemetry::new_reference(),
        at: now,
    };
    let ended =
        state.store.end_abandoned_flows(now, claimed_before, only.map(str::to_owned), ending_of_abandoned).await?;
    for abandoned in &ended {
        let context = FailureContext::of_flow(&abandoned.flow);
        record_as(state, abandonment(abandoned.was), context, started, abandoned.reference.clone()).await;
    }
    Ok(ended.len())
}

/// How a flow that will never finish by itself ends, by what it was waiting for.
fn abandonment(was: FlowStatus) -> Failure {
    if was == FlowStatus::Verifying {
        Failure::new("user_verification_failed").with_detail(
            "the app did not confirm its user, or the browser did not come back, before the held tokens expired",
        )
    } else {
        Failure::new("internal_error").with_detail(
            "the callback stopped before it finished (the process was stopped mid-exchange); the flow was ended when found abandoned",
        )
    }
}

/// The ending written on a flow whose held tokens are refused, under a fresh reference.
fn verification_refused() -> FlowEnding {
    FlowEnding {
        code: "user_verification_failed".into(),
        cause: None,
        reference: telemetry::new_reference(),
        at: OffsetDateTime::now_utc(),
    }
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
    state: &Context,
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

fn seal_tokens(state: &Context, connection: &str, identifier: &str, tokens: &Tokens) -> Option<Vec<u8>> {
    let plain = serde_json::to_vec(tokens).ok()?;
    Some(state.settings.secret_key.seal(&plain, &crypto::account_associated_data(connection, identifier)))
}

fn store_failure(err: &StoreError) -> Failure {
    Failure::new("internal_error").with_detail(err.to_string())
}

async fn fail(state: &Context, failure: Failure, context: FailureContext, started: Instant) -> Ending {
    // Boxed: the browser routes await this on many paths, and each such path would otherwise make every request's
    // future as large as recording is (a thousand callbacks waiting on a slow provider each hold one).
    Ending::Failed(Box::new(Box::pin(record(state, failure, context, started)).await))
}

/// Records a failure under a fresh reference, makes it the account's last error where it speaks for the account,
/// and writes the one log event for this flow outcome.
pub async fn record(state: &Context, failure: Failure, context: FailureContext, started: Instant) -> Recorded {
    record_as(state, failure, context, started, telemetry::new_reference()).await
}

/// [`record`] under a reference already chosen (one the store wrote on the flow in the same step).
async fn record_as(
    state: &Context,
    failure: Failure,
    context: FailureContext,
    started: Instant,
    reference: String,
) -> Recorded {
    let failure = with_specifics(state, failure, &context);
    let at = OffsetDateTime::now_utc();
    let entry = failure.entry;
    // Failures that concern no flow and no account (forged or missing state, forged links) can be sent by anyone:
    // their events are written in the background, in batches, instead of on this request's path, and what they
    // keep of the request is a bounded digest.
    let unauthenticated = context.flow_id.is_none() && !context.touches_account;
    let keep = |value: &str, max: usize| if unauthenticated { digest(value, max) } else { bounded(value) };
    let event = OutcomeEvent {
        reference: reference.clone(),
        code: entry.code.to_owned(),
        cause: entry.cause.map(str::to_owned),
        class: entry.class.as_str().to_owned(),
        connection: context.connection.clone(),
        identifier: context.identifier.clone().filter(|_| context.touches_account),
        flow_id: context.flow_id.clone(),
        error: failure.error.as_deref().map(|v| keep(v, 64)),
        error_description: failure.error_description.as_deref().map(|v| keep(v, 256)),
        error_uri: failure.error_uri.as_deref().map(|v| keep(v, 256)),
        iss: failure.iss.as_deref().map(|v| keep(v, 256)),
        provider_status: failure.provider_status.map(i64::from),
        provider_body: failure.provider_body.clone(),
        detail: if unauthenticated { digest(&failure.detail, 512) } else { failure.detail.clone() },
        // Only a hint with specifics is stored whole; the catalog's own text is looked up again when read.
        hint: if failure.hint_detail.is_some() { failure.hint() } else { String::new() },
        created_at: Millis(at),
        unauthenticated,
    };
    let stored = if unauthenticated {
        queue_event(state, event)
    } else {
        match state.store.record_outcome(&event).await {
            Ok(()) => Ok(()),
            // The reference must still resolve: the event waits in memory for a background write (without the
            // account's last error, which is what could not be written).
            Err(err) => {
                tracing::error!(target: "callback_gate::store", reference = %reference, error = %err, "could not store the outcome event; queued for a background write");
                queue_event(state, event)
            }
        }
    };
    let latency_ms = telemetry::millis_since(started);
    let detail = telemetry::escape(&failure.detail);
    tracing::warn!(
        target: "callback_gate::outcome",
        outcome = entry.code,
        cause = entry.cause,
        class = entry.class.as_str(),
        reference = reference.as_str(),
        connection = context.connection.as_deref().map(telemetry::escape),
        identifier = context.identifier.as_deref().map(telemetry::escape),
        flow = context.flow_id.as_deref(),
        provider_status = failure.provider_status,
        error = failure.error.as_deref().map(telemetry::escape_bounded),
        error_description = failure.error_description.as_deref().map(telemetry::escape_bounded),
        error_uri = failure.error_uri.as_deref().map(telemetry::escape_bounded),
        iss = failure.iss.as_deref().map(telemetry::escape_bounded),
        provider_body = failure.provider_body.as_deref().map(telemetry::escape_bounded),
        detail = detail.as_str(),
        stored = stored.is_ok(),
        latency_ms,
        "flow failed"
    );
    if let Err(err) = stored {
        tracing::error!(target: "callback_gate::store", reference = %reference, error = %err, "could not store the outcome event");
    }
    state.metrics.record_outcome(entry.code, context.connection.as_deref());
    Recorded { failure, reference, context, at }
}

fn queue_event(state: &Context, event: OutcomeEvent) -> Result<(), StoreError> {
    if state.events.send(event) { Ok(()) } else { Err(StoreError::Corrupt("the event queue is full".into())) }
}

/// The outcome event behind a reference: from memory while it waits for its background write, else the store.
pub async fn stored_event(state: &Context, reference: &str) -> Result<Option<OutcomeEvent>, StoreError> {
    let event = match state.events.pending(reference) {
        Some(event) => Some(event),
        None => state.store.reference(reference).await?,
    };
    Ok(event.map(|mut event| {
        if event.hint.is_empty() {
            event.hint = crate::outcome::entry(&event.code, event.cause.as_deref()).hint.to_owned();
        }
        event
    }))
}

/// Adds what only this deployment knows to a failure's hint: the exact redirect URI it sends.
fn with_specifics(state: &Context, failure: Failure, context: &FailureContext) -> Failure {
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

use crate::account::IMPLICIT_SCOPES;

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

/// What is kept of text sent by a request that matched no flow: its first `max` characters and, when it was
/// longer, its size and the start of its SHA-256, enough to match it with the log line written at the time.
fn digest(value: &str, max: usize) -> String {
    // No more bytes than `max` is no more characters either: nothing to cut, and no need to count them.
    if value.len() <= max {
        return value.to_owned();
    }
    match value.char_indices().nth(max) {
        Some((cut, _)) => {
            let hash = crypto::hash_hex(value);
            format!("{}… [{} bytes, sha256 {}]", &value[..cut], value.len(), &hash[..16])
        }
        None => value.to_owned(),
    }
}

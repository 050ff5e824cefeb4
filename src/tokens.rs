//! A connected account's tokens after the flow: reading them, keeping them fresh, and disconnecting (revoking at
//! the provider where it can, then deleting them).
//!
//! Every refresh, whoever asks for it (the token route, the proxy, `POST .../refresh`, the background refresher),
//! goes through one path that holds three rules, in any number of processes sharing one database:
//!
//! 1. **One refresh per account at a time.** In this process, callers that arrive while a refresh of the same
//!    tokens runs share its result ([`crate::flight`]). Across processes, a refresh first takes the account's
//!    lease row in the store; an instance that finds it held waits for the holder's result instead of calling
//!    the provider with a refresh token the holder may be rotating.
//! 2. **No lost updates.** Every write of an account's tokens or status increases its token version. A refresh
//!    writes only while the account is still at the version it read and its lease is still the one it took, so
//!    a refresh that finishes after a disconnect, a new flow or another refresh changes nothing, and a
//!    DISCONNECTED account never becomes ACTIVE again but through a new flow.
//! 3. **Only a refusal of the stored refresh token expires an account.** `invalid_grant` makes the account
//!    EXPIRED under the same condition, so an answer about a refresh token that was replaced meanwhile is ignored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::account::{self, AccountStatus};
use crate::context::Context;
use crate::crypto::{self, Secret};
use crate::flow::{self, FailureContext, Recorded};
use crate::outcome::{self, Failure};
use crate::provider::exchange::{self, Tokens};
use crate::provider::probe::{self, Verdict};
use crate::store::{DueRefresh, Lease, RefreshEnd, StoreError, TokenState, TokenWrite};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the account has no stored tokens")]
    Missing,
    #[error("the stored tokens could not be opened with any configured key")]
    Unreadable,
    #[error("the account has no refresh token")]
    NoRefreshToken,
    #[error("the access token expired and there is no refresh token to renew it")]
    Expired(Box<Recorded>),
    #[error("the connection is not configured")]
    UnknownConnection,
    #[error("the provider refused the refresh")]
    Refused(Box<Recorded>),
    #[error("no connected account for this connection and identifier")]
    AccountNotFound,
    #[error("the account is {0}, so it has no usable token")]
    NotActive(AccountStatus),
    #[error("another refresh of this account did not finish in time")]
    Busy,
    #[error("the connection has no probe to verify accounts with")]
    NoProbe,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TokenError {
    /// The same error, for a caller that shares another caller's refresh.
    fn shared(err: &Arc<TokenError>) -> TokenError {
        match &**err {
            Self::Missing => Self::Missing,
            Self::Unreadable => Self::Unreadable,
            Self::NoRefreshToken => Self::NoRefreshToken,
            Self::Expired(recorded) => Self::Expired(recorded.clone()),
            Self::UnknownConnection => Self::UnknownConnection,
            Self::Refused(recorded) => Self::Refused(recorded.clone()),
            Self::AccountNotFound => Self::AccountNotFound,
            Self::NotActive(status) => Self::NotActive(*status),
            Self::Busy => Self::Busy,
            Self::NoProbe => Self::NoProbe,
            Self::Store(err) if err.is_unavailable() => Self::Store(StoreError::Unavailable(err.to_string())),
            Self::Store(err) => Self::Store(StoreError::Corrupt(err.to_string())),
        }
    }
}

/// An account's credential, ready to use, and the version of the account's tokens it was read at.
#[derive(Debug, Clone)]
pub struct Usable {
    pub tokens: Tokens,
    /// Increases with every write of the account's tokens: a refresh after a rejection compares it to know whether
    /// the rejected token is still the stored one.
    pub version: i64,
    /// The scopes granted to the account.
    pub scopes: Vec<String>,
    /// What the provider told about the account.
    pub metadata: crate::account::Metadata,
}

/// What a provider said about a credential it was sent through the proxy.
#[derive(Debug, Clone)]
pub enum Rejection {
    /// 401 even with a freshly refreshed token, or with one that has no refresh token to renew it.
    /// `error` is the provider's own code, where its body named one (Slack's `token_revoked`).
    TokenRejected { provider_status: u16, provider_body: Option<String>, error: Option<String> },
    /// 403 for a missing scope; the scopes the provider named, where it named any.
    InsufficientScope { missing: Vec<String>, provider_status: u16, provider_body: Option<String> },
}

/// How long a refresh holds an account's lease at most: longer than any provider call can take (the HTTP client
/// gives up after `token_timeout_seconds`), so a lease ends early only when its holder died.
fn lease_length(state: &Context) -> Duration {
    state.settings.token_timeout + Duration::from_secs(10)
}

/// How often a refresh that found the lease held looks whether its holder is done.
const LEASE_POLL: Duration = Duration::from_millis(100);

/// Backoff after transient refresh failures in a row: 30 s, doubling, at most an hour.
fn backoff(failures: i64) -> Duration {
    let doublings = u32::try_from(failures.clamp(0, 7)).unwrap_or(7);
    Duration::from_secs(30 * 2u64.pow(doublings)).min(Duration::from_secs(3600))
}

/// The credential of an ACTIVE account, valid for at least `min_valid` more where the provider gave an expiry:
/// refreshed first when needed (a provider whose tokens live shorter than `min_valid` gives what it gives). Of
/// concurrent callers for one account, in any number of processes, one refreshes and the others share its result.
pub async fn usable(
    state: &Context,
    connection: &str,
    identifier: &str,
    min_valid: Duration,
) -> Result<Usable, TokenError> {
    let current = stored(state, connection, identifier).await?;
    let now = OffsetDateTime::now_utc();
    let expires_at = current.tokens.expires_at;
    let due = |min_valid: Duration| expires_at.is_some_and(|at| at < (now + min_valid).unix_timestamp());
    // Without a refresh token, a token is handed out as it is until it expires; then the account is EXPIRED.
    if due(min_valid) && (current.tokens.refresh_token.is_some() || due(Duration::ZERO)) {
        return refresh_from(state, connection, identifier, current.version).await;
    }
    Ok(current)
}

/// Refreshes an account's tokens now (`POST .../refresh`), for ACTIVE and EXPIRED accounts. A refusal is recorded
/// under a reference; `invalid_grant` for the stored refresh token makes the account EXPIRED, anything else
/// leaves it as it was and schedules a retry.
pub async fn refresh(state: &Context, connection: &str, identifier: &str) -> Result<Usable, TokenError> {
    let current = state.store.token_state(connection, identifier).await?.ok_or(TokenError::AccountNotFound)?;
    if !matches!(current.status, AccountStatus::Active | AccountStatus::Expired) {
        return Err(TokenError::NotActive(current.status));
    }
    refresh_from(state, connection, identifier, current.version).await
}

/// Refreshes after the provider rejected `rejected` (a 401 to an API call), unless the stored tokens were
/// replaced since it was read: then the newer ones are returned without a refresh.
pub async fn refresh_after_rejection(
    state: &Context,
    connection: &str,
    identifier: &str,
    rejected: &Usable,
) -> Result<Usable, TokenError> {
    refresh_from(state, connection, identifier, rejected.version).await
}

/// Renews the tokens of one account the background refresher found due.
pub async fn refresh_due(state: &Context, due: &DueRefresh) -> Result<Usable, TokenError> {
    refresh_from(state, &due.connection, &due.identifier, due.version).await
}

/// Refreshes the tokens stored at `version`, or, when they were replaced since, returns what is stored now. Joins a
/// refresh of the same tokens already running in this process.
async fn refresh_from(state: &Context, connection: &str, identifier: &str, version: i64) -> Result<Usable, TokenError> {
    let key = flight_key(connection, identifier, version);
    let work = {
        let (state, connection, identifier) = (state.clone(), connection.to_owned(), identifier.to_owned());
        async move { refresh_once(&state, &connection, &identifier, version).await.map_err(Arc::new) }
    };
    let landing = state.refreshes.run(key, &state.tasks, work).await;
    let result = landing.and_then(|landed| landed.downcast::<Result<Usable, Arc<TokenError>>>().ok());
    match result.as_deref() {
        Some(Ok(usable)) => Ok(usable.clone()),
        Some(Err(err)) => Err(TokenError::shared(err)),
        None => Err(TokenError::Store(StoreError::Corrupt("the refresh task failed".into()))),
    }
}

/// The in-process flight of a refresh of one account's tokens stored at `version`.
fn flight_key(connection: &str, identifier: &str, version: i64) -> String {
    format!("{connection}\u{0}{identifier}\u{0}{version}")
}

/// One refresh of the tokens stored at `version`, holding the account's lease, or the result of the refresh
/// another process holds it for.
async fn refresh_once(state: &Context, connection: &str, identifier: &str, version: i64) -> Result<Usable, TokenError> {
    let lease = crypto::random_token::<16>();
    let mut waited = Duration::ZERO;
    let most = lease_length(state) + Duration::from_secs(5);
    loop {
        let now = OffsetDateTime::now_utc();
        let taken = state
            .store
            .take_refresh_lease(connection, identifier, version, &lease, now + lease_length(state), now)
            .await?;
        match taken {
            Lease::Taken => return refresh_holding(state, connection, identifier, version, &lease).await,
            Lease::Gone => return Err(TokenError::AccountNotFound),
            Lease::Changed => return stored(state, connection, identifier).await,
            Lease::Held { .. } => {
                // Another process is refreshing these tokens: its result is ours once its write lands, or the
                // lease is free again when it gave up or died.
                if waited >= most {
                    return Err(TokenError::Busy);
                }
                tokio::time::sleep(LEASE_POLL).await;
                waited += LEASE_POLL;
            }
        }
    }
}

/// What is stored now, as a usable credential.
async fn stored(state: &Context, connection: &str, identifier: &str) -> Result<Usable, TokenError> {
    let current = state.store.token_state(connection, identifier).await?.ok_or(TokenError::AccountNotFound)?;
    if current.status != AccountStatus::Active {
        return Err(TokenError::NotActive(current.status));
    }
    let tokens = open(state, connection, identifier, &current)?;
    Ok(Usable { tokens, version: current.version, scopes: current.scopes, metadata: current.metadata })
}

/// The refresh itself, by the holder of the account's lease. Every way out ends the lease.
async fn refresh_holding(
    state: &Context,
    connection: &str,
    identifier: &str,
    version: i64,
    lease: &str,
) -> Result<Usable, TokenError> {
    let started = Instant::now();
    let release = |end: RefreshEnd| async move {
        state.store.end_refresh(connection, identifier, version, lease, end, OffsetDateTime::now_utc()).await
    };
    let current = match state.store.token_state(connection, identifier).await? {
        Some(current) if current.version == version => current,
        // Replaced between the lease and this read (a disconnect clears the lease with the tokens).
        _ => return stored(state, connection, identifier).await,
    };
    let retry_later = RefreshEnd::Retry { due_at: OffsetDateTime::now_utc() + backoff(current.refresh_failures) };
    let Some(provider) = state.providers.get(connection) else {
        release(RefreshEnd::Release).await?;
        return Err(TokenError::UnknownConnection);
    };
    let tokens = match open(state, connection, identifier, &current) {
        Ok(tokens) => tokens,
        Err(err) => {
            release(retry_later).await?;
            return Err(err);
        }
    };
    let Some(refresh_token) = tokens.refresh_token.clone() else {
        let expired = tokens.expires_at.is_some_and(|at| at <= OffsetDateTime::now_utc().unix_timestamp());
        if !expired {
            release(RefreshEnd::Release).await?;
            return Err(TokenError::NoRefreshToken);
        }
        // Nothing can renew it: the account is EXPIRED, and says why.
        let failure = Failure::new("token_expired")
            .with_detail("the access token expired and the provider gave no refresh token with it");
        let recorded = flow::record(state, failure, account_context(connection, identifier), started).await;
        release(RefreshEnd::Expired).await?;
        return Err(TokenError::Expired(Box::new(recorded)));
    };
    let exchanged = exchange::refresh(&state.providers.http, &provider, &refresh_token).await;
    let result = exchanged.result.as_ref().map_or_else(outcome::exchange_cause, |_| "ok");
    state.metrics.observe_token_request(
        provider.connection.provider_label(),
        &provider.connection.name,
        "refresh_token",
        result,
        exchanged.provider_latency,
    );
    let fresh = match exchanged.result {
        Ok(fresh) => fresh,
        Err(err) => {
            let cause = outcome::exchange_cause(&err);
            let mut failure = Failure::new("token_refresh_failed").with_detail(format!("{cause}: {err}"));
            let from_provider = Failure::from_exchange(&err);
            failure.error = from_provider.error;
            failure.error_description = from_provider.error_description;
            failure.provider_status = from_provider.provider_status;
            failure.provider_body = from_provider.provider_body;
            let recorded = flow::record(state, failure, account_context(connection, identifier), started).await;
            let end = if refused_for_good(&err) {
                RefreshEnd::Expired
            } else {
                let wait = backoff(current.refresh_failures).max(exchanged.retry_after.unwrap_or_default());
                RefreshEnd::Retry { due_at: OffsetDateTime::now_utc() + wait.min(Duration::from_secs(3600)) }
            };
            if !release(end).await? {
                tracing::info!(
                    target: "callback_gate::tokens",
                    connection,
                    identifier = %crate::telemetry::escape(identifier),
                    "the refused refresh token is no longer the stored one; the account is left as it is"
                );
            }
            return Err(TokenError::Refused(Box::new(recorded)));
        }
    };
    // Providers that do not rotate refresh tokens omit them from the answer: the old one stays valid.
    let tokens = Tokens { refresh_token: fresh.refresh_token.clone().or(Some(refresh_token)), ..fresh };
    // A refresh answer that tells nothing about the account keeps what the store has (the write does the same).
    let metadata = if tokens.metadata.is_empty() { current.metadata.clone() } else { tokens.metadata.clone() };
    let scopes = match tokens.scope.as_deref() {
        Some(scope) => provider.parse_granted_scopes(Some(scope)),
        None => current.scopes,
    };
    let plain = serde_json::to_vec(&tokens).map_err(|_| TokenError::Unreadable)?;
    let now = OffsetDateTime::now_utc();
    let write = TokenWrite {
        connection: connection.to_owned(),
        identifier: identifier.to_owned(),
        status: AccountStatus::Active,
        scopes: scopes.clone(),
        sealed_tokens: state.settings.secret_key.seal(&plain, &crypto::account_associated_data(connection, identifier)),
        key_id: state.settings.secret_key.id().to_owned(),
        token_expires_at: tokens.expires_at,
        refresh_due_at: account::refresh_due(now, tokens.expires_at, true),
        metadata: tokens.metadata.clone(),
    };
    // The provider may have rotated the refresh token: its successor must not be lost to a database that is away
    // for a moment, so the write is retried for as long as the lease lasts.
    let mut attempt = 0;
    let written = loop {
        match release(RefreshEnd::Refreshed(write.clone())).await {
            Err(err) if err.is_unavailable() && attempt < 4 => {
                attempt += 1;
                tracing::warn!(target: "callback_gate::tokens", connection, error = %err, attempt, "could not store refreshed tokens; retrying");
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
            }
            result => break result?,
        }
    };
    if !written {
        // A disconnect or a new flow came first; what it left stands.
        tracing::info!(
            target: "callback_gate::tokens",
            outcome = "refresh_discarded",
            connection,
            identifier = %crate::telemetry::escape(identifier),
            "the account changed during the refresh; its result was discarded"
        );
        return stored(state, connection, identifier).await;
    }
    tracing::info!(
        target: "callback_gate::tokens",
        outcome = "refreshed",
        connection,
        identifier = %crate::telemetry::escape(identifier),
        provider_ms = exchanged.provider_latency.as_secs_f64() * 1000.0,
        "tokens refreshed"
    );
    Ok(Usable { tokens, version: version + 1, scopes, metadata })
}

/// Whether the provider refused the refresh token itself (it expired, was revoked, or was spent), rather than
/// failing for now: only an explicit refusal expires an account, never an unknown error, a rate limit or an outage.
fn refused_for_good(err: &exchange::ExchangeError) -> bool {
    match err {
        exchange::ExchangeError::Rejected { status, error, .. } => {
            *status != 429
                && *status < 500
                && matches!(
                    error.as_str(),
                    "invalid_grant" | "invalid_refresh_token" | "token_revoked" | "token_expired"
                )
        }
        _ => false,
    }
}

fn account_context(connection: &str, identifier: &str) -> FailureContext {
    FailureContext {
        connection: Some(connection.to_owned()),
        identifier: Some(identifier.to_owned()),
        touches_account: true,
        ..FailureContext::default()
    }
}

/// Records what the provider said about the credential read at `usable` under a reference, and makes it the
/// account's last error: `token_rejected`, or `insufficient_scope` with the scopes the provider named added to the
/// account's `missing_scopes` (while it still holds those tokens). The account's status and tokens stay as they are.
pub async fn report_rejection(
    state: &Context,
    connection: &str,
    identifier: &str,
    usable: &Usable,
    rejection: Rejection,
) -> Recorded {
    let started = Instant::now();
    let (mut failure, status, body, missing) = match rejection {
        Rejection::TokenRejected { provider_status, provider_body, error } => {
            let mut failure = Failure::new("token_rejected").with_detail(format!(
                "the provider answered HTTP {provider_status} to an API call with a freshly refreshed token, or with one that could not be refreshed"
            ));
            failure.error = error;
            (failure, provider_status, provider_body, Vec::new())
        }
        Rejection::InsufficientScope { missing, provider_status, provider_body } => (
            Failure::new("insufficient_scope").with_detail(if missing.is_empty() {
                format!(
                    "the provider answered HTTP {provider_status} to an API call for a missing scope it did not name"
                )
            } else {
                format!(
                    "the provider answered HTTP {provider_status} to an API call; missing scopes: {}",
                    missing.join(" ")
                )
            }),
            provider_status,
            provider_body,
            missing,
        ),
    };
    failure.provider_status = Some(status);
    failure.provider_body = body;
    if !missing.is_empty()
        && let Err(err) = state.store.note_missing_scopes(connection, identifier, usable.version, missing).await
    {
        tracing::warn!(target: "callback_gate::store", error = %err, "could not note the account's missing scopes");
    }
    flow::record(state, failure, account_context(connection, identifier), started).await
}

/// What a verification of a connected account found.
#[derive(Debug)]
pub struct Verified {
    /// Whether the provider accepted the account's credential.
    pub ok: bool,
    /// The provider's status, where it answered.
    pub provider_status: Option<u16>,
    pub checked_at: OffsetDateTime,
    /// The reference a failure was recorded under (and made the account's last error).
    pub reference: Option<String>,
    /// The failure's code, where it failed.
    pub code: Option<&'static str>,
}

/// Calls the connection's probe with the account's credential (`POST .../verify`): an end-to-end check that the
/// stored connection still works. A refused OAuth token is refreshed once and tried again, as the proxy does; a
/// failure is recorded as the account's last error (`token_rejected`, or `credential_check_failed` when the
/// provider gave no usable answer).
pub async fn verify(state: &Context, connection: &str, identifier: &str) -> Result<Verified, TokenError> {
    let provider = state.providers.get(connection).ok_or(TokenError::UnknownConnection)?;
    let probe = provider.connection.probe.clone().ok_or(TokenError::NoProbe)?;
    let started = Instant::now();
    let mut usable = usable(state, connection, identifier, Duration::from_secs(60)).await?;
    let (http, settings) = (&state.providers.http, &provider.connection);
    let mut probed = probe::call(http, settings, &probe, &usable.tokens.access_token).await;
    if probed.verdict == Verdict::Refused
        && usable.tokens.refresh_token.is_some()
        && let Ok(fresh) = refresh_after_rejection(state, connection, identifier, &usable).await
    {
        usable = fresh;
        probed = probe::call(http, settings, &probe, &usable.tokens.access_token).await;
    }
    let checked_at = OffsetDateTime::now_utc();
    let recorded = match probed.verdict {
        Verdict::Accepted => None,
        Verdict::Refused => {
            let rejection = Rejection::TokenRejected {
                provider_status: probed.status.unwrap_or(401),
                provider_body: probed.body.clone(),
                error: probed.error.clone(),
            };
            Some(report_rejection(state, connection, identifier, &usable, rejection).await)
        }
        Verdict::Failed => {
            let failure = flow::credential::refusal(&probed).unwrap_or_else(|| Failure::new("internal_error"));
            Some(flow::record(state, failure, account_context(connection, identifier), started).await)
        }
    };
    Ok(Verified {
        ok: recorded.is_none(),
        provider_status: probed.status,
        checked_at,
        code: recorded.as_ref().map(|r| r.failure.code()),
        reference: recorded.map(|r| r.reference),
    })
}

/// Opens an account's stored tokens.
pub async fn read(state: &Context, connection: &str, identifier: &str) -> Result<Tokens, TokenError> {
    let (sealed, key_id) = state.store.sealed_tokens(connection, identifier).await?.ok_or(TokenError::Missing)?;
    open_sealed(state, connection, identifier, &sealed, &key_id)
}

fn open(state: &Context, connection: &str, identifier: &str, current: &TokenState) -> Result<Tokens, TokenError> {
    let (sealed, key_id) = current.sealed.as_ref().ok_or(TokenError::Missing)?;
    open_sealed(state, connection, identifier, sealed, key_id)
}

fn open_sealed(
    state: &Context,
    connection: &str,
    identifier: &str,
    sealed: &[u8],
    key_id: &str,
) -> Result<Tokens, TokenError> {
    let aad = crypto::account_associated_data(connection, identifier);
    let plain = state.settings.secret_key.open_with_id(sealed, &aad, key_id).map_err(|_| {
        tracing::error!(target: "callback_gate::tokens", connection, key_id = %key_id, "stored tokens could not be opened");
        TokenError::Unreadable
    })?;
    serde_json::from_slice(&plain).map_err(|_| TokenError::Unreadable)
}

/// Disconnects an account: revokes its tokens at the provider where the provider supports it (RFC 7009), then
/// deletes them. Returns whether the provider confirmed a revocation; a failed revocation is logged, and the
/// account is disconnected all the same. A refresh running meanwhile finds the account changed and writes nothing.
pub async fn disconnect(state: &Context, connection: &str, identifier: &str) -> Result<bool, TokenError> {
    let provider = state.providers.get(connection).ok_or(TokenError::UnknownConnection)?;
    let revoked = match read(state, connection, identifier).await {
        Ok(tokens) => {
            // Revoking the refresh token ends the whole grant at most providers.
            let (token, hint): (&Secret, &str) = match &tokens.refresh_token {
                Some(refresh) => (refresh, "refresh_token"),
                None => (&tokens.access_token, "access_token"),
            };
            match exchange::revoke(&state.providers.http, &provider, token, hint).await {
                Ok(revoked) => revoked,
                Err(err) => {
                    tracing::warn!(target: "callback_gate::tokens", connection, error = %err, "revocation failed; disconnecting anyway");
                    false
                }
            }
        }
        Err(TokenError::Missing | TokenError::Unreadable) => false,
        Err(err) => return Err(err),
    };
    state.store.set_status(connection, identifier, AccountStatus::Disconnected, OffsetDateTime::now_utc()).await?;
    tracing::info!(target: "callback_gate::tokens", outcome = "disconnected", connection, revoked, "account disconnected");
    Ok(revoked)
}

/// How many due accounts one pass of the background refresher takes.
const REFRESH_BATCH: u32 = 64;
/// How many background refreshes run at once in one process.
pub const REFRESH_CONCURRENCY: usize = 8;
/// How often the background refresher looks for due accounts.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// One pass of the background refresher: starts a refresh for each due account not already being refreshed in this
/// process, at most `slots` at once. Returns how many it started.
pub async fn refresh_due_accounts(state: &Context, slots: &Arc<tokio::sync::Semaphore>) -> Result<usize, TokenError> {
    let due = state.store.due_refreshes(OffsetDateTime::now_utc(), REFRESH_BATCH).await?;
    let mut started = 0;
    for account in due {
        let key = flight_key(&account.connection, &account.identifier, account.version);
        if state.refreshes.is_running(&key) {
            continue;
        }
        let Ok(slot) = Arc::clone(slots).try_acquire_owned() else {
            break;
        };
        let state = state.clone();
        started += 1;
        state.tasks.clone().spawn(async move {
            let _slot = slot;
            match refresh_due(&state, &account).await {
                Ok(_) => {}
                // Recorded under a reference where the provider refused; retried with backoff where transient.
                Err(TokenError::Refused(_) | TokenError::Expired(_)) => {}
                Err(err) => tracing::warn!(
                    target: "callback_gate::tokens",
                    connection = %account.connection,
                    identifier = %crate::telemetry::escape(&account.identifier),
                    error = %err,
                    "background refresh failed"
                ),
            }
        });
    }
    Ok(started)
}

//! A connected account's tokens after the flow: reading them, refreshing them at the provider, and disconnecting
//! (revoking at the provider where it can, then deleting them).

use std::time::Instant;

use time::OffsetDateTime;

use crate::account::AccountStatus;
use crate::context::Context;
use crate::crypto::{self, Secret};
use crate::flow::{self, FailureContext, Recorded};
use crate::outcome::{self, Failure};
use crate::provider::exchange::{self, Tokens};
use crate::store::{StoreError, TokenWrite};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the account has no stored tokens")]
    Missing,
    #[error("the stored tokens could not be opened with any configured key")]
    Unreadable,
    #[error("the account has no refresh token")]
    NoRefreshToken,
    #[error("the connection is not configured")]
    UnknownConnection,
    #[error("the provider refused the refresh")]
    Refused(Box<Recorded>),
    #[error("no connected account for this connection and identifier")]
    AccountNotFound,
    #[error("the account is {0}, so it has no usable token")]
    NotActive(AccountStatus),
    #[error(transparent)]
    Store(#[from] StoreError),
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
}

/// What a provider said about a credential it was sent through the proxy.
#[derive(Debug, Clone)]
pub enum Rejection {
    /// 401 even with a freshly refreshed token.
    TokenRejected { provider_status: u16, provider_body: Option<String> },
    /// 403 for a missing scope; the scopes the provider named, where it named any.
    InsufficientScope { missing: Vec<String>, provider_status: u16, provider_body: Option<String> },
}

/// The credential of an ACTIVE account, valid for at least `min_valid` more where the provider gave an expiry:
/// refreshed first when needed. Of concurrent callers for one account, in any number of processes, one refreshes
/// and the others share its result.
pub async fn usable(
    state: &Context,
    connection: &str,
    identifier: &str,
    min_valid: std::time::Duration,
) -> Result<Usable, TokenError> {
    let account = state.store.account(connection, identifier).await?.ok_or(TokenError::AccountNotFound)?;
    if account.status != AccountStatus::Active {
        return Err(TokenError::NotActive(account.status));
    }
    let tokens = read(state, connection, identifier).await?;
    let deadline = OffsetDateTime::now_utc().unix_timestamp() + min_valid.as_secs() as i64;
    if tokens.expires_at.is_some_and(|at| at < deadline) && tokens.refresh_token.is_some() {
        refresh(state, connection, identifier).await?;
        let tokens = read(state, connection, identifier).await?;
        let account = state.store.account(connection, identifier).await?.ok_or(TokenError::AccountNotFound)?;
        return Ok(Usable { tokens, version: 0, scopes: account.scopes });
    }
    Ok(Usable { tokens, version: 0, scopes: account.scopes })
}

/// Refreshes after the provider rejected `rejected` (a 401 to an API call), unless the stored tokens were
/// replaced since it was read: then the newer ones are returned without a refresh.
pub async fn refresh_after_rejection(
    state: &Context,
    connection: &str,
    identifier: &str,
    rejected: &Usable,
) -> Result<Usable, TokenError> {
    let _ = rejected.version;
    refresh(state, connection, identifier).await?;
    usable(state, connection, identifier, std::time::Duration::ZERO).await
}

/// Records what the provider said about an account's credential under a reference, and makes it the account's
/// last error: `token_rejected`, or `insufficient_scope` with the missing scopes added to the account's
/// `missing_scopes`. The account's status and tokens stay as they are.
pub async fn report_rejection(state: &Context, connection: &str, identifier: &str, rejection: Rejection) -> Recorded {
    let started = Instant::now();
    let (failure, status, body) = match rejection {
        Rejection::TokenRejected { provider_status, provider_body } => (
            Failure::new("token_rejected").with_detail(format!(
                "the provider answered HTTP {provider_status} to an API call made with a freshly refreshed token"
            )),
            provider_status,
            provider_body,
        ),
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
        ),
    };
    let mut failure = failure;
    failure.provider_status = Some(status);
    failure.provider_body = body;
    let context = FailureContext {
        connection: Some(connection.to_owned()),
        identifier: Some(identifier.to_owned()),
        touches_account: true,
        ..FailureContext::default()
    };
    flow::record(state, failure, context, started).await
}

/// Opens an account's stored tokens.
pub async fn read(state: &Context, connection: &str, identifier: &str) -> Result<Tokens, TokenError> {
    let (sealed, key_id) = state.store.sealed_tokens(connection, identifier).await?.ok_or(TokenError::Missing)?;
    let aad = crypto::account_associated_data(connection, identifier);
    let plain = state.settings.secret_key.open_with_id(&sealed, &aad, &key_id).map_err(|_| {
        tracing::error!(target: "callback_gate::tokens", connection, key_id = %key_id, "stored tokens could not be opened");
        TokenError::Unreadable
    })?;
    serde_json::from_slice(&plain).map_err(|_| TokenError::Unreadable)
}

/// Refreshes an account's tokens now. A refusal is recorded under a reference; `invalid_grant` (access revoked,
/// refresh token expired) makes the account EXPIRED, anything else leaves it as it was.
pub async fn refresh(state: &Context, connection: &str, identifier: &str) -> Result<(), TokenError> {
    let started = Instant::now();
    let provider = state.providers.get(connection).ok_or(TokenError::UnknownConnection)?;
    let current = read(state, connection, identifier).await?;
    let refresh_token = current.refresh_token.clone().ok_or(TokenError::NoRefreshToken)?;
    let exchanged = exchange::refresh(&state.providers.http, &provider, &refresh_token).await;
    let result = exchanged.result.as_ref().map_or_else(outcome::exchange_cause, |_| "ok");
    state.metrics.observe_token_request(
        provider.connection.provider.as_str(),
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
            let context = FailureContext {
                connection: Some(connection.to_owned()),
                identifier: Some(identifier.to_owned()),
                touches_account: true,
                ..FailureContext::default()
            };
            let recorded = flow::record(state, failure, context, started).await;
            if cause == "invalid_grant" {
                state
                    .store
                    .set_status(connection, identifier, AccountStatus::Expired, OffsetDateTime::now_utc())
                    .await?;
            }
            return Err(TokenError::Refused(Box::new(recorded)));
        }
    };
    // Providers that do not rotate refresh tokens omit them from the answer: the old one stays valid.
    let tokens = Tokens { refresh_token: fresh.refresh_token.clone().or(Some(refresh_token)), ..fresh };
    let account = state.store.account(connection, identifier).await?.ok_or(TokenError::Missing)?;
    let scopes = match tokens.scope.as_deref() {
        Some(scope) => provider.parse_granted_scopes(Some(scope)),
        None => account.scopes,
    };
    let plain = serde_json::to_vec(&tokens).map_err(|_| TokenError::Unreadable)?;
    let write = TokenWrite {
        connection: connection.to_owned(),
        identifier: identifier.to_owned(),
        status: AccountStatus::Active,
        scopes,
        sealed_tokens: state.settings.secret_key.seal(&plain, &crypto::account_associated_data(connection, identifier)),
        key_id: state.settings.secret_key.id().to_owned(),
        token_expires_at: tokens.expires_at,
    };
    state.store.replace_tokens(&write, OffsetDateTime::now_utc()).await?;
    tracing::info!(
        target: "callback_gate::tokens",
        outcome = "refreshed",
        connection,
        identifier = %crate::telemetry::escape(identifier),
        provider_ms = exchanged.provider_latency.as_secs_f64() * 1000.0,
        "tokens refreshed"
    );
    Ok(())
}

/// Disconnects an account: revokes its tokens at the provider where the provider supports it (RFC 7009), then
/// deletes them. Returns whether the provider confirmed a revocation; a failed revocation is logged, and the
/// account is disconnected all the same.
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

//! Persistence: authorization links, flows, connected accounts and outcome events.
//!
//! The domain talks to [`Store`] in domain terms only. Two backends implement every operation, chosen by
//! `database_url`: [`sqlite`], embedded, for one instance (the default), and [`postgres`], for several instances
//! sharing one database. Each operation is one transaction in either backend; what must happen once (claiming a
//! flow for its callback, answering a verification, ending an abandoned flow) is a conditional write that exactly
//! one caller wins, whichever process it runs in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;

use crate::account::{AccountStatus, ConnectedAccount, Metadata};

// The columns both backends read, as literals for queries built with `concat!`; defined before the backends so
// both can use them.
/// Columns read for a flow.
macro_rules! flow_columns {
    () => {
        "id, state_hash, link_id, connection, identifier, browser_hash, sealed_secrets, return_to, status, \
         outcome_code, outcome_cause, reference, created_at, expires_at, claimed_at"
    };
}

/// The columns of an outcome event, in `outcome_events` and (on PostgreSQL) `unauthenticated_events` alike.
macro_rules! event_columns {
    () => {
        "reference, code, cause, class, connection, identifier, flow_id, error, error_description, error_uri, iss, \
         provider_status, provider_body, detail, hint, created_at"
    };
}

/// Columns read for a connected account.
macro_rules! account_columns {
    () => {
        "connection, identifier, status, scopes, created_at, updated_at, last_error_code, last_error_reference, \
         last_error_at, missing_scopes, metadata"
    };
}

/// Columns read for an account's tokens by a refresh.
macro_rules! token_state_columns {
    () => {
        "status, token_version, sealed_tokens, key_id, scopes, refresh_lease_until, refresh_failures, metadata"
    };
}

/// Columns read for a delivery.
macro_rules! delivery_columns {
    () => {
        "id, event_type, payload, status, attempts, created_at, next_attempt_at, last_status, last_error, delivered_at"
    };
}

/// Columns read for held tokens.
macro_rules! pending_columns {
    () => {
        "flow_id, connection, identifier, scopes, sealed_tokens, key_id, token_expires_at, refresh_due_at, expires_at, \
         metadata"
    };
}

pub mod events;
pub mod postgres;
pub mod sqlite;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("database error: {}", postgres::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("the database is unreachable: {0}")]
    Unavailable(String),
    #[error("database_url {0}")]
    Url(String),
    #[error("the database is busy: its queue of operations is full")]
    Busy,
    #[error("the database is closed")]
    Closed,
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether the database could not be reached or could not take the operation now (it is down, restarting,
    /// overloaded or out of connections), as opposed to refusing the operation: worth answering 503 and trying
    /// again later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Busy | Self::Closed | Self::Unavailable(_) => true,
            Self::Database(rusqlite::Error::SqliteFailure(err, _)) => matches!(
                err.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::CannotOpen
            ),
            Self::Postgres(err) => postgres::is_unavailable(err),
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LinkRecord {
    pub id: String,
    pub connection: String,
    pub identifier: String,
    pub return_to: Option<String>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// When a flow started from this link connected the account; a consumed link starts no more flows.
    pub consumed_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowStatus {
    /// Waiting for the provider to send the browser back.
    Started,
    /// A callback claimed it; the code is being exchanged.
    Exchanging,
    /// Tokens are held until the app confirms which user finished the flow.
    Verifying,
    Succeeded,
    Failed,
}

impl FlowStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Exchanging => "exchanging",
            Self::Verifying => "verifying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub(crate) fn parse(value: &str) -> Result<Self, StoreError> {
        Ok(match value {
            "started" => Self::Started,
            "exchanging" => Self::Exchanging,
            "verifying" => Self::Verifying,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            other => {
                return Err(StoreError::Corrupt(format!("unknown flow status {other:?}")));
            }
        })
    }
}

/// What [`Store::claim_flow`] did with the flow it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The flow is this callback's now: it moved from started to exchanging.
    Claimed,
    /// The callback did not carry the browser binding of the browser that started the flow; the flow is untouched.
    OtherBrowser,
    /// The flow is no longer waiting for a callback (the status in the returned record says why).
    NotStarted,
    /// The flow was still waiting, but another flow started from the same link has connected the account since:
    /// the link is consumed, and this flow may not connect it again. The flow is untouched.
    LinkUsed,
}

#[derive(Debug, Clone)]
pub struct FlowRecord {
    pub id: String,
    pub state_hash: String,
    pub link_id: String,
    pub connection: String,
    pub identifier: String,
    pub browser_hash: String,
    pub sealed_secrets: Vec<u8>,
    pub return_to: Option<String>,
    pub status: FlowStatus,
    pub outcome_code: Option<String>,
    /// For `failed_to_exchange_token`: why the exchange failed.
    pub outcome_cause: Option<String>,
    pub reference: Option<String>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// When a callback claimed the flow.
    pub claimed_at: Option<OffsetDateTime>,
}

/// Tokens to store for an account after a successful exchange.
#[derive(Debug, Clone)]
pub struct TokenWrite {
    pub connection: String,
    pub identifier: String,
    pub status: AccountStatus,
    pub scopes: Vec<String>,
    pub sealed_tokens: Vec<u8>,
    pub key_id: String,
    /// Unix seconds when the access token expires, where the provider said.
    pub token_expires_at: Option<i64>,
    /// When the background refresher renews these tokens (see `tokens::refresh_due`); none for tokens that do not
    /// expire.
    pub refresh_due_at: Option<OffsetDateTime>,
    /// What the provider told about the account; a refresh that learnt nothing new keeps what is stored.
    pub metadata: Metadata,
}

impl TokenWrite {
    /// The granted scopes as the JSON array stored in the `scopes` column.
    pub(crate) fn scopes_json(&self) -> Result<String, StoreError> {
        serde_json::to_string(&self.scopes).map_err(|err| StoreError::Corrupt(err.to_string()))
    }

    /// The metadata as the JSON object stored in the `metadata` column; none when there is none.
    pub(crate) fn metadata_json(&self) -> Result<Option<String>, StoreError> {
        if self.metadata.is_empty() {
            return Ok(None);
        }
        serde_json::to_string(&self.metadata).map(Some).map_err(|err| StoreError::Corrupt(err.to_string()))
    }
}

/// An account's tokens as a refresh reads them: what it must present, and the version its write is conditional on.
#[derive(Debug, Clone)]
pub struct TokenState {
    pub status: AccountStatus,
    /// Increases with every write of the account's tokens or status.
    pub version: i64,
    /// The sealed tokens and the id of the key that sealed them; none once disconnected.
    pub sealed: Option<(Vec<u8>, String)>,
    pub scopes: Vec<String>,
    /// Until when another refresh holds the account, where one does.
    pub lease_until: Option<OffsetDateTime>,
    /// Transient refresh failures in a row, for backoff.
    pub refresh_failures: i64,
    pub metadata: Metadata,
}

/// What [`Store::take_refresh_lease`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// This refresh holds the account until the lease's end: it alone may refresh it now.
    Taken,
    /// Another refresh, in this or another process, holds it until then.
    Held { until: OffsetDateTime },
    /// The account's tokens or status changed since they were read (a refresh, a flow or a disconnect finished):
    /// whatever the caller wanted to refresh is no longer what is stored.
    Changed,
    /// The account no longer exists.
    Gone,
}

/// How a refresh that held an account's lease ends.
#[derive(Debug, Clone)]
pub enum RefreshEnd {
    /// New tokens: the account becomes ACTIVE with them.
    Refreshed(TokenWrite),
    /// The provider refused the stored refresh token for good (`invalid_grant`), or the tokens expired with no
    /// refresh token: the account becomes EXPIRED.
    Expired,
    /// A transient failure: the account stays as it is, and the background refresher tries again at `due_at`.
    Retry { due_at: OffsetDateTime },
    /// Nothing to write (there was nothing to refresh with): the lease is released, the account left as it is.
    Release,
}

/// An account whose tokens the background refresher should renew now.
#[derive(Debug, Clone)]
pub struct DueRefresh {
    pub connection: String,
    pub identifier: String,
    pub version: i64,
}

/// Where a webhook delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (or being attempted now).
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Every attempt for a day failed; `POST /v1/webhook-deliveries/{id}/retry` tries again.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub(crate) fn parse(value: &str) -> Result<Self, StoreError> {
        match value {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "failed" => Ok(Self::Failed),
            other => Err(StoreError::Corrupt(format!("unknown delivery status {other:?}"))),
        }
    }
}

/// One event in the webhook outbox, as operators see it.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    /// The `webhook-id`, the same on every attempt.
    pub id: String,
    pub event_type: String,
    /// The JSON body, exactly as signed and sent.
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub created_at: OffsetDateTime,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<OffsetDateTime>,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone)]
pub enum DeliveryEnd {
    Delivered {
        status: i64,
    },
    /// Not delivered; tried again at `next_at`.
    Retry {
        status: Option<i64>,
        error: String,
        next_at: OffsetDateTime,
    },
    /// Not delivered, and no more attempts.
    Failed {
        status: Option<i64>,
        error: String,
    },
}

/// The column values an attempt's end writes: status, last HTTP status, last error, next attempt, delivered at.
pub(crate) fn delivery_end_values(
    end: &DeliveryEnd,
    now: OffsetDateTime,
) -> (&'static str, Option<i64>, Option<String>, Option<i64>, Option<i64>) {
    match end {
        DeliveryEnd::Delivered { status } => ("delivered", Some(*status), None, None, Some(millis(now))),
        DeliveryEnd::Retry { status, error, next_at } => {
            ("pending", *status, Some(error.clone()), Some(millis(*next_at)), None)
        }
        DeliveryEnd::Failed { status, error } => ("failed", *status, Some(error.clone()), None, None),
    }
}

/// Filters and position for listing deliveries, newest first.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    pub status: Option<DeliveryStatus>,
    /// Keyset position: list deliveries before this (created_at in ms, id).
    pub before: Option<(i64, String)>,
    pub limit: u32,
}

/// Tokens held for user verification.
#[derive(Debug, Clone)]
pub struct PendingVerification {
    pub flow_id: String,
    pub tokens: TokenWrite,
    pub expires_at: OffsetDateTime,
}

/// Makes the flow a link starts, or refuses to (`None`), for [`Store::start_flow`]; it may run on a database thread,
/// so it only computes.
pub type BuildFlow = Box<dyn FnOnce(&LinkRecord) -> Option<FlowRecord> + Send>;

/// What [`Store::start_flow`] found and stored.
#[derive(Debug)]
pub struct StartedFlow {
    /// The link, as read; `None` when there is no such link.
    pub link: Option<LinkRecord>,
    /// The flow stored; `None` when there is no link or the builder refused it.
    pub flow: Option<FlowRecord>,
}

/// How a flow's failure is written on the flow: its code, cause and reference.
#[derive(Debug, Clone)]
pub struct FlowEnding {
    pub code: String,
    pub cause: Option<String>,
    pub reference: String,
    pub at: OffsetDateTime,
}

/// What [`Store::confirm_verification`] found under an `auth_request_id`.
#[derive(Debug)]
pub enum Confirmation {
    /// No held tokens wait for the app's answer under it (unknown, already answered, or swept).
    Unknown,
    /// The app named another user, or answered too late: the held tokens were discarded and the flow failed.
    Refused { pending: PendingVerification, late: bool },
    /// The app named the right user: the tokens now wait for the browser that consented.
    Confirmed(PendingVerification),
}

/// What [`Store::finish_verification`] did when a browser brought an app's confirmation back.
#[derive(Debug)]
pub enum Arrival {
    /// The browser that consented arrived in time: the account holds the tokens now.
    Connected(PendingVerification),
    /// Another browser (or one too late) brought the confirmation: the held tokens were discarded and the flow
    /// failed.
    Refused { pending: PendingVerification, other_browser: bool },
}

/// A flow that will never finish by itself, ended by [`Store::end_abandoned_flows`].
#[derive(Debug, Clone)]
pub struct Abandoned {
    pub flow: FlowRecord,
    /// What it was doing when abandoned: exchanging (its callback stopped mid-way) or verifying (no answer came).
    pub was: FlowStatus,
    pub reference: String,
}

/// What happened behind one reference.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeEvent {
    pub reference: String,
    pub code: String,
    pub cause: Option<String>,
    pub class: String,
    pub connection: Option<String>,
    pub identifier: Option<String>,
    pub flow_id: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub error_uri: Option<String>,
    pub iss: Option<String>,
    pub provider_status: Option<i64>,
    pub provider_body: Option<String>,
    pub detail: String,
    /// The developer hint when it has specifics of this failure; empty when it is the catalog's text for `code` and
    /// `cause`, which is not stored again with every event.
    pub hint: String,
    pub created_at: Millis,
    /// Caused by a request that matched no flow and no account: anyone can send one, so only a bounded digest is
    /// stored and only the newest are kept.
    #[serde(skip)]
    pub unauthenticated: bool,
}

#[cfg(test)]
impl OutcomeEvent {
    /// The event of a callback with no state, written at `at`: what the store's tests write by the thousand.
    pub(crate) fn unmatched_for_tests(reference: &str, at: OffsetDateTime) -> Self {
        Self {
            reference: reference.into(),
            code: "state_missing".into(),
            cause: None,
            class: "security".into(),
            connection: None,
            identifier: None,
            flow_id: None,
            error: None,
            error_description: None,
            error_uri: None,
            iss: None,
            provider_status: None,
            provider_body: None,
            detail: "no state".into(),
            hint: String::new(),
            created_at: Millis(at),
            unauthenticated: true,
        }
    }
}

/// Time stored as unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Millis(pub OffsetDateTime);

impl Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        time::serde::rfc3339::serialize(&self.0, serializer)
    }
}

impl std::ops::Deref for Millis {
    type Target = OffsetDateTime;
    fn deref(&self) -> &OffsetDateTime {
        &self.0
    }
}

pub fn millis(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(crate) fn from_millis(ms: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| StoreError::Corrupt(format!("timestamp {ms} out of range")))
}

/// A JSON array of scopes as stored; none is empty.
/// A stored `metadata` column.
pub(crate) fn parse_metadata(json: Option<&str>) -> Result<Metadata, StoreError> {
    match json {
        None => Ok(Metadata::new()),
        Some(json) => serde_json::from_str(json).map_err(|err| StoreError::Corrupt(err.to_string())),
    }
}

pub(crate) fn parse_scopes(json: Option<&str>) -> Result<Vec<String>, StoreError> {
    match json {
        None => Ok(Vec::new()),
        Some(json) => serde_json::from_str(json).map_err(|err| StoreError::Corrupt(err.to_string())),
    }
}

/// `current` (a stored JSON array, or none) with `more` added, as the JSON array to store.
pub(crate) fn merge_scopes(current: Option<&str>, more: Vec<String>) -> Result<String, StoreError> {
    let mut scopes = parse_scopes(current)?;
    for scope in more {
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    serde_json::to_string(&scopes).map_err(|err| StoreError::Corrupt(err.to_string()))
}

/// Filters and position for listing accounts.
#[derive(Debug, Clone, Default)]
pub struct AccountQuery {
    pub connection: Option<String>,
    pub status: Option<AccountStatus>,
    /// Keyset position: list accounts after this (connection, identifier).
    pub after: Option<(String, String)>,
    pub limit: u32,
}

/// How long finished flows are kept so their result page stays refreshable.
pub const FLOW_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// How long delivered webhook events are kept for operators to look at.
pub const DELIVERED_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// How long failed webhook events are kept for a retry.
pub const FAILED_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// How long outcome events (references) are kept.
pub const REFERENCE_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Rows of events of requests that matched no flow a sweep looks at, from the oldest (they lie in the order they
/// were written): events on PostgreSQL, batches of them on SQLite.
pub const UNAUTHENTICATED_SWEEP_WINDOW: i64 = 10_000;

/// The store's tables, named for counting.
#[derive(Debug, Clone, Copy)]
pub enum Table {
    Links,
    Flows,
    Accounts,
    OutcomeEvents,
    PendingVerifications,
    WebhookOutbox,
}

/// Which kind of database a `database_url` names, or why it names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend of a `database_url`: `sqlite:` or `postgres:`/`postgresql:`. Checks the URL's form without
    /// connecting, so `check` can name every problem.
    pub fn of(database_url: &str) -> Result<Self, StoreError> {
        let scheme = database_url.split_once(':').map(|(scheme, _)| scheme.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("sqlite") => sqlite::database_path(database_url).map(|_| Self::Sqlite),
            Some("postgres" | "postgresql") => postgres::options(database_url).map(|_| Self::Postgres),
            _ => Err(StoreError::Url(
                "must start with sqlite:// (one instance, embedded) or postgres:// (several instances)".into(),
            )),
        }
    }
}

/// Called with each store operation's name and how long it took (metrics hook).
pub type Observer = Arc<dyn Fn(&'static str, Duration) + Send + Sync>;

/// The store the domain uses, whichever backend holds it.
#[derive(Clone)]
pub struct Store {
    backend: Backing,
    observer: Option<Observer>,
}

/// What a checkpoint found: the pages the write-ahead log held, and those of them left to copy (pages that readers
/// still use stay until they are done).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub log: i64,
    pub left: i64,
}

#[derive(Debug, Clone)]
enum Backing {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PostgresStore),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish_non_exhaustive()
    }
}

/// Runs one operation on whichever backend holds the store, timing it for the observer.
macro_rules! dispatch {
    ($self:ident, $name:literal, $method:ident($($arg:expr),*)) => {{
        let started = Instant::now();
        let result = match &$self.backend {
            Backing::Sqlite(store) => store.$method($($arg),*).await,
            Backing::Postgres(store) => store.$method($($arg),*).await,
        };
        if let Some(observe) = &$self.observer {
            observe($name, started.elapsed());
        }
        result
    }};
}

impl Store {
    /// Opens the database `database_url` names, creating its schema or bringing it up to date.
    pub async fn connect(database_url: &str) -> Result<Self, StoreError> {
        let backend = match Backend::of(database_url)? {
            Backend::Sqlite => Backing::Sqlite(sqlite::SqliteStore::connect(database_url).await?),
            Backend::Postgres => Backing::Postgres(postgres::PostgresStore::connect(database_url).await?),
        };
        Ok(Self { backend, observer: None })
    }

    /// Reports each operation's latency to `observer` from now on.
    pub fn observed(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Which backend holds the store.
    pub fn backend(&self) -> Backend {
        match self.backend {
            Backing::Sqlite(_) => Backend::Sqlite,
            Backing::Postgres(_) => Backend::Postgres,
        }
    }

    /// Background maintenance of the database's own files: SQLite copies its write-ahead log into the database
    /// file; PostgreSQL does its own (autovacuum, checkpoints), so this does nothing there.
    pub async fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        dispatch!(self, "checkpoint", checkpoint())
    }

    /// Answers when the database does.
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, "ping", ping())
    }

    /// Closes every connection; operations after this fail as [`StoreError::Closed`].
    pub async fn close(&self) {
        match &self.backend {
            Backing::Sqlite(store) => store.close().await,
            Backing::Postgres(store) => store.close().await,
        }
    }

    /// Stores a new link and makes its account PENDING_AUTH if the account is new. At most `keep` links are kept
    /// per connection and identifier: the oldest go first.
    pub async fn create_link(&self, link: &LinkRecord, keep: u32) -> Result<(), StoreError> {
        dispatch!(self, "create_link", create_link(link, keep))
    }

    pub async fn find_link(&self, id: &str) -> Result<Option<LinkRecord>, StoreError> {
        dispatch!(self, "find_link", find_link(id))
    }

    /// Starts a flow from a link in one operation: reads the link, lets `build` make the flow from it (or refuse,
    /// with `None`), and stores the flow; at most `keep` started flows are kept per connection and identifier, the
    /// oldest go first. Answers the link as read (`None`: there is no such link) and the flow stored, if any. On
    /// SQLite all of it runs on the writer, in one transaction, so the link cannot change between the check and the
    /// insert, and a start makes one hand-off to a database thread instead of two.
    pub async fn start_flow(&self, link_id: &str, keep: u32, build: BuildFlow) -> Result<StartedFlow, StoreError> {
        dispatch!(self, "start_flow", start_flow(link_id, keep, build))
    }

    pub async fn find_flow(&self, id: &str) -> Result<Option<FlowRecord>, StoreError> {
        dispatch!(self, "find_flow", find_flow(id))
    }

    /// Finds the flow of a callback's state and claims it for that callback when it was started in the same
    /// browser (`browser_hash`, compared in constant time), is still waiting, and its link was not consumed by
    /// another flow. Of any number of concurrent callers with one state, in any number of processes, exactly one
    /// gets [`Claim::Claimed`].
    pub async fn claim_flow(
        &self,
        state_hash: &str,
        browser_hash: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Option<(FlowRecord, Claim)>, StoreError> {
        dispatch!(self, "claim_flow", claim_flow(state_hash, browser_hash, now))
    }

    /// Ends a flow that succeeded, storing the account's tokens and consuming its link in the same transaction.
    /// Returns false, and changes nothing, when the flow was no longer exchanging or verifying (it was ended
    /// meanwhile).
    pub async fn complete_flow(
        &self,
        flow_id: &str,
        tokens: &TokenWrite,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        dispatch!(self, "complete_flow", complete_flow(flow_id, tokens, now))
    }

    /// Holds a flow's tokens until the app verifies its user. An account that is not ACTIVE becomes
    /// PENDING_VERIFICATION; an ACTIVE one keeps its current tokens until then.
    pub async fn hold_for_verification(
        &self,
        request_hash: &str,
        flow_id: &str,
        tokens: &TokenWrite,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        dispatch!(self, "hold_for_verification", hold_for_verification(request_hash, flow_id, tokens, expires_at, now))
    }

    /// The app's answer to a user verification. When `identifier` (compared in constant time) is the one the link
    /// was minted for and the held tokens have not expired, they are marked confirmed under `confirmation_hash`
    /// and wait for the browser that consented ([`Store::finish_verification`]). Otherwise they are discarded and
    /// the flow fails under `ending` at once. Each `auth_request_id` is answered once: of concurrent callers,
    /// exactly one finds it.
    pub async fn confirm_verification(
        &self,
        request_hash: &str,
        identifier: &str,
        confirmation_hash: &str,
        ending: FlowEnding,
    ) -> Result<Confirmation, StoreError> {
        dispatch!(
            self,
            "confirm_verification",
            confirm_verification(request_hash, identifier, confirmation_hash, ending)
        )
    }

    /// A browser brings an app's confirmation back. The held tokens are taken (each confirmation is used once);
    /// when the browser is the one that started and consented in the flow (`browser_hash`, compared in constant
    /// time) and the tokens have not expired, the account receives them in the same transaction. Otherwise they
    /// are discarded and the flow fails under `ending`.
    pub async fn finish_verification(
        &self,
        confirmation_hash: &str,
        browser_hash: Option<String>,
        ending: FlowEnding,
    ) -> Result<Option<Arrival>, StoreError> {
        dispatch!(self, "finish_verification", finish_verification(confirmation_hash, browser_hash, ending))
    }

    /// An account's tokens, status and version, as a refresh reads them.
    pub async fn token_state(&self, connection: &str, identifier: &str) -> Result<Option<TokenState>, StoreError> {
        dispatch!(self, "token_state", token_state(connection, identifier))
    }

    /// Takes the account's one refresh lease until `until`, when the account is still at `version`, ACTIVE or
    /// EXPIRED, and no other lease is running. Of concurrent callers, in any number of processes, one takes it.
    pub async fn take_refresh_lease(
        &self,
        connection: &str,
        identifier: &str,
        version: i64,
        lease: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Lease, StoreError> {
        dispatch!(self, "take_refresh_lease", take_refresh_lease(connection, identifier, version, lease, until, now))
    }

    /// Ends the refresh holding `lease`, and releases it. Writes only while the account is still at `version` and
    /// the lease is still this one's: returns false, and changes nothing, when a disconnect, a new flow or
    /// another refresh came first.
    pub async fn end_refresh(
        &self,
        connection: &str,
        identifier: &str,
        version: i64,
        lease: &str,
        end: RefreshEnd,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        dispatch!(self, "end_refresh", end_refresh(connection, identifier, version, lease, end, now))
    }

    /// ACTIVE accounts whose refresh is due by `now` and that no refresh holds, soonest first.
    pub async fn due_refreshes(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<DueRefresh>, StoreError> {
        dispatch!(self, "due_refreshes", due_refreshes(now, limit))
    }

    /// Adds scopes the provider said an API call lacked to the account's `missing_scopes`, while the account is
    /// still at `version` (a new flow clears them).
    pub async fn note_missing_scopes(
        &self,
        connection: &str,
        identifier: &str,
        version: i64,
        scopes: Vec<String>,
    ) -> Result<(), StoreError> {
        dispatch!(self, "note_missing_scopes", note_missing_scopes(connection, identifier, version, scopes))
    }

    /// Sets an account's status; `DISCONNECTED` also deletes its tokens. A status change outdates whatever a
    /// running refresh read: its write will change nothing.
    pub async fn set_status(
        &self,
        connection: &str,
        identifier: &str,
        status: AccountStatus,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        dispatch!(self, "set_status", set_status(connection, identifier, status, now))
    }

    /// Ends a flow that failed, unless it has ended already (a late writer never overwrites an ending). The
    /// account keeps whatever tokens and status it had. Returns whether this call ended the flow.
    pub async fn fail_flow(&self, flow_id: &str, ending: FlowEnding) -> Result<bool, StoreError> {
        dispatch!(self, "fail_flow", fail_flow(flow_id, ending))
    }

    /// Ends flows that will never finish by themselves: flows whose callback claimed them before `claimed_before`
    /// and never finished (the process stopped mid-exchange), and flows whose held tokens are gone or expired
    /// without an answer. Each gets the ending `ending_for` gives for what it was waiting on. With `only`, just that
    /// flow is looked at. Of several callers at once, in any number of processes, each flow is ended by exactly
    /// one.
    pub async fn end_abandoned_flows(
        &self,
        now: OffsetDateTime,
        claimed_before: OffsetDateTime,
        only: Option<String>,
        ending_for: impl Fn(FlowStatus) -> FlowEnding + Send + 'static,
    ) -> Result<Vec<Abandoned>, StoreError> {
        dispatch!(self, "end_abandoned_flows", end_abandoned_flows(now, claimed_before, only, ending_for))
    }

    /// Records a failure under its reference and, where the account exists, makes it the account's last error.
    pub async fn record_outcome(&self, event: &OutcomeEvent) -> Result<(), StoreError> {
        dispatch!(self, "record_outcome", record_outcome(event))
    }

    /// Records events that concern no account, many in one transaction. Of the events caused by requests that
    /// matched no flow and no account, only the newest `keep_unauthenticated` are kept: whoever sends such
    /// requests, what they leave in the store is bounded.
    pub async fn record_outcomes(
        &self,
        events: Arc<[Arc<OutcomeEvent>]>,
        keep_unauthenticated: u64,
    ) -> Result<(), StoreError> {
        dispatch!(self, "record_outcomes", record_outcomes(events, keep_unauthenticated))
    }

    pub async fn reference(&self, reference: &str) -> Result<Option<OutcomeEvent>, StoreError> {
        dispatch!(self, "reference", reference(reference))
    }

    pub async fn account(&self, connection: &str, identifier: &str) -> Result<Option<ConnectedAccount>, StoreError> {
        dispatch!(self, "account", account(connection, identifier))
    }

    /// The sealed tokens of an account and the id of the key that sealed them.
    pub async fn sealed_tokens(
        &self,
        connection: &str,
        identifier: &str,
    ) -> Result<Option<(Vec<u8>, String)>, StoreError> {
        dispatch!(self, "sealed_tokens", sealed_tokens(connection, identifier))
    }

    /// Lists accounts ordered by (connection, identifier), after the given position.
    pub async fn list_accounts(&self, query: &AccountQuery) -> Result<Vec<ConnectedAccount>, StoreError> {
        dispatch!(self, "list_accounts", list_accounts(query))
    }

    /// Deletes expired links, old flows and old references, so the store stays bounded. With several instances
    /// on one database, one sweeps at a time; the others find nothing to do.
    pub async fn sweep(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        dispatch!(self, "sweep", sweep(now))
    }

    /// Whether the triggers write webhook events from now on (each instance says so at start-up, from its config).
    pub async fn enable_webhooks(&self, enabled: bool) -> Result<(), StoreError> {
        dispatch!(self, "enable_webhooks", enable_webhooks(enabled))
    }

    /// Takes up to `limit` deliveries that are due and that no attempt holds, for one attempt each until `until`.
    /// Of several workers at once, in any number of processes, each delivery goes to one.
    pub async fn claim_deliveries(
        &self,
        lease: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        dispatch!(self, "claim_deliveries", claim_deliveries(lease, until, now, limit))
    }

    /// Records how an attempt holding `lease` ended. False when the lease was lost (the attempt overran it).
    pub async fn end_delivery(
        &self,
        id: &str,
        lease: &str,
        end: DeliveryEnd,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        dispatch!(self, "end_delivery", end_delivery(id, lease, end, now))
    }

    /// Deliveries, newest first.
    pub async fn list_deliveries(&self, query: &DeliveryQuery) -> Result<Vec<DeliveryRecord>, StoreError> {
        dispatch!(self, "list_deliveries", list_deliveries(query))
    }

    /// Makes a delivery pending again, due now; none when there is no such delivery.
    pub async fn retry_delivery(&self, id: &str, now: OffsetDateTime) -> Result<Option<DeliveryRecord>, StoreError> {
        dispatch!(self, "retry_delivery", retry_delivery(id, now))
    }

    /// How many deliveries wait for an attempt: the outbox depth.
    pub async fn pending_deliveries(&self) -> Result<i64, StoreError> {
        dispatch!(self, "pending_deliveries", pending_deliveries())
    }

    /// Counts rows per table, for tests and metrics.
    pub async fn count(&self, table: Table) -> Result<i64, StoreError> {
        dispatch!(self, "count", count(table))
    }
}

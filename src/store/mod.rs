//! Persistence: authorization links, flows, connected accounts and outcome events.
//!
//! Handlers talk to [`Store`] in domain terms only; the SQL for the embedded SQLite backend lives in this module,
//! so another backend can be added here without touching a handler.

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, Row};
use time::OffsetDateTime;

use crate::account::{AccountStatus, ConnectedAccount, LastError};

pub mod events;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

/// Columns read for a flow; a macro so queries stay literal strings.
macro_rules! flow_columns {
    () => {
        "id, state_hash, link_id, connection, identifier, browser_hash, sealed_secrets, return_to, status, \
         outcome_code, reference, created_at, expires_at"
    };
}

/// Columns read for a connected account.
macro_rules! account_columns {
    () => {
        "connection, identifier, status, scopes, created_at, updated_at, last_error_code, last_error_reference, \
         last_error_at"
    };
}

/// SQLite allows one writer at a time. Writes go through a pool of exactly one connection, so they queue in the
/// pool instead of colliding in SQLite's busy handler (which sleeps and retries); reads use their own connections,
/// which WAL lets run beside the writer.
#[derive(Debug, Clone)]
pub struct Store {
    writer: SqlitePool,
    reader: SqlitePool,
}

#[derive(Debug, Clone)]
pub struct LinkRecord {
    pub id: String,
    pub connection: String,
    pub identifier: String,
    pub return_to: Option<String>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
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
    fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Exchanging => "exchanging",
            Self::Verifying => "verifying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    fn parse(value: &str) -> Result<Self, StoreError> {
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
    pub reference: Option<String>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
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
    pub token_expires_at: Option<i64>,
}

/// Tokens held for user verification.
#[derive(Debug, Clone)]
pub struct PendingVerification {
    pub flow_id: String,
    pub tokens: TokenWrite,
    pub expires_at: OffsetDateTime,
}

/// What happened behind one reference.
#[derive(Debug, Clone, Serialize, FromRow)]
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
    pub hint: String,
    #[serde(with = "time::serde::rfc3339")]
    #[sqlx(try_from = "i64")]
    pub created_at: Millis,
}

/// Time stored as unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Millis(pub OffsetDateTime);

impl TryFrom<i64> for Millis {
    type Error = StoreError;
    fn try_from(ms: i64) -> Result<Self, StoreError> {
        from_millis(ms).map(Millis)
    }
}

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

fn from_millis(ms: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| StoreError::Corrupt(format!("timestamp {ms} out of range")))
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
/// How long outcome events (references) are kept.
pub const REFERENCE_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

impl Store {
    /// Opens (creating if needed) the database and runs the migrations.
    pub async fn connect(database_url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(database_url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { writer, reader })
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    /// Stores a new link and makes its account PENDING_AUTH if the account is new. At most `keep` links are kept
    /// per connection and identifier: the oldest go first.
    pub async fn create_link(&self, link: &LinkRecord, keep: u32) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO authorization_links (id, connection, identifier, return_to, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&link.id)
        .bind(&link.connection)
        .bind(&link.identifier)
        .bind(&link.return_to)
        .bind(millis(link.created_at))
        .bind(millis(link.expires_at))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO connected_accounts (connection, identifier, status, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (connection, identifier) DO NOTHING",
        )
        .bind(&link.connection)
        .bind(&link.identifier)
        .bind(AccountStatus::PendingAuth.as_str())
        .bind(millis(link.created_at))
        .bind(millis(link.created_at))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM authorization_links WHERE connection = ? AND identifier = ? AND id NOT IN
                (SELECT id FROM authorization_links WHERE connection = ? AND identifier = ?
                 ORDER BY created_at DESC, id LIMIT ?)",
        )
        .bind(&link.connection)
        .bind(&link.identifier)
        .bind(&link.connection)
        .bind(&link.identifier)
        .bind(i64::from(keep))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn find_link(&self, id: &str) -> Result<Option<LinkRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, connection, identifier, return_to, created_at, expires_at FROM authorization_links WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| {
            Ok(LinkRecord {
                id: row.try_get("id")?,
                connection: row.try_get("connection")?,
                identifier: row.try_get("identifier")?,
                return_to: row.try_get("return_to")?,
                created_at: from_millis(row.try_get("created_at")?)?,
                expires_at: from_millis(row.try_get("expires_at")?)?,
            })
        })
        .transpose()
    }

    /// Stores a new flow. At most `keep` started flows are kept per connection and identifier: the oldest go first.
    pub async fn create_flow(&self, flow: &FlowRecord, keep: u32) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO flows (id, state_hash, link_id, connection, identifier, browser_hash, sealed_secrets, return_to,
                                status, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&flow.id)
        .bind(&flow.state_hash)
        .bind(&flow.link_id)
        .bind(&flow.connection)
        .bind(&flow.identifier)
        .bind(&flow.browser_hash)
        .bind(&flow.sealed_secrets)
        .bind(&flow.return_to)
        .bind(flow.status.as_str())
        .bind(millis(flow.created_at))
        .bind(millis(flow.expires_at))
        .execute(&mut *tx)
        .await?;
        // A flood of starts for one identifier keeps only its newest flows waiting for a callback.
        sqlx::query(
            "DELETE FROM flows WHERE connection = ? AND identifier = ? AND status = 'started' AND id NOT IN
                (SELECT id FROM flows WHERE connection = ? AND identifier = ? AND status = 'started'
                 ORDER BY created_at DESC, id LIMIT ?)",
        )
        .bind(&flow.connection)
        .bind(&flow.identifier)
        .bind(&flow.connection)
        .bind(&flow.identifier)
        .bind(i64::from(keep))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn find_flow_by_state(&self, state_hash: &str) -> Result<Option<FlowRecord>, StoreError> {
        let sql = concat!("SELECT ", flow_columns!(), " FROM flows WHERE state_hash = ?");
        let row = sqlx::query(sql).bind(state_hash).fetch_optional(&self.reader).await?;
        row.map(|row| flow_from_row(&row)).transpose()
    }

    pub async fn find_flow(&self, id: &str) -> Result<Option<FlowRecord>, StoreError> {
        let sql = concat!("SELECT ", flow_columns!(), " FROM flows WHERE id = ?");
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.reader).await?;
        row.map(|row| flow_from_row(&row)).transpose()
    }

    /// Claims a started flow for one callback. Exactly one of any number of concurrent callers gets `true`.
    pub async fn claim_flow(&self, id: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("UPDATE flows SET status = 'exchanging' WHERE id = ? AND status = 'started'")
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Ends a flow that succeeded, storing the account's tokens in the same transaction.
    pub async fn complete_flow(
        &self,
        flow_id: &str,
        tokens: &TokenWrite,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let scopes = serde_json::to_string(&tokens.scopes).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO connected_accounts (connection, identifier, status, scopes, sealed_tokens, key_id, token_expires_at,
                                             created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (connection, identifier) DO UPDATE SET
                status = excluded.status, scopes = excluded.scopes, sealed_tokens = excluded.sealed_tokens,
                key_id = excluded.key_id, token_expires_at = excluded.token_expires_at, updated_at = excluded.updated_at",
        )
        .bind(&tokens.connection)
        .bind(&tokens.identifier)
        .bind(tokens.status.as_str())
        .bind(scopes)
        .bind(&tokens.sealed_tokens)
        .bind(&tokens.key_id)
        .bind(tokens.token_expires_at)
        .bind(millis(now))
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE flows SET status = 'succeeded', finished_at = ? WHERE id = ?")
            .bind(millis(now))
            .bind(flow_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
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
        let scopes = serde_json::to_string(&tokens.scopes).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO pending_verifications (request_hash, flow_id, connection, identifier, scopes, sealed_tokens, key_id,
                                                token_expires_at, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(request_hash)
        .bind(flow_id)
        .bind(&tokens.connection)
        .bind(&tokens.identifier)
        .bind(scopes)
        .bind(&tokens.sealed_tokens)
        .bind(&tokens.key_id)
        .bind(tokens.token_expires_at)
        .bind(millis(now))
        .bind(millis(expires_at))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO connected_accounts (connection, identifier, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (connection, identifier) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at
             WHERE connected_accounts.status <> 'ACTIVE'",
        )
        .bind(&tokens.connection)
        .bind(&tokens.identifier)
        .bind(AccountStatus::PendingVerification.as_str())
        .bind(millis(now))
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE flows SET status = 'verifying' WHERE id = ?").bind(flow_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes (and so consumes) held tokens; of concurrent callers with one request, exactly one gets them.
    pub async fn take_verification(&self, request_hash: &str) -> Result<Option<PendingVerification>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM pending_verifications WHERE request_hash = ?
             RETURNING flow_id, connection, identifier, scopes, sealed_tokens, key_id, token_expires_at, expires_at",
        )
        .bind(request_hash)
        .fetch_optional(&self.writer)
        .await?;
        row.map(|row| {
            let scopes: String = row.try_get("scopes")?;
            Ok(PendingVerification {
                flow_id: row.try_get("flow_id")?,
                tokens: TokenWrite {
                    connection: row.try_get("connection")?,
                    identifier: row.try_get("identifier")?,
                    status: AccountStatus::Active,
                    scopes: serde_json::from_str(&scopes).map_err(|err| StoreError::Corrupt(err.to_string()))?,
                    sealed_tokens: row.try_get("sealed_tokens")?,
                    key_id: row.try_get("key_id")?,
                    token_expires_at: row.try_get("token_expires_at")?,
                },
                expires_at: from_millis(row.try_get("expires_at")?)?,
            })
        })
        .transpose()
    }

    /// After held tokens were discarded: an account that was waiting for verification waits for a flow again.
    pub async fn release_pending_account(&self, connection: &str, identifier: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE connected_accounts SET status = 'PENDING_AUTH'
             WHERE connection = ? AND identifier = ? AND status = 'PENDING_VERIFICATION'
               AND NOT EXISTS (SELECT 1 FROM pending_verifications p
                               WHERE p.connection = connected_accounts.connection AND p.identifier = connected_accounts.identifier)",
        )
        .bind(connection)
        .bind(identifier)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Replaces an account's tokens after a refresh and makes it ACTIVE.
    pub async fn replace_tokens(&self, tokens: &TokenWrite, now: OffsetDateTime) -> Result<(), StoreError> {
        let scopes = serde_json::to_string(&tokens.scopes).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        sqlx::query(
            "UPDATE connected_accounts SET status = ?, scopes = ?, sealed_tokens = ?, key_id = ?, token_expires_at = ?,
                updated_at = ? WHERE connection = ? AND identifier = ?",
        )
        .bind(tokens.status.as_str())
        .bind(scopes)
        .bind(&tokens.sealed_tokens)
        .bind(&tokens.key_id)
        .bind(tokens.token_expires_at)
        .bind(millis(now))
        .bind(&tokens.connection)
        .bind(&tokens.identifier)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Sets an account's status; `DISCONNECTED` also deletes its tokens.
    pub async fn set_status(
        &self,
        connection: &str,
        identifier: &str,
        status: AccountStatus,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let wipe = status == AccountStatus::Disconnected;
        sqlx::query(
            "UPDATE connected_accounts SET status = ?, updated_at = ?,
                sealed_tokens = CASE WHEN ? THEN NULL ELSE sealed_tokens END,
                key_id = CASE WHEN ? THEN NULL ELSE key_id END
             WHERE connection = ? AND identifier = ?",
        )
        .bind(status.as_str())
        .bind(millis(now))
        .bind(wipe)
        .bind(wipe)
        .bind(connection)
        .bind(identifier)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Ends a flow that failed. The account keeps whatever tokens and status it had.
    pub async fn fail_flow(
        &self,
        flow_id: &str,
        code: &str,
        reference: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE flows SET status = 'failed', outcome_code = ?, reference = ?, finished_at = ? WHERE id = ?",
        )
        .bind(code)
        .bind(reference)
        .bind(millis(now))
        .bind(flow_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Records a failure under its reference and, where the account exists, makes it the account's last error.
    pub async fn record_outcome(&self, event: &OutcomeEvent) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        insert_event(&mut tx, event).await?;
        if let (Some(connection), Some(identifier)) = (&event.connection, &event.identifier) {
            sqlx::query(
                "UPDATE connected_accounts SET last_error_code = ?, last_error_reference = ?, last_error_at = ?, updated_at = ?
                 WHERE connection = ? AND identifier = ?",
            )
            .bind(&event.code)
            .bind(&event.reference)
            .bind(millis(event.created_at.0))
            .bind(millis(event.created_at.0))
            .bind(connection)
            .bind(identifier)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records events that concern no account, many in one transaction.
    pub async fn record_outcomes(&self, events: &[OutcomeEvent]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        for event in events {
            insert_event(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn reference(&self, reference: &str) -> Result<Option<OutcomeEvent>, StoreError> {
        Ok(sqlx::query_as::<_, OutcomeEvent>("SELECT * FROM outcome_events WHERE reference = ?")
            .bind(reference)
            .fetch_optional(&self.reader)
            .await?)
    }

    pub async fn account(&self, connection: &str, identifier: &str) -> Result<Option<ConnectedAccount>, StoreError> {
        let sql =
            concat!("SELECT ", account_columns!(), " FROM connected_accounts WHERE connection = ? AND identifier = ?");
        let row = sqlx::query(sql).bind(connection).bind(identifier).fetch_optional(&self.reader).await?;
        row.map(|row| account_from_row(&row)).transpose()
    }

    /// The sealed tokens of an account and the id of the key that sealed them.
    pub async fn sealed_tokens(
        &self,
        connection: &str,
        identifier: &str,
    ) -> Result<Option<(Vec<u8>, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT sealed_tokens, key_id FROM connected_accounts WHERE connection = ? AND identifier = ?
             AND sealed_tokens IS NOT NULL",
        )
        .bind(connection)
        .bind(identifier)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| {
            Ok((row.try_get("sealed_tokens")?, row.try_get::<Option<String>, _>("key_id")?.unwrap_or_default()))
        })
        .transpose()
    }

    /// Lists accounts ordered by (connection, identifier), after the given position.
    pub async fn list_accounts(&self, query: &AccountQuery) -> Result<Vec<ConnectedAccount>, StoreError> {
        let (after_connection, after_identifier) = query.after.clone().unwrap_or_default();
        let sql = concat!(
            "SELECT ",
            account_columns!(),
            " FROM connected_accounts
             WHERE (? IS NULL OR connection = ?) AND (? IS NULL OR status = ?)
               AND (connection > ? OR (connection = ? AND identifier > ?))
             ORDER BY connection, identifier LIMIT ?"
        );
        let status = query.status.map(AccountStatus::as_str);
        let rows = sqlx::query(sql)
            .bind(&query.connection)
            .bind(&query.connection)
            .bind(status)
            .bind(status)
            .bind(&after_connection)
            .bind(&after_connection)
            .bind(&after_identifier)
            .bind(i64::from(query.limit))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(account_from_row).collect()
    }

    /// Deletes expired links, old flows and old references, so the store stays bounded.
    pub async fn sweep(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let links = sqlx::query("DELETE FROM authorization_links WHERE expires_at < ?")
            .bind(millis(now))
            .execute(&self.writer)
            .await?
            .rows_affected();
        let flows = sqlx::query("DELETE FROM flows WHERE created_at < ?")
            .bind(millis(now - FLOW_RETENTION))
            .execute(&self.writer)
            .await?
            .rows_affected();
        let held = sqlx::query("DELETE FROM pending_verifications WHERE expires_at < ?")
            .bind(millis(now))
            .execute(&self.writer)
            .await?
            .rows_affected();
        if held > 0 {
            sqlx::query(
                "UPDATE connected_accounts SET status = 'PENDING_AUTH' WHERE status = 'PENDING_VERIFICATION'
                 AND NOT EXISTS (SELECT 1 FROM pending_verifications p
                                 WHERE p.connection = connected_accounts.connection
                                   AND p.identifier = connected_accounts.identifier)",
            )
            .execute(&self.writer)
            .await?;
        }
        let references = sqlx::query("DELETE FROM outcome_events WHERE created_at < ?")
            .bind(millis(now - REFERENCE_RETENTION))
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(links + flows + held + references)
    }

    /// Counts rows per table, for tests and metrics.
    pub async fn count(&self, table: Table) -> Result<i64, StoreError> {
        let sql = match table {
            Table::Links => "SELECT COUNT(*) FROM authorization_links",
            Table::Flows => "SELECT COUNT(*) FROM flows",
            Table::Accounts => "SELECT COUNT(*) FROM connected_accounts",
            Table::OutcomeEvents => "SELECT COUNT(*) FROM outcome_events",
            Table::PendingVerifications => "SELECT COUNT(*) FROM pending_verifications",
        };
        Ok(sqlx::query_scalar(sql).fetch_one(&self.reader).await?)
    }
}

/// Inserts one outcome event; a reference already stored is left as it is.
async fn insert_event(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, event: &OutcomeEvent) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outcome_events (reference, code, cause, class, connection, identifier, flow_id, error,
            error_description, error_uri, iss, provider_status, provider_body, detail, hint, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (reference) DO NOTHING",
    )
    .bind(&event.reference)
    .bind(&event.code)
    .bind(&event.cause)
    .bind(&event.class)
    .bind(&event.connection)
    .bind(&event.identifier)
    .bind(&event.flow_id)
    .bind(&event.error)
    .bind(&event.error_description)
    .bind(&event.error_uri)
    .bind(&event.iss)
    .bind(event.provider_status)
    .bind(&event.provider_body)
    .bind(&event.detail)
    .bind(&event.hint)
    .bind(millis(event.created_at.0))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The store's tables, named for counting.
#[derive(Debug, Clone, Copy)]
pub enum Table {
    Links,
    Flows,
    Accounts,
    OutcomeEvents,
    PendingVerifications,
}

fn account_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<ConnectedAccount, StoreError> {
    let status: String = row.try_get("status")?;
    let scopes: String = row.try_get("scopes")?;
    let last_error = match (
        row.try_get::<Option<String>, _>("last_error_code")?,
        row.try_get::<Option<String>, _>("last_error_reference")?,
        row.try_get::<Option<i64>, _>("last_error_at")?,
    ) {
        (Some(code), Some(reference), Some(at)) => Some(LastError { code, reference, at: from_millis(at)? }),
        _ => None,
    };
    Ok(ConnectedAccount {
        connection: row.try_get("connection")?,
        identifier: row.try_get("identifier")?,
        status: status.parse().map_err(|()| StoreError::Corrupt(format!("unknown account status {status:?}")))?,
        scopes: serde_json::from_str(&scopes).map_err(|err| StoreError::Corrupt(err.to_string()))?,
        created_at: from_millis(row.try_get("created_at")?)?,
        updated_at: from_millis(row.try_get("updated_at")?)?,
        last_error,
    })
}

fn flow_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<FlowRecord, StoreError> {
    Ok(FlowRecord {
        id: row.try_get("id")?,
        state_hash: row.try_get("state_hash")?,
        link_id: row.try_get("link_id")?,
        connection: row.try_get("connection")?,
        identifier: row.try_get("identifier")?,
        browser_hash: row.try_get("browser_hash")?,
        sealed_secrets: row.try_get("sealed_secrets")?,
        return_to: row.try_get("return_to")?,
        status: FlowStatus::parse(&row.try_get::<String, _>("status")?)?,
        outcome_code: row.try_get("outcome_code")?,
        reference: row.try_get("reference")?,
        created_at: from_millis(row.try_get("created_at")?)?,
        expires_at: from_millis(row.try_get("expires_at")?)?,
    })
}

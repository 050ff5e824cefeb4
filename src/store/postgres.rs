//! The PostgreSQL backend: one database shared by several instances of the service.
//!
//! Every operation is one transaction on a pooled connection (`deadpool-postgres`), and every rule the SQLite
//! backend gets from its single writer holds here by the database's own means: single use is a conditional
//! `UPDATE` or a `DELETE … RETURNING` that exactly one transaction wins, rows another instance is ending are
//! skipped (`FOR UPDATE SKIP LOCKED`), and the sweeps that need only one runner at a time take a transaction-level
//! advisory lock and give way when another instance holds it.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::{
    Abandoned, AccountQuery, Arrival, BuildFlow, Claim, Confirmation, DELIVERED_RETENTION, DeliveryEnd, DeliveryQuery,
    DeliveryRecord, DeliveryStatus, DueRefresh, FAILED_RETENTION, FLOW_RETENTION, FlowEnding, FlowRecord, FlowStatus,
    Lease, LinkRecord, Millis, OutcomeEvent, PendingVerification, REFERENCE_RETENTION, RefreshEnd, StartedFlow,
    StoreError, Table, TokenState, TokenWrite, UNAUTHENTICATED_SWEEP_WINDOW, from_millis, millis,
};
use crate::account::{AccountStatus, ConnectedAccount, LastError};

/// Connections each instance keeps open at most.
const POOL_SIZE: usize = 16;
/// How long an operation waits for a free connection, or for a new one to be made, before it fails as
/// unavailable: the same bound as the SQLite backend's queue.
const WAIT: Duration = Duration::from_secs(5);
/// How long a statement may run on the server before it is cancelled there.
const STATEMENT_TIMEOUT_MS: u32 = 10_000;

/// Advisory lock keys ("cg" and a number), so instances agree on who runs what.
const LOCK_MIGRATE: i64 = 0x6367_0001;
const LOCK_SWEEP: i64 = 0x6367_0002;
const LOCK_TRIM_EVENTS: i64 = 0x6367_0003;

/// The schema, in order: (version, SQL). The table `callback_gate_migrations` records which have run.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_initial.sql")),
    (2, include_str!("../../migrations/postgres/0002_token_lifecycle.sql")),
    (3, include_str!("../../migrations/postgres/0003_webhooks.sql")),
    (4, include_str!("../../migrations/postgres/0004_account_metadata.sql")),
    (5, include_str!("../../migrations/postgres/0005_per_identifier_trims.sql")),
    (6, include_str!("../../migrations/postgres/0006_unauthenticated_events.sql")),
];

/// The connection settings a `postgres://` URL names, or why it names none. Checks the form only.
pub fn options(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|err| StoreError::Url(format!("is not a PostgreSQL connection URL: {err}")))?;
    if config.get_dbname().is_none() {
        return Err(StoreError::Url("names no database (postgres://user:password@host:5432/database)".into()));
    }
    if config.get_hosts().is_empty() {
        return Err(StoreError::Url("names no host (postgres://user:password@host:5432/database)".into()));
    }
    if config.get_user().is_none() {
        return Err(StoreError::Url("names no user (postgres://user:password@host:5432/database)".into()));
    }
    Ok(config)
}

/// Whether a PostgreSQL error means the server could not be reached or could not take the work now, rather than
/// a refusal of the statement itself.
pub fn is_unavailable(err: &tokio_postgres::Error) -> bool {
    let Some(code) = err.code() else {
        // No SQLSTATE: the connection failed, closed or timed out.
        return true;
    };
    let class = &code.code()[..2];
    // 08: connection exception; 53: insufficient resources; 57: operator intervention (shutdown, restart);
    // 40001/40P01: serialization failure or deadlock, worth trying again.
    matches!(class, "08" | "53" | "57")
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
}

/// What went wrong, in the server's words where it gave any: the error's own text is only "db error" for every
/// error the server reports.
pub fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

impl From<PoolError> for StoreError {
    fn from(err: PoolError) -> Self {
        match err {
            PoolError::Backend(err) => Self::Postgres(err),
            PoolError::Closed => Self::Closed,
            PoolError::Timeout(_) => Self::Unavailable("no database connection became free in time".into()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore").field("size", &status.size).field("available", &status.available).finish()
    }
}

/// TLS for connections whose URL asks for it (`sslmode=require`, or `prefer`, the default, when the server offers
/// it): rustls with the system's trusted roots.
fn tls() -> tokio_postgres_rustls::MakeRustlsConnect {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = match rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
        Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
        // The provider supports the default versions; this branch is unreachable in practice.
        Err(_) => {
            rustls::ClientConfig::builder().with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth()
        }
    };
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// The server settings each session starts with: callback-gate's statement timeout, then whatever the URL's own
/// `options` name (a `search_path`, say), so that both apply and an operator's explicit setting wins.
/// `Config::options` replaces what it is given, so the URL's are carried over here rather than lost.
fn session_options(from_url: Option<&str>) -> String {
    let ours = format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}");
    match from_url.map(str::trim) {
        Some(theirs) if !theirs.is_empty() => format!("{ours} {theirs}"),
        _ => ours,
    }
}

impl PostgresStore {
    /// Connects, checks the database answers, and brings its schema up to date (one instance at a time).
    pub async fn connect(database_url: &str) -> Result<Self, StoreError> {
        let mut config = options(database_url)?;
        if config.get_application_name().is_none() {
            config.application_name("callback-gate");
        }
        config.connect_timeout(WAIT);
        let options = session_options(config.get_options());
        config.options(options);
        let manager = Manager::from_config(config, tls(), ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(WAIT))
            .create_timeout(Some(WAIT))
            .recycle_timeout(Some(WAIT))
            .build()
            .map_err(|err| StoreError::Unavailable(err.to_string()))?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// Runs the migrations this database has not had, holding an advisory lock so instances starting together
    /// migrate one after another. A database migrated by a newer build is refused rather than guessed at.
    ///
    /// Hand-written because the migration runners that lock across instances (sqlx's) cannot be linked beside
    /// rusqlite, and this is one table and one lock.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_MIGRATE]).await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS callback_gate_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await?;
        let current: i64 =
            tx.query_one("SELECT COALESCE(MAX(version), 0) FROM callback_gate_migrations", &[]).await?.try_get(0)?;
        let known = MIGRATIONS.last().map_or(0, |(version, _)| *version);
        if current > known {
            return Err(StoreError::Corrupt(format!(
                "the database's schema is at version {current}, newer than this build's {known}: run a newer callback-gate"
            )));
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > current) {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO callback_gate_migrations (version, applied_at) VALUES ($1, $2)",
                &[version, &millis(OffsetDateTime::now_utc())],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// PostgreSQL keeps its own write-ahead log and vacuums by itself; nothing to do.
    pub async fn checkpoint(&self) -> Result<super::Checkpoint, StoreError> {
        Ok(super::Checkpoint::default())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close();
    }

    /// One round trip: `BEGIN`, the transaction's four statements and `COMMIT`, sent together (pipelined, run in
    /// order). A failure in any statement aborts the transaction, and the `COMMIT` then rolls it back.
    pub async fn create_link(&self, link: &LinkRecord, keep: u32) -> Result<(), StoreError> {
        let mut transaction = Pipelined::new(self.client().await?);
        let tx = transaction.client()?;
        let lock = tx.prepare_cached(LOCK_IDENTIFIER).await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO authorization_links (id, connection, identifier, return_to, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .await?;
        let account = tx
            .prepare_cached(
                "INSERT INTO connected_accounts (connection, identifier, status, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT (connection, identifier) DO NOTHING",
            )
            .await?;
        let trim = tx
            .prepare_cached(
                "DELETE FROM authorization_links WHERE id IN
                    (SELECT id FROM authorization_links WHERE connection = $1 AND identifier = $2
                     ORDER BY created_at DESC, id OFFSET $3)",
            )
            .await?;
        let (created_at, expires_at, keep) = (millis(link.created_at), millis(link.expires_at), i64::from(keep));
        let pending = AccountStatus::PendingAuth.as_str();
        let who: [Param<'_>; 2] = [&link.connection, &link.identifier];
        let row: [Param<'_>; 6] =
            [&link.id, &link.connection, &link.identifier, &link.return_to, &created_at, &expires_at];
        let account_row: [Param<'_>; 4] = [&link.connection, &link.identifier, &pending, &created_at];
        let trim_args: [Param<'_>; 3] = [&link.connection, &link.identifier, &keep];
        let statements: [(&tokio_postgres::Statement, &[Param<'_>]); 4] =
            [(&lock, &who), (&insert, &row), (&account, &account_row), (&trim, &trim_args)];
        transaction.commit_with(true, &statements).await
    }

    pub async fn find_link(&self, id: &str) -> Result<Option<LinkRecord>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT id, connection, identifier, return_to, created_at, expires_at, consumed_at
                 FROM authorization_links WHERE id = $1",
            )
            .await?;
        let Some(row) = client.query_opt(&statement, &[&id]).await? else {
            return Ok(None);
        };
        Ok(Some(LinkRecord {
            id: row.try_get("id")?,
            connection: row.try_get("connection")?,
            identifier: row.try_get("identifier")?,
            return_to: row.try_get("return_to")?,
            created_at: from_millis(row.try_get("created_at")?)?,
            expires_at: from_millis(row.try_get("expires_at")?)?,
            consumed_at: row.try_get::<_, Option<i64>>("consumed_at")?.map(from_millis).transpose()?,
        }))
    }

    /// Reads the link, then stores the flow built from it in a transaction of its own that locks the identifier:
    /// each is a round trip to the server, whether or not they share a transaction.
    pub async fn start_flow(&self, link_id: &str, keep: u32, build: BuildFlow) -> Result<StartedFlow, StoreError> {
        let Some(link) = self.find_link(link_id).await? else {
            return Ok(StartedFlow { link: None, flow: None });
        };
        let Some(flow) = build(&link) else {
            return Ok(StartedFlow { link: Some(link), flow: None });
        };
        self.create_flow(&flow, keep).await?;
        Ok(StartedFlow { link: Some(link), flow: Some(flow) })
    }

    /// Locks the identifier, stores the flow and trims the identifier's waiting flows in one round trip, with its
    /// transaction's `BEGIN` and `COMMIT` (pipelined, run in order).
    async fn create_flow(&self, flow: &FlowRecord, keep: u32) -> Result<(), StoreError> {
        let mut transaction = Pipelined::new(self.client().await?);
        let tx = transaction.client()?;
        let lock = tx.prepare_cached(LOCK_IDENTIFIER).await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO flows (id, state_hash, link_id, connection, identifier, browser_hash, sealed_secrets,
                                    return_to, status, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .await?;
        let trim = tx
            .prepare_cached(
                "DELETE FROM flows WHERE id IN
                    (SELECT id FROM flows WHERE connection = $1 AND identifier = $2 AND status = 'started'
                     ORDER BY created_at DESC, id OFFSET $3)",
            )
            .await?;
        let (created_at, expires_at, keep) = (millis(flow.created_at), millis(flow.expires_at), i64::from(keep));
        let status = flow.status.as_str();
        let who: [Param<'_>; 2] = [&flow.connection, &flow.identifier];
        let row: [Param<'_>; 11] = [
            &flow.id,
            &flow.state_hash,
            &flow.link_id,
            &flow.connection,
            &flow.identifier,
            &flow.browser_hash,
            &flow.sealed_secrets,
            &flow.return_to,
            &status,
            &created_at,
            &expires_at,
        ];
        let trim_args: [Param<'_>; 3] = [&flow.connection, &flow.identifier, &keep];
        transaction.commit_with(true, &[(&lock, &who), (&insert, &row), (&trim, &trim_args)]).await
    }

    pub async fn find_flow(&self, id: &str) -> Result<Option<FlowRecord>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(concat!("SELECT ", flow_columns!(), " FROM flows WHERE id = $1")).await?;
        client.query_opt(&statement, &[&id]).await?.as_ref().map(flow_from_row).transpose()
    }

    /// At most three round trips: `BEGIN` with the flow's lookup, the claim with the link's lock, and `COMMIT` (or
    /// `ROLLBACK`, when no flow is found, or it is not this browser's, not waiting, or its link is used).
    pub async fn claim_flow(
        &self,
        state_hash: &str,
        browser_hash: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Option<(FlowRecord, Claim)>, StoreError> {
        let mut transaction = Pipelined::new(self.client().await?);
        let tx = transaction.client()?;
        let find = tx.prepare_cached(concat!("SELECT ", flow_columns!(), " FROM flows WHERE state_hash = $1")).await?;
        // The flow's row first, then the link's: the order in which completing a flow takes them, so a claim and a
        // completion of two flows of one link wait for each other instead of deadlocking. Both statements go in one
        // round trip (pipelined, run in order), so the link's lock is taken even when the update claims nothing: such
        // a claim may wait for another flow of the link that is completing, and is then rolled back, writing nothing.
        let claim = tx
            .prepare_cached(
                "UPDATE flows SET status = 'exchanging', claimed_at = $1 WHERE id = $2 AND status = 'started'",
            )
            .await?;
        // A share lock on the link: a flow of the same link that is connecting the account right now holds it for
        // update, so this waits for that transaction and then sees the link consumed.
        let link = tx
            .prepare_cached("SELECT consumed_at IS NOT NULL FROM authorization_links WHERE id = $1 FOR SHARE")
            .await?;
        let by_state: [Param<'_>; 1] = [&state_hash];
        let tx = transaction.begin()?;
        let decided = async {
            let (begun, found) = futures_util::join!(tx.batch_execute("BEGIN"), tx.query_opt(&find, &by_state));
            begun?;
            let Some(flow) = found?.as_ref().map(flow_from_row).transpose()? else {
                return Ok(None);
            };
            let same_browser = browser_hash
                .is_some_and(|hash| crate::crypto::constant_time_eq(hash.as_bytes(), flow.browser_hash.as_bytes()));
            if !same_browser {
                return Ok(Some((flow, Claim::OtherBrowser)));
            }
            let claimed_at = millis(now);
            let claiming: [Param<'_>; 2] = [&claimed_at, &flow.id];
            let of_link: [Param<'_>; 1] = [&flow.link_id];
            let (claimed, link) = futures_util::join!(tx.execute(&claim, &claiming), tx.query_opt(&link, &of_link));
            let (claimed, link) = (claimed?, link?);
            let link_consumed = match link {
                Some(row) => row.try_get::<_, bool>(0)?,
                None => false,
            };
            Ok(Some(match (claimed, link_consumed) {
                (0, _) => (flow, Claim::NotStarted),
                // Rolled back below: the flow stays started, as it was.
                (_, true) => (flow, Claim::LinkUsed),
                (_, false) => (flow, Claim::Claimed),
            }))
        }
        .await;
        if !matches!(decided, Ok(Some((_, Claim::Claimed)))) {
            transaction.rollback().await;
            return decided;
        }
        let committed = tx.batch_execute("COMMIT").await;
        transaction.ended(&committed);
        committed?;
        decided
    }

    pub async fn complete_flow(
        &self,
        flow_id: &str,
        tokens: &TokenWrite,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut transaction = Pipelined::new(self.client().await?);
        let tx = transaction.client()?;
        let (statements, account) = (Completion::prepare(tx).await?, AccountTokens::new(tokens, now)?);
        let of_flow: [Param<'_>; 2] = [&account.at, &flow_id];
        let tx = transaction.begin()?;
        let (begun, succeeded) =
            futures_util::join!(tx.batch_execute("BEGIN"), tx.execute(&statements.succeed, &of_flow));
        match begun.and(succeeded) {
            Ok(0) => {
                transaction.rollback().await;
                return Ok(false);
            }
            Ok(_) => {}
            Err(err) => {
                transaction.rollback().await;
                return Err(err.into());
            }
        }
        let account_row = account.params();
        transaction.commit_with(false, &[(&statements.account, &account_row), (&statements.consume, &of_flow)]).await?;
        Ok(true)
    }

    pub async fn hold_for_verification(
        &self,
        request_hash: &str,
        flow_id: &str,
        tokens: &TokenWrite,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let scopes = tokens.scopes_json()?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let hold = tx
            .prepare_cached(
                "INSERT INTO pending_verifications (request_hash, flow_id, connection, identifier, scopes, sealed_tokens,
                                                    key_id, token_expires_at, refresh_due_at, created_at, expires_at,
                                                    metadata)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .await?;
        tx.execute(
            &hold,
            &[
                &request_hash,
                &flow_id,
                &tokens.connection,
                &tokens.identifier,
                &scopes,
                &tokens.sealed_tokens,
                &tokens.key_id,
                &tokens.token_expires_at,
                &tokens.refresh_due_at.map(millis),
                &millis(now),
                &millis(expires_at),
                &tokens.metadata_json()?,
            ],
        )
        .await?;
        let account = tx
            .prepare_cached(
                "INSERT INTO connected_accounts (connection, identifier, status, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $4)
                 ON CONFLICT (connection, identifier) DO UPDATE SET status = excluded.status,
                    updated_at = excluded.updated_at
                 WHERE connected_accounts.status <> 'ACTIVE'",
            )
            .await?;
        tx.execute(
            &account,
            &[&tokens.connection, &tokens.identifier, &AccountStatus::PendingVerification.as_str(), &millis(now)],
        )
        .await?;
        let verifying = tx.prepare_cached("UPDATE flows SET status = 'verifying' WHERE id = $1").await?;
        tx.execute(&verifying, &[&flow_id]).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn confirm_verification(
        &self,
        request_hash: &str,
        identifier: &str,
        confirmation_hash: &str,
        ending: FlowEnding,
    ) -> Result<Confirmation, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // FOR UPDATE: a second answer for the same request waits, then finds it answered (or gone).
        let find = tx
            .prepare_cached(concat!(
                "SELECT ",
                pending_columns!(),
                " FROM pending_verifications WHERE request_hash = $1 AND confirmation_hash IS NULL FOR UPDATE"
            ))
            .await?;
        let Some(row) = tx.query_opt(&find, &[&request_hash]).await? else {
            return Ok(Confirmation::Unknown);
        };
        let pending = pending_from_row(&row)?;
        let late = ending.at >= pending.expires_at;
        let matches = crate::crypto::constant_time_eq(pending.tokens.identifier.as_bytes(), identifier.as_bytes());
        if late || !matches {
            discard_held(&tx, &pending, &ending).await?;
            tx.commit().await?;
            return Ok(Confirmation::Refused { pending, late });
        }
        let confirm = tx
            .prepare_cached("UPDATE pending_verifications SET confirmation_hash = $1 WHERE request_hash = $2")
            .await?;
        tx.execute(&confirm, &[&confirmation_hash, &request_hash]).await?;
        tx.commit().await?;
        Ok(Confirmation::Confirmed(pending))
    }

    pub async fn finish_verification(
        &self,
        confirmation_hash: &str,
        browser_hash: Option<String>,
        ending: FlowEnding,
    ) -> Result<Option<Arrival>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Taking the held tokens is the DELETE itself: of two arrivals with one confirmation, one gets them.
        let take = tx
            .prepare_cached(concat!(
                "DELETE FROM pending_verifications WHERE confirmation_hash = $1 RETURNING ",
                pending_columns!()
            ))
            .await?;
        let Some(row) = tx.query_opt(&take, &[&confirmation_hash]).await? else {
            return Ok(None);
        };
        let pending = pending_from_row(&row)?;
        let browser = tx.prepare_cached("SELECT browser_hash FROM flows WHERE id = $1").await?;
        let flow_browser: Option<String> = match tx.query_opt(&browser, &[&pending.flow_id]).await? {
            Some(row) => Some(row.try_get(0)?),
            None => None,
        };
        let same_browser = match (&browser_hash, &flow_browser) {
            (Some(presented), Some(expected)) => {
                crate::crypto::constant_time_eq(presented.as_bytes(), expected.as_bytes())
            }
            _ => false,
        };
        if same_browser
            && ending.at < pending.expires_at
            && complete_in(&tx, &pending.flow_id, &pending.tokens, ending.at).await?
        {
            tx.commit().await?;
            return Ok(Some(Arrival::Connected(pending)));
        }
        discard_held(&tx, &pending, &ending).await?;
        tx.commit().await?;
        Ok(Some(Arrival::Refused { pending, other_browser: !same_browser }))
    }

    pub async fn token_state(&self, connection: &str, identifier: &str) -> Result<Option<TokenState>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(concat!(
                "SELECT ",
                token_state_columns!(),
                " FROM connected_accounts WHERE connection = $1 AND identifier = $2"
            ))
            .await?;
        client.query_opt(&statement, &[&connection, &identifier]).await?.as_ref().map(token_state_from_row).transpose()
    }

    pub async fn take_refresh_lease(
        &self,
        connection: &str,
        identifier: &str,
        version: i64,
        lease: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Lease, StoreError> {
        let client = self.client().await?;
        // One statement: the conditional update, and what the row holds when it did not apply. Row locks make
        // concurrent takers in other instances wait for each other, and the loser re-reads the winner's lease.
        let statement = client
            .prepare_cached(
                "WITH taken AS (
                    UPDATE connected_accounts SET refresh_lease = $1, refresh_lease_until = $2
                    WHERE connection = $3 AND identifier = $4 AND token_version = $5
                      AND status IN ('ACTIVE', 'EXPIRED')
                      AND (refresh_lease_until IS NULL OR refresh_lease_until <= $6)
                    RETURNING 1
                 )
                 SELECT (SELECT COUNT(*) FROM taken) AS taken, token_version, status, refresh_lease_until
                 FROM connected_accounts WHERE connection = $3 AND identifier = $4",
            )
            .await?;
        let row = client
            .query_opt(&statement, &[&lease, &millis(until), &connection, &identifier, &version, &millis(now)])
            .await?;
        let Some(row) = row else {
            return Ok(Lease::Gone);
        };
        if row.try_get::<_, i64>("taken")? == 1 {
            return Ok(Lease::Taken);
        }
        let current: i64 = row.try_get("token_version")?;
        let status: String = row.try_get("status")?;
        if current != version || !matches!(status.as_str(), "ACTIVE" | "EXPIRED") {
            return Ok(Lease::Changed);
        }
        // The row as this statement's snapshot saw it: when another instance took the lease just before, the
        // update waited for it and found it held, while the snapshot may still show no lease. Held either way.
        let until = row.try_get::<_, Option<i64>>("refresh_lease_until")?.unwrap_or(millis(now));
        Ok(Lease::Held { until: from_millis(until)? })
    }

    pub async fn end_refresh(
        &self,
        connection: &str,
        identifier: &str,
        version: i64,
        lease: &str,
        end: RefreshEnd,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let at = millis(now);
        let changed = match &end {
            RefreshEnd::Refreshed(tokens) => {
                let scopes = tokens.scopes_json()?;
                let statement = client
                    .prepare_cached(
                        "UPDATE connected_accounts SET status = 'ACTIVE', scopes = $6, sealed_tokens = $7, key_id = $8,
                            token_expires_at = $9, refresh_due_at = $10, token_version = token_version + 1,
                            refresh_lease = NULL, refresh_lease_until = NULL, refresh_failures = 0, updated_at = $5,
                            metadata = COALESCE($11, metadata)
                         WHERE connection = $1 AND identifier = $2 AND token_version = $3 AND refresh_lease = $4",
                    )
                    .await?;
                client
                    .execute(
                        &statement,
                        &[
                            &connection,
                            &identifier,
                            &version,
                            &lease,
                            &at,
                            &scopes,
                            &tokens.sealed_tokens,
                            &tokens.key_id,
                            &tokens.token_expires_at,
                            &tokens.refresh_due_at.map(millis),
                            &tokens.metadata_json()?,
                        ],
                    )
                    .await?
            }
            RefreshEnd::Expired => {
                let statement = client
                    .prepare_cached(
                        "UPDATE connected_accounts SET status = 'EXPIRED', refresh_due_at = NULL,
                            token_version = token_version + 1, refresh_lease = NULL, refresh_lease_until = NULL,
                            updated_at = $5
                         WHERE connection = $1 AND identifier = $2 AND token_version = $3 AND refresh_lease = $4",
                    )
                    .await?;
                client.execute(&statement, &[&connection, &identifier, &version, &lease, &at]).await?
            }
            RefreshEnd::Retry { due_at } => {
                let statement = client
                    .prepare_cached(
                        "UPDATE connected_accounts SET refresh_due_at = $5, refresh_failures = refresh_failures + 1,
                            refresh_lease = NULL, refresh_lease_until = NULL
                         WHERE connection = $1 AND identifier = $2 AND token_version = $3 AND refresh_lease = $4",
                    )
                    .await?;
                client.execute(&statement, &[&connection, &identifier, &version, &lease, &millis(*due_at)]).await?
            }
            RefreshEnd::Release => {
                let statement = client
                    .prepare_cached(
                        "UPDATE connected_accounts SET refresh_lease = NULL, refresh_lease_until = NULL
                         WHERE connection = $1 AND identifier = $2 AND token_version = $3 AND refresh_lease = $4",
                    )
                    .await?;
                client.execute(&statement, &[&connection, &identifier, &version, &lease]).await?
            }
        };
        Ok(changed == 1)
    }

    pub async fn due_refreshes(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<DueRefresh>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT connection, identifier, token_version FROM connected_accounts
                 WHERE refresh_due_at <= $1 AND status = 'ACTIVE'
                   AND (refresh_lease_until IS NULL OR refresh_lease_until <= $1)
                 ORDER BY refresh_due_at LIMIT $2",
            )
            .await?;
        let rows = client.query(&statement, &[&millis(now), &i64::from(limit)]).await?;
        rows.iter()
            .map(|row| {
                Ok(DueRefresh { connection: row.try_get(0)?, identifier: row.try_get(1)?, version: row.try_get(2)? })
            })
            .collect()
    }

    pub async fn note_missing_scopes(
        &self,
        connection: &str,
        identifier: &str,
        version: i64,
        scopes: Vec<String>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let read = tx
            .prepare_cached(
                "SELECT missing_scopes FROM connected_accounts
                 WHERE connection = $1 AND identifier = $2 AND token_version = $3 FOR UPDATE",
            )
            .await?;
        let Some(row) = tx.query_opt(&read, &[&connection, &identifier, &version]).await? else {
            return Ok(());
        };
        let current: Option<String> = row.try_get(0)?;
        let merged = super::merge_scopes(current.as_deref(), scopes)?;
        let write = tx
            .prepare_cached(
                "UPDATE connected_accounts SET missing_scopes = $1 WHERE connection = $2 AND identifier = $3",
            )
            .await?;
        tx.execute(&write, &[&merged, &connection, &identifier]).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_status(
        &self,
        connection: &str,
        identifier: &str,
        status: AccountStatus,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let wipe = status == AccountStatus::Disconnected;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE connected_accounts SET status = $1, updated_at = $2, token_version = token_version + 1,
                    refresh_lease = NULL, refresh_lease_until = NULL, refresh_due_at = NULL,
                    sealed_tokens = CASE WHEN $3 THEN NULL ELSE sealed_tokens END,
                    key_id = CASE WHEN $3 THEN NULL ELSE key_id END
                 WHERE connection = $4 AND identifier = $5",
            )
            .await?;
        client.execute(&statement, &[&status.as_str(), &millis(now), &wipe, &connection, &identifier]).await?;
        Ok(())
    }

    pub async fn fail_flow(&self, flow_id: &str, ending: FlowEnding) -> Result<bool, StoreError> {
        let client = self.client().await?;
        fail_in(&client, flow_id, &ending).await
    }

    pub async fn end_abandoned_flows(
        &self,
        now: OffsetDateTime,
        claimed_before: OffsetDateTime,
        only: Option<String>,
        ending_for: impl Fn(FlowStatus) -> FlowEnding + Send + 'static,
    ) -> Result<Vec<Abandoned>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // SKIP LOCKED: flows another instance is ending (or finishing) right now are left to it.
        let exchanging = tx
            .prepare_cached(concat!(
                "SELECT ",
                flow_columns!(),
                " FROM flows WHERE status = 'exchanging' AND COALESCE(claimed_at, created_at) < $1
                   AND ($2::text IS NULL OR id = $2)
                 LIMIT 500 FOR UPDATE SKIP LOCKED"
            ))
            .await?;
        let verifying = tx
            .prepare_cached(concat!(
                "SELECT ",
                flow_columns!(),
                " FROM flows f WHERE status = 'verifying' AND ($2::text IS NULL OR id = $2)
                   AND NOT EXISTS (SELECT 1 FROM pending_verifications p
                                   WHERE p.flow_id = f.id AND p.expires_at > $1)
                 LIMIT 500 FOR UPDATE SKIP LOCKED"
            ))
            .await?;
        let mut rows = tx.query(&exchanging, &[&millis(claimed_before), &only]).await?;
        rows.extend(tx.query(&verifying, &[&millis(now), &only]).await?);
        let mut ended = Vec::with_capacity(rows.len());
        let drop_held = tx.prepare_cached("DELETE FROM pending_verifications WHERE flow_id = $1").await?;
        for row in &rows {
            let flow = flow_from_row(row)?;
            let was = flow.status;
            let ending = ending_for(was);
            tx.execute(&drop_held, &[&flow.id]).await?;
            release_account(&tx, &flow.connection, &flow.identifier).await?;
            if fail_in(&tx, &flow.id, &ending).await? {
                ended.push(Abandoned { flow, was, reference: ending.reference });
            }
        }
        tx.commit().await?;
        Ok(ended)
    }

    pub async fn record_outcome(&self, event: &OutcomeEvent) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        insert_event(&tx, event).await?;
        if let (Some(connection), Some(identifier)) = (&event.connection, &event.identifier) {
            let last_error = tx
                .prepare_cached(
                    "UPDATE connected_accounts SET last_error_code = $1, last_error_reference = $2,
                        last_error_at = $3, updated_at = $3
                     WHERE connection = $4 AND identifier = $5",
                )
                .await?;
            tx.execute(
                &last_error,
                &[&event.code, &event.reference, &millis(event.created_at.0), connection, identifier],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn record_outcomes(
        &self,
        events: Arc<[Arc<OutcomeEvent>]>,
        keep_unauthenticated: u64,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        for event in events.iter() {
            insert_event(&tx, event).await?;
        }
        // One instance trims at a time, so that two never delete the same rows in different orders (a deadlock);
        // another that finds the lock taken leaves the trimming to it.
        if events.iter().any(|event| event.unauthenticated)
            && tx
                .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&LOCK_TRIM_EVENTS])
                .await?
                .try_get::<_, bool>(0)?
        {
            // Numbers grow with each insert and only the oldest are deleted, so the newest `keep` are those within
            // `keep` of the largest (give or take the batches other instances are committing now).
            let keep = i64::try_from(keep_unauthenticated).unwrap_or(i64::MAX);
            let statement = tx
                .prepare_cached(
                    "DELETE FROM unauthenticated_events WHERE seq <= (SELECT max(seq) FROM unauthenticated_events) - $1",
                )
                .await?;
            tx.execute(&statement, &[&keep]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn reference(&self, reference: &str) -> Result<Option<OutcomeEvent>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(concat!(
                "SELECT ",
                event_columns!(),
                ", unauthenticated FROM outcome_events WHERE reference = $1 UNION ALL SELECT ",
                event_columns!(),
                ", TRUE FROM unauthenticated_events WHERE reference = $1 LIMIT 1"
            ))
            .await?;
        client.query_opt(&statement, &[&reference]).await?.as_ref().map(event_from_row).transpose()
    }

    pub async fn account(&self, connection: &str, identifier: &str) -> Result<Option<ConnectedAccount>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(concat!(
                "SELECT ",
                account_columns!(),
                " FROM connected_accounts WHERE connection = $1 AND identifier = $2"
            ))
            .await?;
        client.query_opt(&statement, &[&connection, &identifier]).await?.as_ref().map(account_from_row).transpose()
    }

    pub async fn sealed_tokens(
        &self,
        connection: &str,
        identifier: &str,
    ) -> Result<Option<(Vec<u8>, String)>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT sealed_tokens, key_id FROM connected_accounts WHERE connection = $1 AND identifier = $2
                 AND sealed_tokens IS NOT NULL",
            )
            .await?;
        let Some(row) = client.query_opt(&statement, &[&connection, &identifier]).await? else {
            return Ok(None);
        };
        Ok(Some((row.try_get(0)?, row.try_get::<_, Option<String>>(1)?.unwrap_or_default())))
    }

    pub async fn list_accounts(&self, query: &AccountQuery) -> Result<Vec<ConnectedAccount>, StoreError> {
        let (after_connection, after_identifier) = query.after.clone().unwrap_or_default();
        let status = query.status.map(AccountStatus::as_str);
        let client = self.client().await?;
        let statement = client
            .prepare_cached(concat!(
                "SELECT ",
                account_columns!(),
                " FROM connected_accounts
                 WHERE ($1::text IS NULL OR connection = $1) AND ($2::text IS NULL OR status = $2)
                   AND (connection > $3 OR (connection = $3 AND identifier > $4))
                 ORDER BY connection, identifier LIMIT $5"
            ))
            .await?;
        let rows = client
            .query(
                &statement,
                &[&query.connection, &status, &after_connection, &after_identifier, &i64::from(query.limit)],
            )
            .await?;
        rows.iter().map(account_from_row).collect()
    }

    pub async fn sweep(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if !tx.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&LOCK_SWEEP]).await?.try_get::<_, bool>(0)? {
            // Another instance is sweeping now.
            return Ok(0);
        }
        let links = tx.execute("DELETE FROM authorization_links WHERE expires_at < $1", &[&millis(now)]).await?;
        let flows = tx.execute("DELETE FROM flows WHERE created_at < $1", &[&millis(now - FLOW_RETENTION)]).await?;
        let held = tx.execute("DELETE FROM pending_verifications WHERE expires_at < $1", &[&millis(now)]).await?;
        if held > 0 {
            tx.execute(
                "UPDATE connected_accounts SET status = 'PENDING_AUTH' WHERE status = 'PENDING_VERIFICATION'
                 AND NOT EXISTS (SELECT 1 FROM pending_verifications p
                                 WHERE p.connection = connected_accounts.connection
                                   AND p.identifier = connected_accounts.identifier)",
                &[],
            )
            .await?;
        }
        let before = millis(now - REFERENCE_RETENTION);
        let references = tx.execute("DELETE FROM outcome_events WHERE created_at < $1", &[&before]).await?
            // The oldest have the lowest numbers: a window at the front is enough to look at, and a sweep a minute
            // clears far more than are written.
            + tx
                .execute(
                    "DELETE FROM unauthenticated_events WHERE created_at < $1
                     AND seq <= (SELECT min(seq) FROM unauthenticated_events) + $2",
                    &[&before, &UNAUTHENTICATED_SWEEP_WINDOW],
                )
                .await?;
        let deliveries = tx
            .execute(
                "DELETE FROM webhook_outbox WHERE (status = 'delivered' AND created_at < $1)
                                               OR (status = 'failed' AND created_at < $2)",
                &[&millis(now - DELIVERED_RETENTION), &millis(now - FAILED_RETENTION)],
            )
            .await?;
        tx.commit().await?;
        Ok(links + flows + held + references + deliveries)
    }

    pub async fn count(&self, table: Table) -> Result<i64, StoreError> {
        let sql = match table {
            Table::Links => "SELECT COUNT(*) FROM authorization_links",
            Table::Flows => "SELECT COUNT(*) FROM flows",
            Table::Accounts => "SELECT COUNT(*) FROM connected_accounts",
            Table::OutcomeEvents => {
                "SELECT (SELECT COUNT(*) FROM outcome_events) + (SELECT COUNT(*) FROM unauthenticated_events)"
            }
            Table::PendingVerifications => "SELECT COUNT(*) FROM pending_verifications",
            Table::WebhookOutbox => "SELECT COUNT(*) FROM webhook_outbox",
        };
        let client = self.client().await?;
        Ok(client.query_one(sql, &[]).await?.try_get(0)?)
    }

    pub async fn enable_webhooks(&self, enabled: bool) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.execute("UPDATE webhook_settings SET enabled = $1 WHERE id = 1", &[&enabled]).await?;
        Ok(())
    }

    pub async fn claim_deliveries(
        &self,
        lease: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let client = self.client().await?;
        // SKIP LOCKED: workers in other instances claiming at the same moment take other rows, never these.
        let statement = client
            .prepare_cached(concat!(
                "UPDATE webhook_outbox SET lease = $1, lease_until = $2
                 WHERE id IN (SELECT id FROM webhook_outbox
                              WHERE status = 'pending' AND next_attempt_at <= $3
                                AND (lease_until IS NULL OR lease_until <= $3)
                              ORDER BY next_attempt_at LIMIT $4
                              FOR UPDATE SKIP LOCKED)
                 RETURNING ",
                delivery_columns!()
            ))
            .await?;
        let rows = client.query(&statement, &[&lease, &millis(until), &millis(now), &i64::from(limit)]).await?;
        rows.iter().map(delivery_from_row).collect()
    }

    pub async fn end_delivery(
        &self,
        id: &str,
        lease: &str,
        end: DeliveryEnd,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (status, last_status, last_error, next_at, delivered_at) = super::delivery_end_values(&end, now);
        let last_status = last_status.map(|s| i32::try_from(s).unwrap_or(0));
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE webhook_outbox SET status = $1, attempts = attempts + 1, last_status = $2,
                    last_error = $3, next_attempt_at = COALESCE($4, next_attempt_at), delivered_at = $5,
                    lease = NULL, lease_until = NULL
                 WHERE id = $6 AND lease = $7",
            )
            .await?;
        let changed = client
            .execute(&statement, &[&status, &last_status, &last_error, &next_at, &delivered_at, &id, &lease])
            .await?;
        Ok(changed == 1)
    }

    pub async fn list_deliveries(&self, query: &DeliveryQuery) -> Result<Vec<DeliveryRecord>, StoreError> {
        let status = query.status.map(DeliveryStatus::as_str);
        let (before_at, before_id) = query.before.clone().unwrap_or((i64::MAX, String::new()));
        let client = self.client().await?;
        let statement = client
            .prepare_cached(concat!(
                "SELECT ",
                delivery_columns!(),
                " FROM webhook_outbox
                 WHERE ($1::text IS NULL OR status = $1) AND (created_at < $2 OR (created_at = $2 AND id < $3))
                 ORDER BY created_at DESC, id DESC LIMIT $4"
            ))
            .await?;
        let rows = client.query(&statement, &[&status, &before_at, &before_id, &i64::from(query.limit)]).await?;
        rows.iter().map(delivery_from_row).collect()
    }

    pub async fn retry_delivery(&self, id: &str, now: OffsetDateTime) -> Result<Option<DeliveryRecord>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(concat!(
                "UPDATE webhook_outbox SET status = 'pending', next_attempt_at = $1, lease = NULL, lease_until = NULL
                 WHERE id = $2 RETURNING ",
                delivery_columns!()
            ))
            .await?;
        client.query_opt(&statement, &[&millis(now), &id]).await?.as_ref().map(delivery_from_row).transpose()
    }

    pub async fn pending_deliveries(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        Ok(client.query_one("SELECT COUNT(*) FROM webhook_outbox WHERE status = 'pending'", &[]).await?.try_get(0)?)
    }
}

fn delivery_from_row(row: &Row) -> Result<DeliveryRecord, StoreError> {
    let status = DeliveryStatus::parse(&row.try_get::<_, String>("status")?)?;
    Ok(DeliveryRecord {
        id: row.try_get("id")?,
        event_type: row.try_get("event_type")?,
        payload: row.try_get("payload")?,
        status,
        attempts: i64::from(row.try_get::<_, i32>("attempts")?),
        created_at: from_millis(row.try_get("created_at")?)?,
        next_attempt_at: match status {
            DeliveryStatus::Pending => Some(from_millis(row.try_get("next_attempt_at")?)?),
            _ => None,
        },
        last_status: row.try_get::<_, Option<i32>>("last_status")?.map(i64::from),
        last_error: row.try_get("last_error")?,
        delivered_at: row.try_get::<_, Option<i64>>("delivered_at")?.map(from_millis).transpose()?,
    })
}

/// Inserts one outcome event, into `unauthenticated_events` when it concerns no flow and no account; a reference
/// already stored is left as it is.
async fn insert_event(tx: &impl GenericClient, event: &OutcomeEvent) -> Result<(), StoreError> {
    let sql = if event.unauthenticated {
        concat!(
            "INSERT INTO unauthenticated_events (",
            event_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
             ON CONFLICT (reference) DO NOTHING"
        )
    } else {
        concat!(
            "INSERT INTO outcome_events (",
            event_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
             ON CONFLICT (reference) DO NOTHING"
        )
    };
    let statement = tx.prepare_cached(sql).await?;
    tx.execute(
        &statement,
        &[
            &event.reference,
            &event.code,
            &event.cause,
            &event.class,
            &event.connection,
            &event.identifier,
            &event.flow_id,
            &event.error,
            &event.error_description,
            &event.error_uri,
            &event.iss,
            &event.provider_status,
            &event.provider_body,
            &event.detail,
            &event.hint,
            &millis(event.created_at.0),
        ],
    )
    .await?;
    Ok(())
}

/// A statement's parameter, as the client takes them.
///
/// Statements of one transaction that do not wait for each other's results are sent together: the client pipelines
/// requests it is given before their answers arrive, and the server runs them in the order sent. They are joined
/// with `futures_util::join!`, which polls in order, so they are sent in the order written; every answer is awaited
/// and the results are checked in that order, so of several that fail, the first one's error is the one returned
/// (the later ones only say the transaction was aborted). `try_join!` would return whichever error a poll finds
/// first, which can be a later statement's.
type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync + 'a);

/// A transaction whose `BEGIN` goes out with its first statements and whose `COMMIT` with its last, so that a
/// transaction whose statements need no answer before the next one is a single round trip.
///
/// A `COMMIT` sent after a statement that failed finds the transaction aborted, and the server answers it by rolling
/// back, without an error: the statements' own results, checked in order, say what failed. Hand-made because
/// tokio-postgres's `Transaction` awaits its `BEGIN` alone and is consumed by its `commit`, so neither can be sent
/// with the statements. Its guard sends a `ROLLBACK` when dropped unfinished, through the client's internals; this
/// one, dropped while the server may still be inside the transaction (a cancelled request, a connection that broke
/// before the `COMMIT` was answered), takes its connection out of the pool and closes it. A transaction whose
/// `COMMIT` was not sent yet is then rolled back by the server; one whose `COMMIT` was already sent usually commits,
/// as the server reads what was sent before it notices the connection closed.
struct Pipelined {
    /// Emptied only as the guard is dropped.
    client: Option<deadpool_postgres::Object>,
    /// Whether the server may be inside the transaction: from before `BEGIN` is sent until `COMMIT` or `ROLLBACK`
    /// is answered.
    open: bool,
}

impl Pipelined {
    fn new(client: deadpool_postgres::Object) -> Self {
        Self { client: Some(client), open: false }
    }

    /// The connection, to prepare statements before the transaction begins.
    fn client(&self) -> Result<&deadpool_postgres::Client, StoreError> {
        self.client.as_ref().ok_or(StoreError::Closed)
    }

    /// The connection, for the first group of statements, which sends `BEGIN` before them.
    fn begin(&mut self) -> Result<&deadpool_postgres::Client, StoreError> {
        self.open = true;
        self.client()
    }

    /// Notes the answer to the `COMMIT` or `ROLLBACK` sent last. Any answer from the server, an error included,
    /// means it has left the transaction; no answer (the connection failed) leaves that unknown.
    fn ended(&mut self, answer: &Result<(), tokio_postgres::Error>) {
        if answer.as_ref().map_or_else(|err| err.as_db_error().is_some(), |()| true) {
            self.open = false;
        }
    }

    /// Sends `statements` and then `COMMIT` together, after `BEGIN` when the transaction has not begun yet: a single
    /// round trip, for the part of a transaction in which nothing waits for an earlier statement's answer. Every
    /// answer is awaited and checked in the order sent, so the first statement that failed gives the error.
    ///
    /// A statement the server refuses aborts the transaction, and the `COMMIT` after it rolls back. One that fails
    /// before it is sent (its parameters did not encode) leaves the server's transaction as it was, so `ROLLBACK` is
    /// sent in place of `COMMIT`: the futures are first polled in the order written, and such a failure is known by
    /// the time the last one is.
    async fn commit_with(
        &mut self,
        begin: bool,
        statements: &[(&tokio_postgres::Statement, &[Param<'_>])],
    ) -> Result<(), StoreError> {
        let tx = self.begin()?;
        let failed = AtomicBool::new(false);
        let noted = |answer: Result<u64, tokio_postgres::Error>| {
            if answer.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            answer
        };
        let (begun, answers, ended) = futures_util::join!(
            async {
                if !begin {
                    return Ok(());
                }
                let begun = tx.batch_execute("BEGIN").await;
                if begun.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                begun
            },
            // Up to 30 futures, `join_all` polls them in the order given, so the statements are sent in that order.
            futures_util::future::join_all(
                statements.iter().map(|(statement, params)| async { noted(tx.execute(*statement, params).await) })
            ),
            async { tx.batch_execute(if failed.load(Ordering::Relaxed) { "ROLLBACK" } else { "COMMIT" }).await },
        );
        self.ended(&ended);
        begun?;
        for answer in answers {
            answer?;
        }
        ended?;
        Ok(())
    }

    /// Ends the transaction without keeping anything; the connection goes back to the pool once that is answered.
    async fn rollback(mut self) {
        let answer = match self.client() {
            Ok(client) => client.batch_execute("ROLLBACK").await,
            Err(_) => return,
        };
        self.ended(&answer);
    }
}

impl Drop for Pipelined {
    fn drop(&mut self) {
        if self.open
            && let Some(client) = self.client.take()
        {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

/// Serialises, until the transaction ends, the transactions that add links or flows for one connection and
/// identifier: each then trims to its newest `keep` with every earlier insert in view, so a flood of starts spread
/// over instances leaves no more than `keep` behind. (The two-key advisory locks are a keyspace of their own.)
/// Parameters: the connection and the identifier.
const LOCK_IDENTIFIER: &str = "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))";

/// The statements that complete a flow, prepared on the connection that runs them: the flow's update, whose count
/// decides the rest, then the account's and the link's.
struct Completion {
    /// Parameters: the time, the flow's id.
    succeed: tokio_postgres::Statement,
    /// Parameters: [`AccountTokens::params`].
    account: tokio_postgres::Statement,
    /// Parameters: the time, the flow's id.
    consume: tokio_postgres::Statement,
}

impl Completion {
    async fn prepare(db: &impl GenericClient) -> Result<Self, StoreError> {
        let succeed = db
            .prepare_cached(
                "UPDATE flows SET status = 'succeeded', finished_at = $1
                 WHERE id = $2 AND status IN ('exchanging', 'verifying')",
            )
            .await?;
        let account = db
            .prepare_cached(
                "INSERT INTO connected_accounts (connection, identifier, status, scopes, sealed_tokens, key_id,
                                                 token_expires_at, refresh_due_at, token_version, created_at,
                                                 updated_at, metadata)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $9, 1, $8, $8, $10)
                 ON CONFLICT (connection, identifier) DO UPDATE SET
                    status = excluded.status, scopes = excluded.scopes, sealed_tokens = excluded.sealed_tokens,
                    key_id = excluded.key_id, token_expires_at = excluded.token_expires_at,
                    refresh_due_at = excluded.refresh_due_at, token_version = connected_accounts.token_version + 1,
                    refresh_lease = NULL, refresh_lease_until = NULL, refresh_failures = 0, missing_scopes = NULL,
                    updated_at = excluded.updated_at, metadata = excluded.metadata",
            )
            .await?;
        // The link did its job: forwarded or reopened, it starts no further flow for this account. The row lock this
        // takes makes a concurrent claim on the same link wait for this transaction (see `claim_flow`).
        let consume = db
            .prepare_cached(
                "UPDATE authorization_links SET consumed_at = $1
                 WHERE id = (SELECT link_id FROM flows WHERE id = $2) AND consumed_at IS NULL",
            )
            .await?;
        Ok(Self { succeed, account, consume })
    }
}

/// A flow's tokens as [`Completion::account`] takes them, with the time of the write.
struct AccountTokens<'t> {
    tokens: &'t TokenWrite,
    status: &'static str,
    scopes: String,
    refresh_due_at: Option<i64>,
    metadata: Option<String>,
    at: i64,
}

impl<'t> AccountTokens<'t> {
    fn new(tokens: &'t TokenWrite, now: OffsetDateTime) -> Result<Self, StoreError> {
        Ok(Self {
            tokens,
            status: tokens.status.as_str(),
            scopes: tokens.scopes_json()?,
            refresh_due_at: tokens.refresh_due_at.map(millis),
            metadata: tokens.metadata_json()?,
            at: millis(now),
        })
    }

    fn params(&self) -> [Param<'_>; 10] {
        [
            &self.tokens.connection,
            &self.tokens.identifier,
            &self.status,
            &self.scopes,
            &self.tokens.sealed_tokens,
            &self.tokens.key_id,
            &self.tokens.token_expires_at,
            &self.at,
            &self.refresh_due_at,
            &self.metadata,
        ]
    }
}

/// Makes a flow succeeded, gives its account the tokens and consumes its link; false (and nothing written) when
/// the flow was no longer exchanging or verifying. The caller commits. Two round trips: the flow's update, whose
/// count decides the rest, then the account's and the link's statements together (pipelined, run in order).
async fn complete_in(
    tx: &impl GenericClient,
    flow_id: &str,
    tokens: &TokenWrite,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let (statements, account) = (Completion::prepare(tx).await?, AccountTokens::new(tokens, now)?);
    let of_flow: [Param<'_>; 2] = [&account.at, &flow_id];
    if tx.execute(&statements.succeed, &of_flow).await? == 0 {
        return Ok(false);
    }
    let account_row = account.params();
    let (upserted, consumed) =
        futures_util::join!(tx.execute(&statements.account, &account_row), tx.execute(&statements.consume, &of_flow));
    upserted?;
    consumed?;
    Ok(true)
}

/// Fails a flow that has not ended yet; returns whether it did.
async fn fail_in(db: &impl GenericClient, flow_id: &str, ending: &FlowEnding) -> Result<bool, StoreError> {
    let fail = db
        .prepare_cached(
            "UPDATE flows SET status = 'failed', outcome_code = $1, outcome_cause = $2, reference = $3,
                finished_at = $4
             WHERE id = $5 AND status NOT IN ('succeeded', 'failed')",
        )
        .await?;
    let changed =
        db.execute(&fail, &[&ending.code, &ending.cause, &ending.reference, &millis(ending.at), &flow_id]).await?;
    Ok(changed == 1)
}

/// Discards held tokens and fails their flow.
async fn discard_held(
    tx: &impl GenericClient,
    pending: &PendingVerification,
    ending: &FlowEnding,
) -> Result<(), StoreError> {
    let discard = tx.prepare_cached("DELETE FROM pending_verifications WHERE flow_id = $1").await?;
    tx.execute(&discard, &[&pending.flow_id]).await?;
    fail_in(tx, &pending.flow_id, ending).await?;
    release_account(tx, &pending.tokens.connection, &pending.tokens.identifier).await
}

/// An account that was waiting for verification, and has no held tokens left, waits for a flow again.
async fn release_account(db: &impl GenericClient, connection: &str, identifier: &str) -> Result<(), StoreError> {
    let release = db
        .prepare_cached(
            "UPDATE connected_accounts SET status = 'PENDING_AUTH'
             WHERE connection = $1 AND identifier = $2 AND status = 'PENDING_VERIFICATION'
               AND NOT EXISTS (SELECT 1 FROM pending_verifications p
                               WHERE p.connection = connected_accounts.connection
                                 AND p.identifier = connected_accounts.identifier)",
        )
        .await?;
    db.execute(&release, &[&connection, &identifier]).await?;
    Ok(())
}

fn pending_from_row(row: &Row) -> Result<PendingVerification, StoreError> {
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
            refresh_due_at: row.try_get::<_, Option<i64>>("refresh_due_at")?.map(from_millis).transpose()?,
            metadata: super::parse_metadata(row.try_get::<_, Option<String>>("metadata")?.as_deref())?,
        },
        expires_at: from_millis(row.try_get("expires_at")?)?,
    })
}

fn account_from_row(row: &Row) -> Result<ConnectedAccount, StoreError> {
    let status: String = row.try_get("status")?;
    let scopes: String = row.try_get("scopes")?;
    let last_error = match (
        row.try_get::<_, Option<String>>("last_error_code")?,
        row.try_get::<_, Option<String>>("last_error_reference")?,
        row.try_get::<_, Option<i64>>("last_error_at")?,
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
        missing_scopes: super::parse_scopes(row.try_get::<_, Option<String>>("missing_scopes")?.as_deref())?,
        metadata: super::parse_metadata(row.try_get::<_, Option<String>>("metadata")?.as_deref())?,
    })
}

fn token_state_from_row(row: &Row) -> Result<TokenState, StoreError> {
    let status: String = row.try_get("status")?;
    let sealed: Option<Vec<u8>> = row.try_get("sealed_tokens")?;
    let key_id: Option<String> = row.try_get("key_id")?;
    Ok(TokenState {
        status: status.parse().map_err(|()| StoreError::Corrupt(format!("unknown account status {status:?}")))?,
        version: row.try_get("token_version")?,
        sealed: sealed.map(|sealed| (sealed, key_id.unwrap_or_default())),
        scopes: super::parse_scopes(Some(&row.try_get::<_, String>("scopes")?))?,
        lease_until: row.try_get::<_, Option<i64>>("refresh_lease_until")?.map(from_millis).transpose()?,
        refresh_failures: i64::from(row.try_get::<_, i32>("refresh_failures")?),
        metadata: super::parse_metadata(row.try_get::<_, Option<String>>("metadata")?.as_deref())?,
    })
}

fn flow_from_row(row: &Row) -> Result<FlowRecord, StoreError> {
    Ok(FlowRecord {
        id: row.try_get("id")?,
        state_hash: row.try_get("state_hash")?,
        link_id: row.try_get("link_id")?,
        connection: row.try_get("connection")?,
        identifier: row.try_get("identifier")?,
        browser_hash: row.try_get("browser_hash")?,
        sealed_secrets: row.try_get("sealed_secrets")?,
        return_to: row.try_get("return_to")?,
        status: FlowStatus::parse(row.try_get("status")?)?,
        outcome_code: row.try_get("outcome_code")?,
        outcome_cause: row.try_get("outcome_cause")?,
        reference: row.try_get("reference")?,
        created_at: from_millis(row.try_get("created_at")?)?,
        expires_at: from_millis(row.try_get("expires_at")?)?,
        claimed_at: row.try_get::<_, Option<i64>>("claimed_at")?.map(from_millis).transpose()?,
    })
}

fn event_from_row(row: &Row) -> Result<OutcomeEvent, StoreError> {
    Ok(OutcomeEvent {
        reference: row.try_get("reference")?,
        code: row.try_get("code")?,
        cause: row.try_get("cause")?,
        class: row.try_get("class")?,
        connection: row.try_get("connection")?,
        identifier: row.try_get("identifier")?,
        flow_id: row.try_get("flow_id")?,
        error: row.try_get("error")?,
        error_description: row.try_get("error_description")?,
        error_uri: row.try_get("error_uri")?,
        iss: row.try_get("iss")?,
        provider_status: row.try_get("provider_status")?,
        provider_body: row.try_get("provider_body")?,
        detail: row.try_get("detail")?,
        hint: row.try_get("hint")?,
        created_at: Millis(from_millis(row.try_get("created_at")?)?),
        unauthenticated: row.try_get("unauthenticated")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_urls_own_session_options_are_kept_after_the_statement_timeout() {
        assert_eq!(session_options(None), "-c statement_timeout=10000");
        assert_eq!(session_options(Some("  ")), "-c statement_timeout=10000");
        let url = "postgres://gate@db/gate?options=-c%20search_path%3Dgate%20-c%20statement_timeout%3D30000";
        let from_url = options(url).unwrap();
        assert_eq!(
            session_options(from_url.get_options()),
            "-c statement_timeout=10000 -c search_path=gate -c statement_timeout=30000",
            "the server applies them in order, so the URL's timeout is the one in force"
        );
    }
}

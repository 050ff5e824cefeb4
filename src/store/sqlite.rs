//! The embedded SQLite backend: one file, one instance.
//!
//! Each SQLite connection lives on its own thread ([`Worker`]), and each store operation runs there whole:
//! one hand-off between the async runtime and the database thread per operation, however many statements its
//! transaction holds, instead of one per statement. `docs/performance.md` (Finding 2) measured those hand-offs as
//! the largest cost of a flow. The writer's thread commits the writes it finds waiting together, in one transaction
//! with a savepoint each (Finding 16): under load a commit is shared by several flows, and each caller is answered
//! once its write is committed.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rusqlite::{OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use rusqlite_migration::{M, Migrations};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::{
    Abandoned, AccountQuery, Arrival, BuildFlow, Claim, Confirmation, DELIVERED_RETENTION, DeliveryEnd, DeliveryQuery,
    DeliveryRecord, DeliveryStatus, DueRefresh, FAILED_RETENTION, FLOW_RETENTION, FlowEnding, FlowRecord, FlowStatus,
    Lease, LinkRecord, Millis, OutcomeEvent, PendingVerification, REFERENCE_RETENTION, RefreshEnd, StartedFlow,
    StoreError, Table, TokenState, TokenWrite, UNAUTHENTICATED_SWEEP_WINDOW, from_millis, millis,
};
use crate::account::{AccountStatus, ConnectedAccount, LastError};

/// SQLite allows one writer at a time. Writes go through exactly one connection, so they queue for its thread
/// instead of colliding in SQLite's busy handler (which sleeps and retries); reads use their own connections, which
/// WAL lets run beside the writer.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Connections>,
}

#[derive(Debug)]
struct Connections {
    writer: Worker,
    readers: Vec<Worker>,
    next_reader: AtomicUsize,
    /// Copies the write-ahead log back into the database file, so the writer never does it on a request's path.
    checkpointer: Worker,
}

/// Operations waiting for one connection, at most; beyond this, callers wait up to [`QUEUE_WAIT`] for a place.
const QUEUE: usize = 1024;
/// How long an operation may wait for a place in a full queue before it fails as [`StoreError::Busy`].
const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// How long SQLite itself waits for a lock held by another process (a backup, the `link` command).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections beside the writer.
const READERS: usize = 2;
/// WAL pages after which the writer checkpoints by itself: only a backstop for when [`SqliteStore::checkpoint`] is not
/// called often enough (SQLite's default is 1,000 pages, which at a few hundred flows per second puts a
/// checkpoint, with its two fsyncs, on a request's path several times a second). A flow writes about 18 pages, so
/// the server checkpoints sooner the busier the log is (`server::checkpoint_forever`).
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// One connection on its own thread, with a bounded queue of operations.
///
/// Written here rather than taken from `tokio-rusqlite`, which this store used before: that crate's thread waits
/// for its next operation in a channel receive that spins through `sched_yield` before it sleeps, and at a flow's
/// six operations that spinning and the context switches it causes took a fifth of the service's CPU
/// (`docs/performance.md`, Finding 7). Here the thread sleeps in tokio's `blocking_recv` until an operation comes.
#[derive(Debug)]
struct Worker {
    jobs: mpsc::Sender<Job>,
}

/// What is left of an operation once it has run: answering its caller, with the error of the commit that was to
/// keep what it wrote, if that failed (`None` when its own transaction committed it, or the group's did).
type Answer = Box<dyn FnOnce(Option<&rusqlite::Error>) + Send>;

/// A store operation, as its connection's thread runs it.
type Operation = Box<dyn FnOnce(&mut rusqlite::Connection) -> Answer + Send>;

/// An operation for a connection's thread, or the request to close it.
enum Job {
    Run(Operation),
    Close(oneshot::Sender<Result<(), rusqlite::Error>>),
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Run(_) => "Job::Run",
            Self::Close(_) => "Job::Close",
        })
    }
}

/// Whether a connection's thread commits the operations it finds waiting together (the writer) or runs each alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grouping {
    Alone,
    Grouped,
}

/// Operations committed together, at most.
const GROUP: usize = 32;

/// Runs one operation; `None` when it panicked (a panicking operation loses only its own answer, its caller sees
/// `Closed`, and its transaction or savepoint rolls back as it unwinds).
fn run_caught(operation: Operation, db: &mut rusqlite::Connection) -> Option<Answer> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| operation(db))).ok()
}

/// Runs one operation in its own transaction. One that leaves a transaction open (its rollback failed as it was
/// dropped) has written nothing that is committed: it is rolled back here and its caller told so.
fn run_alone(operation: Operation, db: &mut rusqlite::Connection) {
    let answer = run_caught(operation, db);
    let left_open = !db.is_autocommit();
    if left_open {
        let _ = db.execute_batch("ROLLBACK");
    }
    if let Some(answer) = answer {
        answer(left_open.then(|| rolled_back("a write left its transaction open; it was rolled back")).as_ref());
    }
}

/// The error of writes whose transaction was rolled back through no failure of their own statements: worth trying
/// again ([`commit_failed`]).
fn rolled_back(why: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT_ROLLBACK), Some(why.into()))
}

/// Runs the operations waiting behind `first` (up to [`GROUP`]) in one transaction and commits it once: each
/// operation's own transaction becomes a savepoint inside it ([`begin`]), so one that fails still leaves nothing
/// behind, and every caller is answered only after the shared commit. Returns the request to close, if one was
/// waiting among them.
fn run_group(
    first: Operation,
    queue: &mut mpsc::Receiver<Job>,
    db: &mut rusqlite::Connection,
) -> Option<oneshot::Sender<Result<(), rusqlite::Error>>> {
    let mut operations = Vec::with_capacity(GROUP);
    operations.push(first);
    let mut close = None;
    while operations.len() < GROUP {
        match queue.try_recv() {
            Ok(Job::Run(operation)) => operations.push(operation),
            Ok(Job::Close(done)) => {
                close = Some(done);
                break;
            }
            Err(_) => break,
        }
    }
    if db.execute_batch("BEGIN IMMEDIATE").is_err() {
        // The group's transaction could not start: each operation tries its own, as it would alone.
        for operation in operations {
            run_alone(operation, db);
        }
        return close;
    }
    let mut answers = Vec::with_capacity(operations.len());
    let mut operations = operations.into_iter();
    for operation in operations.by_ref() {
        answers.extend(run_caught(operation, db));
        if db.is_autocommit() {
            // SQLite rolled the whole transaction back (an I/O error, a full disk): what the group wrote so far is
            // gone, so its callers hear so, and the rest run alone.
            let rolled_back = rolled_back("the transaction of a group of writes was rolled back");
            for answer in answers {
                answer(Some(&rolled_back));
            }
            for operation in operations {
                run_alone(operation, db);
            }
            return close;
        }
    }
    let committed = db.execute_batch("COMMIT");
    if committed.is_err() && !db.is_autocommit() {
        let _ = db.execute_batch("ROLLBACK");
    }
    for answer in answers {
        answer(committed.as_ref().err());
    }
    close
}

impl Worker {
    async fn open(path: PathBuf, flags: OpenFlags, grouping: Grouping) -> Result<Self, StoreError> {
        let (jobs, mut queue) = mpsc::channel::<Job>(QUEUE);
        let (opened_tx, opened) = oneshot::channel();
        let spawned = std::thread::Builder::new().name("callback-gate-sqlite".into()).spawn(move || {
            let mut connection = match rusqlite::Connection::open_with_flags(&path, flags) {
                Ok(connection) => {
                    let _ = opened_tx.send(Ok(()));
                    connection
                }
                Err(err) => {
                    let _ = opened_tx.send(Err(err));
                    return;
                }
            };
            while let Some(job) = queue.blocking_recv() {
                let close = match job {
                    Job::Run(operation) if grouping == Grouping::Grouped && !queue.is_empty() => {
                        run_group(operation, &mut queue, &mut connection)
                    }
                    Job::Run(operation) => {
                        run_alone(operation, &mut connection);
                        None
                    }
                    Job::Close(done) => Some(done),
                };
                if !connection.is_autocommit() && connection.execute_batch("ROLLBACK").is_err() {
                    // Every later write would land in a transaction that is never committed: stop instead, so that
                    // callers hear `Closed` rather than an answer for a write that is not kept.
                    tracing::error!(
                        target: "callback_gate::store",
                        "a database connection was left inside a transaction that could not be rolled back; it is closed"
                    );
                    return;
                }
                if let Some(done) = close {
                    let closed = connection.close().map_err(|(_, err)| err);
                    let _ = done.send(closed);
                    return;
                }
            }
        });
        spawned.map_err(|err| StoreError::Corrupt(format!("could not start a database thread: {err}")))?;
        opened.await.map_err(|_| StoreError::Closed)??;
        Ok(Self { jobs })
    }

    /// Runs `operation` on the connection's thread and waits for its answer, given once what it wrote is committed.
    async fn run<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let place = tokio::time::timeout(QUEUE_WAIT, self.jobs.reserve())
            .await
            .map_err(|_| StoreError::Busy)?
            .map_err(|_| StoreError::Closed)?;
        let (answer_tx, answer) = oneshot::channel();
        place.send(Job::Run(Box::new(move |db| {
            let result = operation(db);
            Box::new(move |failed_commit: Option<&rusqlite::Error>| {
                // An operation that failed keeps its own error; one that succeeded hears why it was not kept.
                let _ = answer_tx.send(match failed_commit {
                    None => result,
                    Some(err) => result.and(Err(commit_failed(err))),
                });
            })
        })));
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn close(&self) {
        let (done_tx, done) = oneshot::channel();
        if self.jobs.send(Job::Close(done_tx)).await.is_err() {
            return;
        }
        if let Ok(Err(err)) = done.await {
            tracing::warn!(target: "callback_gate::store", error = %err, "could not close a database connection");
        }
    }
}

/// The error a group's failed commit gives each of its operations: SQLite's code and message (its errors are not
/// `Clone`).
fn commit_failed(err: &rusqlite::Error) -> StoreError {
    match err {
        // Rolled back with others, through no fault of its own (or its own, which it keeps): worth trying again.
        rusqlite::Error::SqliteFailure(code, message) if code.code == rusqlite::ErrorCode::OperationAborted => {
            StoreError::Unavailable(message.clone().unwrap_or_else(|| "the write was rolled back".into()))
        }
        rusqlite::Error::SqliteFailure(code, message) => {
            StoreError::Database(rusqlite::Error::SqliteFailure(*code, message.clone()))
        }
        other => StoreError::Unavailable(format!("the commit failed: {other}")),
    }
}

/// A write operation's transaction: its own (`BEGIN IMMEDIATE`) when it runs alone, or a savepoint inside the
/// writer's transaction when it runs in a group ([`run_group`]), which the group commits. Every write operation
/// that needs a transaction takes it from here; `BEGIN` inside a group would fail.
fn begin(db: &mut rusqlite::Connection) -> rusqlite::Result<WriteTransaction<'_>> {
    if db.is_autocommit() {
        Ok(WriteTransaction::Own(db.transaction_with_behavior(TransactionBehavior::Immediate)?))
    } else {
        Ok(WriteTransaction::InGroup(db.savepoint()?))
    }
}

/// See [`begin`]. Dropped without [`WriteTransaction::commit`], it rolls back what it wrote, either way.
enum WriteTransaction<'c> {
    Own(rusqlite::Transaction<'c>),
    InGroup(rusqlite::Savepoint<'c>),
}

impl WriteTransaction<'_> {
    fn commit(self) -> rusqlite::Result<()> {
        match self {
            Self::Own(transaction) => transaction.commit(),
            Self::InGroup(savepoint) => savepoint.commit(),
        }
    }
}

impl std::ops::Deref for WriteTransaction<'_> {
    type Target = rusqlite::Connection;

    fn deref(&self) -> &rusqlite::Connection {
        match self {
            Self::Own(transaction) => transaction,
            Self::InGroup(savepoint) => savepoint,
        }
    }
}

/// Keeps the newest `?3` links of an identifier. Reads them through `authorization_links_newest`, in order.
const TRIM_LINKS: &str = "DELETE FROM authorization_links WHERE id IN
    (SELECT id FROM authorization_links WHERE connection = ?1 AND identifier = ?2
     ORDER BY created_at DESC, id LIMIT -1 OFFSET ?3)";

/// Keeps the newest `?3` flows of an identifier that wait for a callback. Reads only those, through the partial index
/// `flows_started_newest`: the identifier's finished flows are never read.
const TRIM_STARTED_FLOWS: &str = "DELETE FROM flows WHERE id IN
    (SELECT id FROM flows WHERE connection = ?1 AND identifier = ?2 AND status = 'started'
     ORDER BY created_at DESC, id LIMIT -1 OFFSET ?3)";

/// The schema, in order; SQLite's `user_version` records how many have run.
fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("../../migrations/sqlite/0001_initial.sql")),
        M::up(include_str!("../../migrations/sqlite/0002_user_verifications.sql")),
        M::up(include_str!("../../migrations/sqlite/0003_endings.sql")),
        M::up(include_str!("../../migrations/sqlite/0004_token_lifecycle.sql")),
        M::up(include_str!("../../migrations/sqlite/0005_webhooks.sql")),
        M::up(include_str!("../../migrations/sqlite/0006_account_metadata.sql")),
        M::up(include_str!("../../migrations/sqlite/0007_per_identifier_trims.sql")),
        M::up(include_str!("../../migrations/sqlite/0008_refresh_failed_from_account.sql")),
        M::up(include_str!("../../migrations/sqlite/0009_unauthenticated_events.sql")),
        M::up(include_str!("../../migrations/sqlite/0010_unmatched_references_unindexed.sql")),
    ])
}

/// The file a `sqlite:` database URL names: `sqlite://callback-gate.db`, `sqlite:///var/lib/callback-gate.db` or
/// `sqlite:callback-gate.db`, optionally followed by `?mode=rwc`, which is accepted and ignored.
pub fn database_path(url: &str) -> Result<PathBuf, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::Url("must start with sqlite:".into()))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() {
        return Err(StoreError::Url("names no database file".into()));
    }
    if path == ":memory:" {
        return Err(StoreError::Url("cannot be :memory:, because every connection would see its own database".into()));
    }
    if let Some(option) = query.split('&').find(|option| !option.is_empty() && !option.starts_with("mode=")) {
        return Err(StoreError::Url(format!("has an unsupported option \"{option}\"")));
    }
    Ok(PathBuf::from(path))
}

/// Settings every connection gets.
fn configure(db: &rusqlite::Connection) -> Result<(), rusqlite::Error> {
    db.busy_timeout(BUSY_TIMEOUT)?;
    db.pragma_update(None, "synchronous", "NORMAL")?;
    db.pragma_update(None, "foreign_keys", "ON")?;
    db.set_prepared_statement_cache_capacity(64);
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database and runs the migrations.
    pub async fn connect(database_url: &str) -> Result<Self, StoreError> {
        let path = database_path(database_url)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let writer = Worker::open(path.clone(), flags, Grouping::Grouped).await?;
        writer
            .run(|db| {
                configure(db)?;
                let mode: String = db.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
                if !mode.eq_ignore_ascii_case("wal") {
                    return Err(StoreError::Corrupt(format!("the database refused WAL mode (it is in {mode} mode)")));
                }
                db.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)?;
                migrations().to_latest(db)?;
                Ok(())
            })
            .await?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Worker::open(
                path.clone(),
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                Grouping::Alone,
            )
            .await?;
            reader.run(|db| Ok(configure(db)?)).await?;
            readers.push(reader);
        }
        let checkpointer = Worker::open(path, flags, Grouping::Alone).await?;
        checkpointer
            .run(|db| {
                configure(db)?;
                // This connection writes nothing; it only checkpoints, when asked.
                db.pragma_update(None, "wal_autocheckpoint", 0)?;
                Ok(())
            })
            .await?;
        let connections = Connections { writer, readers, next_reader: AtomicUsize::new(0), checkpointer };
        Ok(Self { inner: Arc::new(connections) })
    }

    /// Copies committed pages from the write-ahead log into the database file on a connection of its own, without
    /// blocking the writer or readers (a passive checkpoint), so the log stays small and the writer never pays for
    /// the copy and its fsyncs.
    pub async fn checkpoint(&self) -> Result<super::Checkpoint, StoreError> {
        self.inner
            .checkpointer
            .run(|db| {
                let (log, copied): (i64, i64) =
                    db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok((row.get(1)?, row.get(2)?)))?;
                Ok(super::Checkpoint { log, left: log - copied })
            })
            .await
    }

    /// Runs a write operation on the writer's thread.
    async fn write<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.inner.writer.run(operation).await
    }

    /// Runs a read operation on one of the readers' threads, in turn.
    async fn read<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let readers = &self.inner.readers;
        let turn = self.inner.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        readers[turn].run(operation).await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(|db| Ok(db.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    /// Closes every connection; operations after this fail as [`StoreError::Closed`].
    pub async fn close(&self) {
        self.inner.writer.close().await;
        for reader in &self.inner.readers {
            reader.close().await;
        }
        self.inner.checkpointer.close().await;
    }

    /// Stores a new link and makes its account PENDING_AUTH if the account is new. At most `keep` links are kept
    /// per connection and identifier: the oldest go first.
    pub async fn create_link(&self, link: &LinkRecord, keep: u32) -> Result<(), StoreError> {
        let link = link.clone();
        self.write(move |db| {
            let tx = begin(db)?;
            tx.prepare_cached(
                "INSERT INTO authorization_links (id, connection, identifier, return_to, created_at, expires_at)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                link.id,
                link.connection,
                link.identifier,
                link.return_to,
                millis(link.created_at),
                millis(link.expires_at)
            ])?;
            tx.prepare_cached(
                "INSERT INTO connected_accounts (connection, identifier, status, created_at, updated_at)
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (connection, identifier) DO NOTHING",
            )?
            .execute(params![
                link.connection,
                link.identifier,
                AccountStatus::PendingAuth.as_str(),
                millis(link.created_at),
                millis(link.created_at)
            ])?;
            tx.prepare_cached(TRIM_LINKS)?.execute(params![link.connection, link.identifier, i64::from(keep)])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn find_link(&self, id: &str) -> Result<Option<LinkRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |db| link_in(db, &id)).await
    }

    pub async fn start_flow(&self, link_id: &str, keep: u32, build: BuildFlow) -> Result<StartedFlow, StoreError> {
        let link_id = link_id.to_owned();
        self.write(move |db| {
            let tx = begin(db)?;
            let Some(link) = link_in(&tx, &link_id)? else {
                return Ok(StartedFlow { link: None, flow: None });
            };
            let Some(flow) = build(&link) else {
                return Ok(StartedFlow { link: Some(link), flow: None });
            };
            insert_flow(&tx, &flow, keep)?;
            tx.commit()?;
            Ok(StartedFlow { link: Some(link), flow: Some(flow) })
        })
        .await
    }

    pub async fn find_flow(&self, id: &str) -> Result<Option<FlowRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |db| {
            let sql = concat!("SELECT ", flow_columns!(), " FROM flows WHERE id = ?");
            let mut statement = db.prepare_cached(sql)?;
            let mut rows = statement.query([id])?;
            rows.next()?.map(flow_from_row).transpose()
        })
        .await
    }

    /// Finds the flow of a callback's state and claims it for that callback when it was started in the same
    /// browser (`browser_hash`, compared in constant time), is still waiting, and its link was not consumed by
    /// another flow. Of any number of concurrent callers with one state, exactly one gets [`Claim::Claimed`].
    /// Reading and claiming happen in one operation on the writer: a callback makes one trip to the database
    /// before its token exchange, not two.
    pub async fn claim_flow(
        &self,
        state_hash: &str,
        browser_hash: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Option<(FlowRecord, Claim)>, StoreError> {
        let state_hash = state_hash.to_owned();
        self.write(move |db| {
            let sql = concat!("SELECT ", flow_columns!(), " FROM flows WHERE state_hash = ?");
            let flow = {
                let mut statement = db.prepare_cached(sql)?;
                let mut rows = statement.query([state_hash])?;
                match rows.next()?.map(flow_from_row).transpose()? {
                    Some(flow) => flow,
                    None => return Ok(None),
                }
            };
            let same_browser = browser_hash
                .is_some_and(|hash| crate::crypto::constant_time_eq(hash.as_bytes(), flow.browser_hash.as_bytes()));
            if !same_browser {
                return Ok(Some((flow, Claim::OtherBrowser)));
            }
            let link_consumed = db
                .prepare_cached("SELECT consumed_at IS NOT NULL FROM authorization_links WHERE id = ?")?
                .query_row([&flow.link_id], |row| row.get::<_, bool>(0))
                .optional()?
                .unwrap_or(false);
            if link_consumed && flow.status == FlowStatus::Started {
                return Ok(Some((flow, Claim::LinkUsed)));
            }
            let changed = db
                .prepare_cached(
                    "UPDATE flows SET status = 'exchanging', claimed_at = ? WHERE id = ? AND status = 'started'",
                )?
                .execute(params![millis(now), flow.id])?;
            let claim = if changed == 1 { Claim::Claimed } else { Claim::NotStarted };
            Ok(Some((flow, claim)))
        })
        .await
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
        let scopes = tokens.scopes_json()?;
        let (flow_id, tokens) = (flow_id.to_owned(), tokens.clone());
        self.write(move |db| {
            let tx = begin(db)?;
            let completed = complete_in(&tx, &flow_id, &tokens, &scopes, now)?;
            if completed {
                tx.commit()?;
            }
            Ok(completed)
        })
        .await
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
        let (scopes, metadata) = (tokens.scopes_json()?, tokens.metadata_json()?);
        let (request_hash, flow_id, tokens) = (request_hash.to_owned(), flow_id.to_owned(), tokens.clone());
        self.write(move |db| {
            let tx = begin(db)?;
            tx.prepare_cached(
                "INSERT INTO pending_verifications (request_hash, flow_id, connection, identifier, scopes, sealed_tokens,
                                                    key_id, token_expires_at, refresh_due_at, created_at, expires_at,
                                                    metadata)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                request_hash,
                flow_id,
                tokens.connection,
                tokens.identifier,
                scopes,
                tokens.sealed_tokens,
                tokens.key_id,
                tokens.token_expires_at,
                tokens.refresh_due_at.map(millis),
                millis(now),
                millis(expires_at),
                metadata
            ])?;
            tx.prepare_cached(
                "INSERT INTO connected_accounts (connection, identifier, status, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT (connection, identifier) DO UPDATE SET status = excluded.status,
                    updated_at = excluded.updated_at
                 WHERE connected_accounts.status <> 'ACTIVE'",
            )?
            .execute(params![
                tokens.connection,
                tokens.identifier,
                AccountStatus::PendingVerification.as_str(),
                millis(now)
            ])?;
            tx.prepare_cached("UPDATE flows SET status = 'verifying' WHERE id = ?")?.execute([flow_id])?;
            tx.commit()?;
            Ok(())
        })
        .await
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
        let (request_hash, identifier, confirmation_hash) =
            (request_hash.to_owned(), identifier.to_owned(), confirmation_hash.to_owned());
        self.write(move |db| {
            let tx = begin(db)?;
            let sql = concat!(
                "SELECT ",
                pending_columns!(),
                " FROM pending_verifications WHERE request_hash = ? AND confirmation_hash IS NULL"
            );
            let Some(pending) = tx.prepare_cached(sql)?.query_row([&request_hash], pending_from_row).optional()? else {
                return Ok(Confirmation::Unknown);
            };
            let pending = pending?;
            let late = ending.at >= pending.expires_at;
            let matches = crate::crypto::constant_time_eq(pending.tokens.identifier.as_bytes(), identifier.as_bytes());
            if late || !matches {
                discard_held(&tx, &pending, &ending)?;
                tx.commit()?;
                return Ok(Confirmation::Refused { pending, late });
            }
            tx.prepare_cached("UPDATE pending_verifications SET confirmation_hash = ? WHERE request_hash = ?")?
                .execute([&confirmation_hash, &request_hash])?;
            tx.commit()?;
            Ok(Confirmation::Confirmed(pending))
        })
        .await
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
        let confirmation_hash = confirmation_hash.to_owned();
        self.write(move |db| {
            let tx = begin(db)?;
            let sql = concat!(
                "SELECT ",
                pending_columns!(),
                ", (SELECT browser_hash FROM flows f WHERE f.id = p.flow_id) AS browser_hash
                 FROM pending_verifications p WHERE confirmation_hash = ?"
            );
            let found = tx
                .prepare_cached(sql)?
                .query_row([&confirmation_hash], |row| {
                    Ok((pending_from_row(row)?, row.get::<_, Option<String>>("browser_hash")?))
                })
                .optional()?;
            let Some((pending, flow_browser)) = found else {
                return Ok(None);
            };
            let pending = pending?;
            tx.prepare_cached("DELETE FROM pending_verifications WHERE confirmation_hash = ?")?
                .execute([&confirmation_hash])?;
            let same_browser = match (&browser_hash, &flow_browser) {
                (Some(presented), Some(expected)) => {
                    crate::crypto::constant_time_eq(presented.as_bytes(), expected.as_bytes())
                }
                _ => false,
            };
            if same_browser && ending.at < pending.expires_at {
                let scopes = pending.tokens.scopes_json()?;
                if complete_in(&tx, &pending.flow_id, &pending.tokens, &scopes, ending.at)? {
                    tx.commit()?;
                    return Ok(Some(Arrival::Connected(pending)));
                }
            }
            discard_held(&tx, &pending, &ending)?;
            tx.commit()?;
            Ok(Some(Arrival::Refused { pending, other_browser: !same_browser }))
        })
        .await
    }

    pub async fn token_state(&self, connection: &str, identifier: &str) -> Result<Option<TokenState>, StoreError> {
        let (connection, identifier) = (connection.to_owned(), identifier.to_owned());
        self.read(move |db| {
            let sql = concat!(
                "SELECT ",
                token_state_columns!(),
                " FROM connected_accounts WHERE connection = ? AND identifier = ?"
            );
            let mut statement = db.prepare_cached(sql)?;
            let mut rows = statement.query([connection, identifier])?;
            rows.next()?.map(token_state_from_row).transpose()
        })
        .await
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
        let (connection, identifier, lease) = (connection.to_owned(), identifier.to_owned(), lease.to_owned());
        self.write(move |db| {
            let taken = db
                .prepare_cached(
                    "UPDATE connected_accounts SET refresh_lease = ?1, refresh_lease_until = ?2
                     WHERE connection = ?3 AND identifier = ?4 AND token_version = ?5
                       AND status IN ('ACTIVE', 'EXPIRED')
                       AND (refresh_lease_until IS NULL OR refresh_lease_until <= ?6)",
                )?
                .execute(params![lease, millis(until), connection, identifier, version, millis(now)])?;
            if taken == 1 {
                return Ok(Lease::Taken);
            }
            let found = db
                .prepare_cached(
                    "SELECT token_version, status, refresh_lease_until FROM connected_accounts
                     WHERE connection = ? AND identifier = ?",
                )?
                .query_row([&connection, &identifier], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, Option<i64>>(2)?))
                })
                .optional()?;
            Ok(match found {
                None => Lease::Gone,
                Some((current, status, until))
                    if current == version && matches!(status.as_str(), "ACTIVE" | "EXPIRED") =>
                {
                    Lease::Held { until: from_millis(until.unwrap_or(millis(now)))? }
                }
                Some(_) => Lease::Changed,
            })
        })
        .await
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
        let (connection, identifier, lease) = (connection.to_owned(), identifier.to_owned(), lease.to_owned());
        let (scopes, metadata) = match &end {
            RefreshEnd::Refreshed(tokens) => (Some(tokens.scopes_json()?), tokens.metadata_json()?),
            _ => (None, None),
        };
        self.write(move |db| {
            let at = millis(now);
            let changed = match (&end, scopes) {
                (RefreshEnd::Refreshed(tokens), Some(scopes)) => db
                    .prepare_cached(
                        "UPDATE connected_accounts SET status = 'ACTIVE', scopes = ?6, sealed_tokens = ?7, key_id = ?8,
                            token_expires_at = ?9, refresh_due_at = ?10, token_version = token_version + 1,
                            refresh_lease = NULL, refresh_lease_until = NULL, refresh_failures = 0, updated_at = ?5,
                            metadata = COALESCE(?11, metadata)
                         WHERE connection = ?1 AND identifier = ?2 AND token_version = ?3 AND refresh_lease = ?4",
                    )?
                    .execute(params![
                        connection,
                        identifier,
                        version,
                        lease,
                        at,
                        scopes,
                        tokens.sealed_tokens,
                        tokens.key_id,
                        tokens.token_expires_at,
                        tokens.refresh_due_at.map(millis),
                        metadata
                    ])?,
                (RefreshEnd::Expired, _) => db
                    .prepare_cached(
                        "UPDATE connected_accounts SET status = 'EXPIRED', refresh_due_at = NULL,
                            token_version = token_version + 1, refresh_lease = NULL, refresh_lease_until = NULL,
                            updated_at = ?5
                         WHERE connection = ?1 AND identifier = ?2 AND token_version = ?3 AND refresh_lease = ?4",
                    )?
                    .execute(params![connection, identifier, version, lease, at])?,
                (RefreshEnd::Retry { due_at }, _) => db
                    .prepare_cached(
                        "UPDATE connected_accounts SET refresh_due_at = ?5, refresh_failures = refresh_failures + 1,
                            refresh_lease = NULL, refresh_lease_until = NULL
                         WHERE connection = ?1 AND identifier = ?2 AND token_version = ?3 AND refresh_lease = ?4",
                    )?
                    .execute(params![connection, identifier, version, lease, millis(*due_at)])?,
                (RefreshEnd::Release, _) => db
                    .prepare_cached(
                        "UPDATE connected_accounts SET refresh_lease = NULL, refresh_lease_until = NULL
                         WHERE connection = ?1 AND identifier = ?2 AND token_version = ?3 AND refresh_lease = ?4",
                    )?
                    .execute(params![connection, identifier, version, lease])?,
                (RefreshEnd::Refreshed(_), None) => 0,
            };
            Ok(changed == 1)
        })
        .await
    }

    pub async fn due_refreshes(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<DueRefresh>, StoreError> {
        self.read(move |db| {
            let mut statement = db.prepare_cached(
                "SELECT connection, identifier, token_version FROM connected_accounts
                 WHERE refresh_due_at <= ?1 AND status = 'ACTIVE'
                   AND (refresh_lease_until IS NULL OR refresh_lease_until <= ?1)
                 ORDER BY refresh_due_at LIMIT ?2",
            )?;
            let rows = statement.query_map(params![millis(now), i64::from(limit)], |row| {
                Ok(DueRefresh { connection: row.get(0)?, identifier: row.get(1)?, version: row.get(2)? })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub async fn note_missing_scopes(
        &self,
        connection: &str,
        identifier: &str,
        version: i64,
        scopes: Vec<String>,
    ) -> Result<(), StoreError> {
        let (connection, identifier) = (connection.to_owned(), identifier.to_owned());
        self.write(move |db| {
            let tx = begin(db)?;
            let current: Option<Option<String>> = tx
                .prepare_cached(
                    "SELECT missing_scopes FROM connected_accounts
                     WHERE connection = ? AND identifier = ? AND token_version = ?",
                )?
                .query_row(params![connection, identifier, version], |row| row.get(0))
                .optional()?;
            let Some(current) = current else {
                return Ok(());
            };
            let merged = super::merge_scopes(current.as_deref(), scopes)?;
            tx.prepare_cached(
                "UPDATE connected_accounts SET missing_scopes = ? WHERE connection = ? AND identifier = ?",
            )?
            .execute(params![merged, connection, identifier])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn set_status(
        &self,
        connection: &str,
        identifier: &str,
        status: AccountStatus,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let wipe = status == AccountStatus::Disconnected;
        let (connection, identifier) = (connection.to_owned(), identifier.to_owned());
        self.write(move |db| {
            db.prepare_cached(
                "UPDATE connected_accounts SET status = ?1, updated_at = ?2, token_version = token_version + 1,
                    refresh_lease = NULL, refresh_lease_until = NULL, refresh_due_at = NULL,
                    sealed_tokens = CASE WHEN ?3 THEN NULL ELSE sealed_tokens END,
                    key_id = CASE WHEN ?3 THEN NULL ELSE key_id END
                 WHERE connection = ?4 AND identifier = ?5",
            )?
            .execute(params![status.as_str(), millis(now), wipe, connection, identifier])?;
            Ok(())
        })
        .await
    }

    /// Ends a flow that failed, unless it has ended already (a late writer never overwrites an ending). The
    /// account keeps whatever tokens and status it had. Returns whether this call ended the flow.
    pub async fn fail_flow(&self, flow_id: &str, ending: FlowEnding) -> Result<bool, StoreError> {
        let flow_id = flow_id.to_owned();
        self.write(move |db| Ok(fail_in(db, &flow_id, &ending)?)).await
    }

    /// Ends flows that will never finish by themselves: flows whose callback claimed them before `claimed_before`
    /// and never finished (the process stopped mid-exchange), and flows whose held tokens are gone or expired
    /// without an answer. Each gets the ending `ending_for` gives for what it was waiting on. With `only`, just that
    /// flow is looked at. Runs on the writer, so of several instances sweeping at once each flow is ended by exactly
    /// one.
    pub async fn end_abandoned_flows(
        &self,
        now: OffsetDateTime,
        claimed_before: OffsetDateTime,
        only: Option<String>,
        ending_for: impl Fn(FlowStatus) -> FlowEnding + Send + 'static,
    ) -> Result<Vec<Abandoned>, StoreError> {
        self.write(move |db| {
            let tx = begin(db)?;
            // Two halves, so each is answered from its partial index rather than by scanning every flow.
            let sql = concat!(
                "SELECT ",
                flow_columns!(),
                " FROM flows WHERE status = 'exchanging' AND COALESCE(claimed_at, created_at) < ?1 AND (?3 IS NULL OR id = ?3)
                 UNION ALL SELECT ",
                flow_columns!(),
                " FROM flows f WHERE status = 'verifying' AND (?3 IS NULL OR id = ?3)
                   AND NOT EXISTS (SELECT 1 FROM pending_verifications p
                                   WHERE p.flow_id = f.id AND p.expires_at > ?2)
                 LIMIT 500"
            );
            let flows: Vec<FlowRecord> = {
                let mut statement = tx.prepare_cached(sql)?;
                let mut rows = statement.query(params![millis(claimed_before), millis(now), only])?;
                let mut flows = Vec::new();
                while let Some(row) = rows.next()? {
                    flows.push(flow_from_row(row)?);
                }
                flows
            };
            let mut ended = Vec::with_capacity(flows.len());
            for flow in flows {
                let was = flow.status;
                let ending = ending_for(was);
                tx.prepare_cached("DELETE FROM pending_verifications WHERE flow_id = ?")?.execute([&flow.id])?;
                release_account(&tx, &flow.connection, &flow.identifier)?;
                if fail_in(&tx, &flow.id, &ending)? {
                    ended.push(Abandoned { flow, was, reference: ending.reference });
                }
            }
            tx.commit()?;
            Ok(ended)
        })
        .await
    }

    /// Records a failure under its reference and, where the account exists, makes it the account's last error.
    pub async fn record_outcome(&self, event: &OutcomeEvent) -> Result<(), StoreError> {
        let event = event.clone();
        self.write(move |db| {
            let tx = begin(db)?;
            insert_event(&tx, &event)?;
            if let (Some(connection), Some(identifier)) = (&event.connection, &event.identifier) {
                tx.prepare_cached(
                    "UPDATE connected_accounts SET last_error_code = ?1, last_error_reference = ?2,
                        last_error_at = ?3, updated_at = ?3
                     WHERE connection = ?4 AND identifier = ?5",
                )?
                .execute(params![
                    event.code,
                    event.reference,
                    millis(event.created_at.0),
                    connection,
                    identifier
                ])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Records events that concern no account, many in one transaction. Of the events caused by requests that
    /// matched no flow and no account, only the newest `keep_unauthenticated` are kept: whoever sends such
    /// requests, what they leave in the store is bounded.
    pub async fn record_outcomes(
        &self,
        events: Arc<[Arc<OutcomeEvent>]>,
        keep_unauthenticated: u64,
    ) -> Result<(), StoreError> {
        self.write(move |db| {
            let tx = begin(db)?;
            for event in events.iter() {
                insert_event(&tx, event)?;
            }
            if events.iter().any(|event| event.unauthenticated) {
                // Rowids grow with each insert and only the oldest are ever deleted, so the newest `keep` are
                // those within `keep` of the largest.
                let keep = i64::try_from(keep_unauthenticated).unwrap_or(i64::MAX);
                tx.prepare_cached(
                    "DELETE FROM unauthenticated_events WHERE rowid <= (SELECT max(rowid) FROM unauthenticated_events) - ?",
                )?
                .execute([keep])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn reference(&self, reference: &str) -> Result<Option<OutcomeEvent>, StoreError> {
        let reference = reference.to_owned();
        self.read(move |db| {
            let mut statement = db.prepare_cached(concat!(
                "SELECT ",
                event_columns!(),
                ", unauthenticated FROM outcome_events WHERE reference = ?1 UNION ALL SELECT ",
                event_columns!(),
                ", 1 FROM unauthenticated_events WHERE reference = ?1 LIMIT 1"
            ))?;
            let mut rows = statement.query([reference])?;
            rows.next()?.map(event_from_row).transpose()
        })
        .await
    }

    pub async fn account(&self, connection: &str, identifier: &str) -> Result<Option<ConnectedAccount>, StoreError> {
        let (connection, identifier) = (connection.to_owned(), identifier.to_owned());
        self.read(move |db| {
            let sql = concat!(
                "SELECT ",
                account_columns!(),
                " FROM connected_accounts WHERE connection = ? AND identifier = ?"
            );
            let mut statement = db.prepare_cached(sql)?;
            let mut rows = statement.query([connection, identifier])?;
            rows.next()?.map(account_from_row).transpose()
        })
        .await
    }

    /// The sealed tokens of an account and the id of the key that sealed them.
    pub async fn sealed_tokens(
        &self,
        connection: &str,
        identifier: &str,
    ) -> Result<Option<(Vec<u8>, String)>, StoreError> {
        let (connection, identifier) = (connection.to_owned(), identifier.to_owned());
        self.read(move |db| {
            let found = db
                .prepare_cached(
                    "SELECT sealed_tokens, key_id FROM connected_accounts WHERE connection = ? AND identifier = ?
                     AND sealed_tokens IS NOT NULL",
                )?
                .query_row([connection, identifier], |row| {
                    Ok((row.get(0)?, row.get::<_, Option<String>>(1)?.unwrap_or_default()))
                })
                .optional()?;
            Ok(found)
        })
        .await
    }

    /// Lists accounts ordered by (connection, identifier), after the given position.
    pub async fn list_accounts(&self, query: &AccountQuery) -> Result<Vec<ConnectedAccount>, StoreError> {
        let (after_connection, after_identifier) = query.after.clone().unwrap_or_default();
        let connection = query.connection.clone();
        let status = query.status.map(AccountStatus::as_str);
        let limit = i64::from(query.limit);
        self.read(move |db| {
            let sql = concat!(
                "SELECT ",
                account_columns!(),
                " FROM connected_accounts
                 WHERE (?1 IS NULL OR connection = ?1) AND (?2 IS NULL OR status = ?2)
                   AND (connection > ?3 OR (connection = ?3 AND identifier > ?4))
                 ORDER BY connection, identifier LIMIT ?5"
            );
            let mut statement = db.prepare_cached(sql)?;
            let mut rows = statement.query(params![connection, status, after_connection, after_identifier, limit])?;
            let mut accounts = Vec::new();
            while let Some(row) = rows.next()? {
                accounts.push(account_from_row(row)?);
            }
            Ok(accounts)
        })
        .await
    }

    /// Deletes expired links, old flows and old references, so the store stays bounded.
    pub async fn sweep(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.write(move |db| {
            let tx = begin(db)?;
            let links = tx.execute("DELETE FROM authorization_links WHERE expires_at < ?", [millis(now)])?;
            let flows = tx.execute("DELETE FROM flows WHERE created_at < ?", [millis(now - FLOW_RETENTION)])?;
            let held = tx.execute("DELETE FROM pending_verifications WHERE expires_at < ?", [millis(now)])?;
            if held > 0 {
                tx.execute(
                    "UPDATE connected_accounts SET status = 'PENDING_AUTH' WHERE status = 'PENDING_VERIFICATION'
                     AND NOT EXISTS (SELECT 1 FROM pending_verifications p
                                     WHERE p.connection = connected_accounts.connection
                                       AND p.identifier = connected_accounts.identifier)",
                    [],
                )?;
            }
            let before = millis(now - REFERENCE_RETENTION);
            let references = tx.execute("DELETE FROM outcome_events WHERE created_at < ?", [before])?
                // The oldest lie first: a window at the front is enough to look at, and a sweep a minute clears
                // far more than are written.
                + tx.execute(
                    "DELETE FROM unauthenticated_events WHERE created_at < ?1
                     AND rowid <= (SELECT min(rowid) FROM unauthenticated_events) + ?2",
                    params![before, UNAUTHENTICATED_SWEEP_WINDOW],
                )?;
            let deliveries = tx.execute(
                "DELETE FROM webhook_outbox WHERE (status = 'delivered' AND created_at < ?1)
                                               OR (status = 'failed' AND created_at < ?2)",
                [millis(now - DELIVERED_RETENTION), millis(now - FAILED_RETENTION)],
            )?;
            tx.commit()?;
            Ok((links + flows + held + references + deliveries) as u64)
        })
        .await
    }

    /// Counts rows per table, for tests and metrics.
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
        self.read(move |db| Ok(db.query_row(sql, [], |row| row.get(0))?)).await
    }

    pub async fn enable_webhooks(&self, enabled: bool) -> Result<(), StoreError> {
        self.write(move |db| {
            db.execute("UPDATE webhook_settings SET enabled = ? WHERE id = 1", [enabled])?;
            Ok(())
        })
        .await
    }

    pub async fn claim_deliveries(
        &self,
        lease: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let lease = lease.to_owned();
        self.write(move |db| {
            let sql = concat!(
                "UPDATE webhook_outbox SET lease = ?1, lease_until = ?2
                 WHERE id IN (SELECT id FROM webhook_outbox
                              WHERE status = 'pending' AND next_attempt_at <= ?3
                                AND (lease_until IS NULL OR lease_until <= ?3)
                              ORDER BY next_attempt_at LIMIT ?4)
                 RETURNING ",
                delivery_columns!()
            );
            let mut statement = db.prepare_cached(sql)?;
            let mut rows = statement.query(params![lease, millis(until), millis(now), i64::from(limit)])?;
            let mut claimed = Vec::new();
            while let Some(row) = rows.next()? {
                claimed.push(delivery_from_row(row)?);
            }
            Ok(claimed)
        })
        .await
    }

    pub async fn end_delivery(
        &self,
        id: &str,
        lease: &str,
        end: DeliveryEnd,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (id, lease) = (id.to_owned(), lease.to_owned());
        self.write(move |db| {
            let (status, last_status, last_error, next_at, delivered_at) = super::delivery_end_values(&end, now);
            let changed = db
                .prepare_cached(
                    "UPDATE webhook_outbox SET status = ?1, attempts = attempts + 1, last_status = ?2,
                        last_error = ?3, next_attempt_at = COALESCE(?4, next_attempt_at), delivered_at = ?5,
                        lease = NULL, lease_until = NULL
                     WHERE id = ?6 AND lease = ?7",
                )?
                .execute(params![status, last_status, last_error, next_at, delivered_at, id, lease])?;
            Ok(changed == 1)
        })
        .await
    }

    pub async fn list_deliveries(&self, query: &DeliveryQuery) -> Result<Vec<DeliveryRecord>, StoreError> {
        let status = query.status.map(DeliveryStatus::as_str);
        let (before_at, before_id) = query.before.clone().unwrap_or((i64::MAX, String::new()));
        let limit = i64::from(query.limit);
        self.read(move |db| {
            let sql = concat!(
                "SELECT ",
                delivery_columns!(),
                " FROM webhook_outbox
                 WHERE (?1 IS NULL OR status = ?1) AND (created_at < ?2 OR (created_at = ?2 AND id < ?3))
                 ORDER BY created_at DESC, id DESC LIMIT ?4"
            );
            let mut statement = db.prepare_cached(sql)?;
            let mut rows = statement.query(params![status, before_at, before_id, limit])?;
            let mut found = Vec::new();
            while let Some(row) = rows.next()? {
                found.push(delivery_from_row(row)?);
            }
            Ok(found)
        })
        .await
    }

    pub async fn retry_delivery(&self, id: &str, now: OffsetDateTime) -> Result<Option<DeliveryRecord>, StoreError> {
        let id = id.to_owned();
        self.write(move |db| {
            let sql = concat!(
                "UPDATE webhook_outbox SET status = 'pending', next_attempt_at = ?1, lease = NULL, lease_until = NULL
                 WHERE id = ?2 RETURNING ",
                delivery_columns!()
            );
            let mut statement = db.prepare_cached(sql)?;
            let mut rows = statement.query(params![millis(now), id])?;
            rows.next()?.map(delivery_from_row).transpose()
        })
        .await
    }

    pub async fn pending_deliveries(&self) -> Result<i64, StoreError> {
        self.read(|db| {
            Ok(db.query_row("SELECT COUNT(*) FROM webhook_outbox WHERE status = 'pending'", [], |r| r.get(0))?)
        })
        .await
    }
}

fn delivery_from_row(row: &Row<'_>) -> Result<DeliveryRecord, StoreError> {
    let status: String = row.get("status")?;
    let status = DeliveryStatus::parse(&status)?;
    Ok(DeliveryRecord {
        id: row.get("id")?,
        event_type: row.get("event_type")?,
        payload: row.get("payload")?,
        status,
        attempts: row.get("attempts")?,
        created_at: from_millis(row.get("created_at")?)?,
        next_attempt_at: match status {
            DeliveryStatus::Pending => Some(from_millis(row.get("next_attempt_at")?)?),
            _ => None,
        },
        last_status: row.get("last_status")?,
        last_error: row.get("last_error")?,
        delivered_at: row.get::<_, Option<i64>>("delivered_at")?.map(from_millis).transpose()?,
    })
}

/// Inserts one outcome event, into `unauthenticated_events` when it concerns no flow and no account (that table has
/// no reference index to check: see migration 0010); in `outcome_events`, a reference already stored is left as it
/// is.
fn insert_event(db: &rusqlite::Connection, event: &OutcomeEvent) -> Result<(), StoreError> {
    let sql = if event.unauthenticated {
        concat!(
            "INSERT INTO unauthenticated_events (",
            event_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
    } else {
        concat!(
            "INSERT INTO outcome_events (",
            event_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (reference) DO NOTHING"
        )
    };
    db.prepare_cached(sql)?.execute(params![
        event.reference,
        event.code,
        event.cause,
        event.class,
        event.connection,
        event.identifier,
        event.flow_id,
        event.error,
        event.error_description,
        event.error_uri,
        event.iss,
        event.provider_status,
        event.provider_body,
        event.detail,
        event.hint,
        millis(event.created_at.0),
    ])?;
    Ok(())
}

/// The link with this id.
fn link_in(db: &rusqlite::Connection, id: &str) -> Result<Option<LinkRecord>, StoreError> {
    let mut statement = db.prepare_cached(
        "SELECT id, connection, identifier, return_to, created_at, expires_at, consumed_at
         FROM authorization_links WHERE id = ?",
    )?;
    let mut rows = statement.query([id])?;
    rows.next()?
        .map(|row| {
            Ok(LinkRecord {
                id: row.get("id")?,
                connection: row.get("connection")?,
                identifier: row.get("identifier")?,
                return_to: row.get("return_to")?,
                created_at: from_millis(row.get("created_at")?)?,
                expires_at: from_millis(row.get("expires_at")?)?,
                consumed_at: row.get::<_, Option<i64>>("consumed_at")?.map(from_millis).transpose()?,
            })
        })
        .transpose()
}

/// Inserts a new flow; a flood of starts for one identifier keeps only its newest `keep` flows waiting for a
/// callback.
fn insert_flow(tx: &rusqlite::Connection, flow: &FlowRecord, keep: u32) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO flows (id, state_hash, link_id, connection, identifier, browser_hash, sealed_secrets,
                            return_to, status, created_at, expires_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        flow.id,
        flow.state_hash,
        flow.link_id,
        flow.connection,
        flow.identifier,
        flow.browser_hash,
        flow.sealed_secrets,
        flow.return_to,
        flow.status.as_str(),
        millis(flow.created_at),
        millis(flow.expires_at)
    ])?;
    // A flood of starts for one identifier keeps only its newest flows waiting for a callback.
    tx.prepare_cached(TRIM_STARTED_FLOWS)?.execute(params![flow.connection, flow.identifier, i64::from(keep)])?;
    Ok(())
}

/// Makes a flow succeeded, gives its account the tokens and consumes its link; false (and nothing written) when
/// the flow was no longer exchanging or verifying. The caller commits.
fn complete_in(
    tx: &rusqlite::Connection,
    flow_id: &str,
    tokens: &TokenWrite,
    scopes: &str,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let changed = tx
        .prepare_cached(
            "UPDATE flows SET status = 'succeeded', finished_at = ? WHERE id = ? AND status IN ('exchanging', 'verifying')",
        )?
        .execute(params![millis(now), flow_id])?;
    if changed == 0 {
        return Ok(false);
    }
    tx.prepare_cached(
        "INSERT INTO connected_accounts (connection, identifier, status, scopes, sealed_tokens, key_id,
                                         token_expires_at, refresh_due_at, token_version, created_at, updated_at,
                                         metadata)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?9, ?10)
         ON CONFLICT (connection, identifier) DO UPDATE SET
            status = excluded.status, scopes = excluded.scopes, sealed_tokens = excluded.sealed_tokens,
            key_id = excluded.key_id, token_expires_at = excluded.token_expires_at,
            refresh_due_at = excluded.refresh_due_at, token_version = connected_accounts.token_version + 1,
            refresh_lease = NULL, refresh_lease_until = NULL, refresh_failures = 0, missing_scopes = NULL,
            updated_at = excluded.updated_at, metadata = excluded.metadata",
    )?
    .execute(params![
        tokens.connection,
        tokens.identifier,
        tokens.status.as_str(),
        scopes,
        tokens.sealed_tokens,
        tokens.key_id,
        tokens.token_expires_at,
        tokens.refresh_due_at.map(millis),
        millis(now),
        tokens.metadata_json().map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))?
    ])?;
    // The link did its job: forwarded or reopened, it starts no further flow for this account.
    tx.prepare_cached(
        "UPDATE authorization_links SET consumed_at = ?1
         WHERE id = (SELECT link_id FROM flows WHERE id = ?2) AND consumed_at IS NULL",
    )?
    .execute(params![millis(now), flow_id])?;
    Ok(true)
}

/// Fails a flow that has not ended yet; returns whether it did.
fn fail_in(db: &rusqlite::Connection, flow_id: &str, ending: &FlowEnding) -> Result<bool, rusqlite::Error> {
    let changed = db
        .prepare_cached(
            "UPDATE flows SET status = 'failed', outcome_code = ?, outcome_cause = ?, reference = ?, finished_at = ?
             WHERE id = ? AND status NOT IN ('succeeded', 'failed')",
        )?
        .execute(params![ending.code, ending.cause, ending.reference, millis(ending.at), flow_id])?;
    Ok(changed == 1)
}

/// Discards held tokens and fails their flow.
fn discard_held(
    tx: &rusqlite::Connection,
    pending: &PendingVerification,
    ending: &FlowEnding,
) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM pending_verifications WHERE flow_id = ?")?.execute([&pending.flow_id])?;
    fail_in(tx, &pending.flow_id, ending)?;
    release_account(tx, &pending.tokens.connection, &pending.tokens.identifier)?;
    Ok(())
}

/// An account that was waiting for verification, and has no held tokens left, waits for a flow again.
fn release_account(db: &rusqlite::Connection, connection: &str, identifier: &str) -> Result<(), rusqlite::Error> {
    db.prepare_cached(
        "UPDATE connected_accounts SET status = 'PENDING_AUTH'
         WHERE connection = ? AND identifier = ? AND status = 'PENDING_VERIFICATION'
           AND NOT EXISTS (SELECT 1 FROM pending_verifications p
                           WHERE p.connection = connected_accounts.connection
                             AND p.identifier = connected_accounts.identifier)",
    )?
    .execute([connection, identifier])?;
    Ok(())
}

/// Reads held tokens selected with [`pending_columns`]; the inner result carries what does not parse.
fn pending_from_row(row: &Row<'_>) -> Result<Result<PendingVerification, StoreError>, rusqlite::Error> {
    let scopes: String = row.get("scopes")?;
    let expires_at: i64 = row.get("expires_at")?;
    let tokens = |scopes: Vec<String>| -> Result<TokenWrite, rusqlite::Error> {
        Ok(TokenWrite {
            connection: row.get("connection")?,
            identifier: row.get("identifier")?,
            status: AccountStatus::Active,
            scopes,
            sealed_tokens: row.get("sealed_tokens")?,
            key_id: row.get("key_id")?,
            token_expires_at: row.get("token_expires_at")?,
            refresh_due_at: row.get::<_, Option<i64>>("refresh_due_at")?.and_then(|ms| from_millis(ms).ok()),
            metadata: Default::default(),
        })
    };
    let scopes = match serde_json::from_str(&scopes) {
        Ok(scopes) => scopes,
        Err(err) => return Ok(Err(StoreError::Corrupt(err.to_string()))),
    };
    let mut tokens = tokens(scopes)?;
    tokens.metadata = match super::parse_metadata(row.get::<_, Option<String>>("metadata")?.as_deref()) {
        Ok(metadata) => metadata,
        Err(err) => return Ok(Err(err)),
    };
    let flow_id: String = row.get("flow_id")?;
    Ok(from_millis(expires_at).map(|expires_at| PendingVerification { flow_id, tokens, expires_at }))
}

fn account_from_row(row: &Row<'_>) -> Result<ConnectedAccount, StoreError> {
    let status: String = row.get("status")?;
    let scopes: String = row.get("scopes")?;
    let last_error = match (
        row.get::<_, Option<String>>("last_error_code")?,
        row.get::<_, Option<String>>("last_error_reference")?,
        row.get::<_, Option<i64>>("last_error_at")?,
    ) {
        (Some(code), Some(reference), Some(at)) => Some(LastError { code, reference, at: from_millis(at)? }),
        _ => None,
    };
    Ok(ConnectedAccount {
        connection: row.get("connection")?,
        identifier: row.get("identifier")?,
        status: status.parse().map_err(|()| StoreError::Corrupt(format!("unknown account status {status:?}")))?,
        scopes: serde_json::from_str(&scopes).map_err(|err| StoreError::Corrupt(err.to_string()))?,
        created_at: from_millis(row.get("created_at")?)?,
        updated_at: from_millis(row.get("updated_at")?)?,
        last_error,
        missing_scopes: super::parse_scopes(row.get::<_, Option<String>>("missing_scopes")?.as_deref())?,
        metadata: super::parse_metadata(row.get::<_, Option<String>>("metadata")?.as_deref())?,
    })
}

fn token_state_from_row(row: &Row<'_>) -> Result<TokenState, StoreError> {
    let status: String = row.get("status")?;
    let sealed: Option<Vec<u8>> = row.get("sealed_tokens")?;
    let key_id: Option<String> = row.get("key_id")?;
    Ok(TokenState {
        status: status.parse().map_err(|()| StoreError::Corrupt(format!("unknown account status {status:?}")))?,
        version: row.get("token_version")?,
        sealed: sealed.map(|sealed| (sealed, key_id.unwrap_or_default())),
        scopes: super::parse_scopes(Some(&row.get::<_, String>("scopes")?))?,
        lease_until: row.get::<_, Option<i64>>("refresh_lease_until")?.map(from_millis).transpose()?,
        refresh_failures: row.get("refresh_failures")?,
        metadata: super::parse_metadata(row.get::<_, Option<String>>("metadata")?.as_deref())?,
    })
}

fn flow_from_row(row: &Row<'_>) -> Result<FlowRecord, StoreError> {
    Ok(FlowRecord {
        id: row.get("id")?,
        state_hash: row.get("state_hash")?,
        link_id: row.get("link_id")?,
        connection: row.get("connection")?,
        identifier: row.get("identifier")?,
        browser_hash: row.get("browser_hash")?,
        sealed_secrets: row.get("sealed_secrets")?,
        return_to: row.get("return_to")?,
        status: FlowStatus::parse(&row.get::<_, String>("status")?)?,
        outcome_code: row.get("outcome_code")?,
        outcome_cause: row.get("outcome_cause")?,
        reference: row.get("reference")?,
        created_at: from_millis(row.get("created_at")?)?,
        expires_at: from_millis(row.get("expires_at")?)?,
        claimed_at: row.get::<_, Option<i64>>("claimed_at")?.map(from_millis).transpose()?,
    })
}

fn event_from_row(row: &Row<'_>) -> Result<OutcomeEvent, StoreError> {
    Ok(OutcomeEvent {
        reference: row.get("reference")?,
        code: row.get("code")?,
        cause: row.get("cause")?,
        class: row.get("class")?,
        connection: row.get("connection")?,
        identifier: row.get("identifier")?,
        flow_id: row.get("flow_id")?,
        error: row.get("error")?,
        error_description: row.get("error_description")?,
        error_uri: row.get("error_uri")?,
        iss: row.get("iss")?,
        provider_status: row.get("provider_status")?,
        provider_body: row.get("provider_body")?,
        detail: row.get("detail")?,
        hint: row.get("hint")?,
        created_at: Millis(from_millis(row.get("created_at")?)?),
        unauthenticated: row.get("unauthenticated")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_name_a_file_or_say_why_not() {
        assert_eq!(database_path("sqlite://callback-gate.db").unwrap(), PathBuf::from("callback-gate.db"));
        assert_eq!(database_path("sqlite:///var/lib/gate.db?mode=rwc").unwrap(), PathBuf::from("/var/lib/gate.db"));
        assert_eq!(database_path("sqlite:gate.db").unwrap(), PathBuf::from("gate.db"));
        for (url, why) in [
            ("postgres://db/gate", "must start with sqlite:"),
            ("sqlite://", "names no database file"),
            ("sqlite::memory:", "cannot be :memory:"),
            ("sqlite://gate.db?cache=shared", "unsupported option \"cache=shared\""),
        ] {
            let err = database_path(url).unwrap_err().to_string();
            assert!(err.starts_with("database_url ") && err.contains(why), "{url}: {err}");
        }
    }

    #[tokio::test]
    async fn trims_read_only_the_entries_they_keep_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::connect(&format!("sqlite://{}", dir.path().join("gate.db").display())).await.unwrap();
        for (sql, index) in [(TRIM_LINKS, "authorization_links_newest"), (TRIM_STARTED_FLOWS, "flows_started_newest")] {
            let plan: Vec<String> = store
                .read(move |db| {
                    let mut statement = db.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                    let rows = statement.query_map(params!["c", "i", 5], |row| row.get::<_, String>(3))?;
                    Ok(rows.collect::<Result<_, _>>()?)
                })
                .await
                .unwrap();
            assert!(plan.iter().any(|step| step.contains(index)), "{sql}: {plan:?}");
            assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "no sort: {plan:?}");
        }
        store.close().await;
    }

    /// A database written before unauthenticated events had their own table keeps them: each still resolves, and
    /// the events of flows stay where they were.
    #[tokio::test]
    async fn unmatched_references_move_to_their_own_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate.db");
        {
            let mut db = rusqlite::Connection::open(&path).unwrap();
            migrations().to_version(&mut db, 8).unwrap();
            db.execute_batch(
                "INSERT INTO outcome_events (reference, code, class, detail, hint, created_at, unauthenticated)
                 VALUES ('CG-AAAA-AAAA', 'state_missing', 'security', 'no state', '', 1, 1),
                        ('CG-BBBB-BBBB', 'access_denied', 'user', 'denied', '', 2, 0);",
            )
            .unwrap();
        }
        let store = SqliteStore::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        let unmatched = store.reference("CG-AAAA-AAAA").await.unwrap().expect("moved, not lost");
        assert_eq!((unmatched.code.as_str(), unmatched.unauthenticated), ("state_missing", true));
        let of_a_flow = store.reference("CG-BBBB-BBBB").await.unwrap().expect("kept");
        assert_eq!((of_a_flow.code.as_str(), of_a_flow.unauthenticated), ("access_denied", false));
        let rows: (i64, i64) = store
            .read(|db| {
                Ok(db.query_row(
                    "SELECT (SELECT COUNT(*) FROM outcome_events), (SELECT COUNT(*) FROM unauthenticated_events)",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(rows, (1, 1));
        store.close().await;
    }

    #[tokio::test]
    async fn unmatched_references_resolve_without_an_index_and_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate.db");
        {
            let mut db = rusqlite::Connection::open(&path).unwrap();
            migrations().to_version(&mut db, 9).unwrap();
            db.execute_batch(
                "INSERT INTO unauthenticated_events (rowid, reference, code, class, detail, hint, created_at)
                 VALUES (7, 'CG-AAAA-AAAA', 'state_missing', 'security', 'no state', '', 1),
                        (9, 'CG-BBBB-BBBB', 'state_invalid', 'security', 'forged', '', 2);",
            )
            .unwrap();
        }
        let store = SqliteStore::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        let (indexes, rowids): (i64, String) = store
            .read(|db| {
                Ok(db.query_row(
                    "SELECT (SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'unauthenticated_events'),
                            (SELECT group_concat(rowid || '=' || reference, ' ') FROM unauthenticated_events)",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(indexes, 0, "no index to maintain on every batch");
        assert_eq!(rowids, "7=CG-AAAA-AAAA 9=CG-BBBB-BBBB", "rowids, which order the trim, are kept");
        let found = store.reference("CG-BBBB-BBBB").await.unwrap().expect("found by reading the table");
        assert_eq!((found.code.as_str(), found.unauthenticated), ("state_invalid", true));
        assert!(store.reference("CG-CCCC-CCCC").await.unwrap().is_none());
        // The trim still keeps the newest, by rowid.
        let event = |reference: &str| OutcomeEvent {
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
            created_at: Millis(OffsetDateTime::now_utc()),
            unauthenticated: true,
        };
        let batch: Arc<[Arc<OutcomeEvent>]> = vec![Arc::new(event("CG-DDDD-DDDD"))].into();
        store.record_outcomes(batch, 2).await.unwrap();
        assert!(store.reference("CG-AAAA-AAAA").await.unwrap().is_none(), "the oldest went");
        assert!(store.reference("CG-BBBB-BBBB").await.unwrap().is_some());
        assert!(store.reference("CG-DDDD-DDDD").await.unwrap().is_some());
        store.close().await;
    }

    #[tokio::test]
    async fn a_reopened_database_keeps_its_rows_and_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("gate.db").display());
        let store = SqliteStore::connect(&url).await.unwrap();
        let now = OffsetDateTime::now_utc();
        let link = LinkRecord {
            id: "l1".into(),
            connection: "c".into(),
            identifier: "u".into(),
            return_to: None,
            created_at: now,
            expires_at: now + Duration::from_secs(60),
            consumed_at: None,
        };
        store.create_link(&link, 5).await.unwrap();
        store.close().await;
        assert!(matches!(store.count(Table::Links).await, Err(StoreError::Closed)));

        let store = SqliteStore::connect(&url).await.unwrap();
        assert_eq!(store.find_link("l1").await.unwrap().map(|l| l.identifier), Some("u".into()));
        assert_eq!(store.count(Table::Accounts).await.unwrap(), 1);
        let version: i64 = store.read(|db| Ok(db.query_row("PRAGMA user_version", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(version, 10);
        store.close().await;
    }

    #[tokio::test]
    async fn checkpoints_copy_the_log_into_the_database_file_off_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("gate.db").display());
        let store = SqliteStore::connect(&url).await.unwrap();
        let now = OffsetDateTime::now_utc();
        for n in 0..50 {
            let link = LinkRecord {
                id: format!("l{n}"),
                connection: "c".into(),
                identifier: format!("u{n}"),
                return_to: None,
                created_at: now,
                expires_at: now + Duration::from_secs(60),
                consumed_at: None,
            };
            store.create_link(&link, 5).await.unwrap();
        }
        let autocheckpoint: i64 =
            store.write(|db| Ok(db.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(autocheckpoint, i64::from(WRITER_AUTOCHECKPOINT_PAGES));
        assert_eq!(store.checkpoint().await.unwrap().left, 0, "every page of the log was copied");
        // The database file alone, without its log, holds every link (copied while the store is open: closing
        // the last connection would checkpoint by itself).
        let copy = dir.path().join("copy.db");
        std::fs::copy(dir.path().join("gate.db"), &copy).unwrap();
        store.close().await;
        let count: i64 = rusqlite::Connection::open(&copy)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM authorization_links", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 50);
    }

    /// A store on a fresh database file in a folder of its own, kept as long as the folder.
    async fn scratch_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::connect(&format!("sqlite://{}", dir.path().join("gate.db").display())).await.unwrap();
        (dir, store)
    }

    /// Holds the writer's thread until the returned sender is dropped, so that the writes sent meanwhile wait
    /// together; returns once the writer is held.
    async fn hold_writer(store: &SqliteStore) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (holding, started) = oneshot::channel();
        let holder = store.clone();
        let task = tokio::spawn(async move {
            holder
                .write(move |_| {
                    let _ = holding.send(());
                    // Dropping the sender ends the wait as an error, which is the signal.
                    let _ = held.recv();
                    Ok(())
                })
                .await
                .unwrap();
        });
        started.await.unwrap();
        (release, task)
    }

    /// Spawns `write` while the writer is held, and returns once its operation waits in the queue behind the ones
    /// sent before it.
    async fn queued<T: Send + 'static>(
        store: &SqliteStore,
        write: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> tokio::task::JoinHandle<Result<T, StoreError>> {
        let waiting = QUEUE - store.inner.writer.jobs.capacity() + 1;
        let task = tokio::spawn(write);
        let queued = async {
            while QUEUE - store.inner.writer.jobs.capacity() < waiting {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), queued).await.expect("the write was queued");
        task
    }

    async fn queue_write<T, F>(store: &SqliteStore, operation: F) -> tokio::task::JoinHandle<Result<T, StoreError>>
    where
        F: FnOnce(&mut rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let writer = store.clone();
        queued(store, async move { writer.write(operation).await }).await
    }

    /// The store's own `create_link`, queued.
    async fn queue_link(store: &SqliteStore, id: &'static str) -> tokio::task::JoinHandle<Result<(), StoreError>> {
        let writer = store.clone();
        queued(store, async move { writer.create_link(&link_record(id), 5).await }).await
    }

    fn link_record(id: &str) -> LinkRecord {
        let now = OffsetDateTime::now_utc();
        LinkRecord {
            id: id.into(),
            connection: "c".into(),
            identifier: id.into(),
            return_to: None,
            created_at: now,
            expires_at: now + Duration::from_secs(60),
            consumed_at: None,
        }
    }

    fn insert_link_row(db: &rusqlite::Connection, id: &str) -> rusqlite::Result<usize> {
        db.execute(
            "INSERT INTO authorization_links (id, connection, identifier, created_at, expires_at) VALUES (?1, 'c', ?1, 0, 0)",
            [id],
        )
    }

    #[tokio::test]
    async fn a_flow_starts_from_its_link_as_stored_or_not_at_all() {
        let (_dir, store) = scratch_store().await;
        let built = |id: &'static str| -> BuildFlow {
            Box::new(move |link: &LinkRecord| {
                let now = OffsetDateTime::now_utc();
                Some(FlowRecord {
                    id: id.into(),
                    state_hash: format!("state-{id}"),
                    link_id: link.id.clone(),
                    connection: link.connection.clone(),
                    identifier: link.identifier.clone(),
                    browser_hash: "browser".into(),
                    sealed_secrets: vec![1],
                    return_to: None,
                    status: FlowStatus::Started,
                    outcome_code: None,
                    outcome_cause: None,
                    reference: None,
                    created_at: now,
                    expires_at: now + Duration::from_secs(60),
                    claimed_at: None,
                })
            })
        };
        let missing = store.start_flow("missing", 5, Box::new(|_| panic!("no link, nothing to build"))).await.unwrap();
        assert!(missing.link.is_none() && missing.flow.is_none());

        store.create_link(&link_record("link"), 5).await.unwrap();
        let refused = store.start_flow("link", 5, Box::new(|_| None)).await.unwrap();
        assert_eq!(refused.link.map(|l| l.id).as_deref(), Some("link"));
        assert!(refused.flow.is_none());
        let flows = || store.read(|db| Ok(db.query_row("SELECT COUNT(*) FROM flows", [], |r| r.get::<_, i64>(0))?));
        assert_eq!(flows().await.unwrap(), 0, "a refused start stores no flow");

        let started = store.start_flow("link", 5, built("flow-1")).await.unwrap();
        assert_eq!(started.flow.map(|f| f.identifier).as_deref(), Some("link"), "built from the stored link");
        let stored = store.find_flow("flow-1").await.unwrap().expect("stored");
        assert_eq!((stored.link_id.as_str(), stored.status), ("link", FlowStatus::Started));
        // A builder whose flow cannot be stored (its id is taken) starts nothing, and says so.
        assert!(store.start_flow("link", 5, built("flow-1")).await.is_err());
        assert_eq!(flows().await.unwrap(), 1);
        store.close().await;
    }

    #[tokio::test]
    async fn writes_waiting_together_commit_once_and_one_that_fails_leaves_nothing() {
        let (_dir, store) = scratch_store().await;
        let (release, holder) = hold_writer(&store).await;
        let first = queue_link(&store, "first").await;
        let failing = queue_write(&store, |db| {
            let tx = begin(db)?;
            insert_link_row(&tx, "failing")?;
            Err::<(), _>(StoreError::Corrupt("refused after writing".into()))
        })
        .await;
        let panicking = queue_write::<(), _>(&store, |db| {
            let tx = begin(db)?;
            insert_link_row(&tx, "panicking")?;
            panic!("an operation that panics after writing")
        })
        .await;
        let last = queue_write(&store, |db| {
            let in_group = !db.is_autocommit();
            let tx = begin(db)?;
            insert_link_row(&tx, "last")?;
            tx.commit()?;
            Ok(in_group)
        })
        .await;
        drop(release);
        holder.await.unwrap();

        first.await.unwrap().expect("the first write is committed");
        assert!(matches!(failing.await.unwrap(), Err(StoreError::Corrupt(_))), "the failing write's own error");
        assert!(matches!(panicking.await.unwrap(), Err(StoreError::Closed)), "a panic loses only its own answer");
        assert!(last.await.unwrap().unwrap(), "the last write ran inside the group's transaction");
        for (id, kept) in [("first", true), ("failing", false), ("panicking", false), ("last", true)] {
            assert_eq!(store.find_link(id).await.unwrap().is_some(), kept, "{id}");
        }
        // Alone, a write has its own transaction.
        let alone = store.write(|db| Ok(db.is_autocommit())).await.unwrap();
        assert!(alone);
        store.close().await;
    }

    #[tokio::test]
    async fn a_group_that_cannot_commit_tells_every_caller_and_keeps_none_of_it() {
        let (_dir, store) = scratch_store().await;
        store
            .write(|db| {
                db.execute_batch(
                    "CREATE TABLE parent (id TEXT PRIMARY KEY);
                     CREATE TABLE child (parent TEXT REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);",
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let (release, holder) = hold_writer(&store).await;
        let first = queue_link(&store, "first").await;
        // Its own savepoint releases, and the foreign key it breaks is checked only when the group commits.
        let breaking = queue_write(&store, |db| {
            let tx = begin(db)?;
            tx.execute("INSERT INTO child (parent) VALUES ('missing')", [])?;
            Ok(tx.commit()?)
        })
        .await;
        drop(release);
        holder.await.unwrap();
        assert!(matches!(first.await.unwrap(), Err(StoreError::Database(_))), "told that its write is not stored");
        assert!(matches!(breaking.await.unwrap(), Err(StoreError::Database(_))));
        assert!(store.find_link("first").await.unwrap().is_none(), "nothing of the group is kept");
        let children: i64 =
            store.read(|db| Ok(db.query_row("SELECT COUNT(*) FROM child", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(children, 0);
        // The writer goes on.
        store.create_link(&link_record("after"), 5).await.unwrap();
        assert!(store.find_link("after").await.unwrap().is_some());
        store.close().await;
    }

    #[tokio::test]
    async fn when_sqlite_rolls_a_group_back_its_callers_hear_so_and_the_rest_run_alone() {
        let (_dir, store) = scratch_store().await;
        let (release, holder) = hold_writer(&store).await;
        let first = queue_link(&store, "first").await;
        // What SQLite does by itself on an I/O error or a full disk.
        let rolling_back = queue_write(&store, |db| Ok(db.execute_batch("ROLLBACK")?)).await;
        let last = queue_link(&store, "last").await;
        drop(release);
        holder.await.unwrap();
        let first = first.await.unwrap().expect_err("its write was rolled back with the group");
        assert!(first.is_unavailable(), "through no fault of its own, so worth trying again: {first:?}");
        assert!(rolling_back.await.unwrap().is_err());
        last.await.unwrap().expect("the rest ran alone and committed");
        assert!(store.find_link("first").await.unwrap().is_none());
        assert!(store.find_link("last").await.unwrap().is_some());
        store.close().await;
    }

    #[tokio::test]
    async fn a_group_takes_at_most_its_cap_of_waiting_writes() {
        let (dir, store) = scratch_store().await;
        let path = dir.path().join("gate.db");
        let (release, holder) = hold_writer(&store).await;
        let mut writes = Vec::new();
        for i in 0..GROUP + 8 {
            let path = path.clone();
            // Each write stores a link, then counts the links another connection sees: those committed before
            // its group's transaction.
            writes.push(
                queue_write(&store, move |db| {
                    let tx = begin(db)?;
                    insert_link_row(&tx, &format!("link-{i}"))?;
                    tx.commit()?;
                    let outside = rusqlite::Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                    Ok(outside.query_row("SELECT COUNT(*) FROM authorization_links", [], |r| r.get::<_, i64>(0))?)
                })
                .await,
            );
        }
        drop(release);
        holder.await.unwrap();
        let mut seen = Vec::new();
        for write in writes {
            seen.push(write.await.unwrap().unwrap());
        }
        let cap = i64::try_from(GROUP).unwrap();
        let expected: Vec<i64> = std::iter::repeat_n(0, GROUP).chain(std::iter::repeat_n(cap, 8)).collect();
        assert_eq!(seen, expected, "the first {GROUP} commit together, the rest in the next group");
        store.close().await;
    }

    #[tokio::test]
    async fn a_close_found_among_waiting_writes_ends_the_group_and_the_writes_before_it_are_kept() {
        let (_dir, store) = scratch_store().await;
        let (release, holder) = hold_writer(&store).await;
        let before = [queue_link(&store, "before-1").await, queue_link(&store, "before-2").await];
        let closer = store.clone();
        let closing = queued(&store, async move {
            closer.inner.writer.close().await;
            Ok(())
        })
        .await;
        let after = queue_link(&store, "after").await;
        drop(release);
        holder.await.unwrap();
        for write in before {
            write.await.unwrap().expect("committed before the close");
        }
        closing.await.unwrap().unwrap();
        assert!(matches!(after.await.unwrap(), Err(StoreError::Closed)), "a write after the close is not run");
        // The readers are still open.
        assert!(store.find_link("before-1").await.unwrap().is_some());
        assert!(store.find_link("before-2").await.unwrap().is_some());
        assert!(store.find_link("after").await.unwrap().is_none());
        store.close().await;
    }

    #[tokio::test]
    async fn when_a_group_cannot_begin_each_write_runs_alone_and_is_answered() {
        let (dir, store) = scratch_store().await;
        store.write(|db| Ok(db.busy_timeout(Duration::from_millis(20))?)).await.unwrap();
        // Another process holds the write lock.
        let other = rusqlite::Connection::open(dir.path().join("gate.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (release, holder) = hold_writer(&store).await;
        let needs_the_lock = queue_link(&store, "locked-out").await;
        let reads_only = queue_write(&store, |db| Ok(db.is_autocommit())).await;
        drop(release);
        holder.await.unwrap();
        assert!(needs_the_lock.await.unwrap().is_err(), "its own transaction could not begin either");
        assert!(reads_only.await.unwrap().unwrap(), "it ran alone, outside any group's transaction");
        other.execute_batch("ROLLBACK").unwrap();
        store.create_link(&link_record("later"), 5).await.unwrap();
        assert!(store.find_link("locked-out").await.unwrap().is_none());
        assert!(store.find_link("later").await.unwrap().is_some());
        store.close().await;
    }

    #[tokio::test]
    async fn a_write_that_leaves_its_transaction_open_is_rolled_back_and_its_caller_told() {
        let (_dir, store) = scratch_store().await;
        let leaking = store
            .write(|db| {
                db.execute_batch("BEGIN")?;
                insert_link_row(db, "leaked")?;
                Ok(())
            })
            .await;
        assert!(leaking.is_err(), "told that nothing it wrote is kept");
        // The next writes have their own transactions again, and are kept.
        store.create_link(&link_record("after"), 5).await.unwrap();
        assert!(store.write(|db| Ok(db.is_autocommit())).await.unwrap());
        assert!(store.find_link("leaked").await.unwrap().is_none());
        assert!(store.find_link("after").await.unwrap().is_some());
        store.close().await;
    }
}

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
use serde::{Deserialize, Serialize};
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
                    // Closed before the answer, so that the thread counts as stopped once its closer hears back.
                    queue.close();
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

    /// Whether the connection's thread has stopped: closed, or after a transaction it could not roll back.
    fn stopped(&self) -> bool {
        self.jobs.is_closed()
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
        M::up(include_str!("../../migrations/sqlite/0011_unmatched_event_batches.sql")),
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

    /// Answers once every reader has, and if the writer's thread still runs: an instance whose writer has stopped
    /// (it does when a transaction it cannot roll back is left open) can store nothing, and must not say it is
    /// ready. The writer is not sent a query: readiness must neither wait behind queued writes nor fail with a
    /// group of them whose commit fails.
    pub async fn ping(&self) -> Result<(), StoreError> {
        if self.inner.writer.stopped() {
            return Err(StoreError::Closed);
        }
        let select_one = |db: &mut rusqlite::Connection| Ok(db.query_row("SELECT 1", [], |_| Ok(()))?);
        futures_util::future::try_join_all(self.inner.readers.iter().map(|reader| reader.run(select_one))).await?;
        Ok(())
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
            if event.unauthenticated {
                insert_unauthenticated(&tx, [&event])?;
            } else {
                insert_event(&tx, &event)?;
            }
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

    /// Records events that concern no account, many in one transaction. The events caused by requests that
    /// matched no flow and no account become one row of `unauthenticated_event_batches` (see migration 0011), and
    /// of those only the newest `keep_unauthenticated` are kept: whoever sends such requests, what they leave in
    /// the store is bounded.
    pub async fn record_outcomes(
        &self,
        events: Arc<[Arc<OutcomeEvent>]>,
        keep_unauthenticated: u64,
    ) -> Result<(), StoreError> {
        self.write(move |db| {
            let tx = begin(db)?;
            for event in events.iter().filter(|event| !event.unauthenticated) {
                insert_event(&tx, event)?;
            }
            let unauthenticated = events.iter().filter(|event| event.unauthenticated).map(|event| &**event);
            if let Some(batch) = insert_unauthenticated(&tx, unauthenticated)? {
                let keep = i64::try_from(keep_unauthenticated).unwrap_or(i64::MAX);
                keep_newest_unauthenticated(&tx, batch, keep)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The event behind a reference: from `outcome_events` through its index, else from the kept events of
    /// requests that matched no flow, which are read whole (they have no index: see migrations 0010 and 0011).
    pub async fn reference(&self, reference: &str) -> Result<Option<OutcomeEvent>, StoreError> {
        let reference = reference.to_owned();
        self.read(move |db| {
            let mut statement = db.prepare_cached(concat!(
                "SELECT ",
                event_columns!(),
                ", unauthenticated FROM outcome_events WHERE reference = ?1"
            ))?;
            let mut rows = statement.query([&reference])?;
            if let Some(row) = rows.next()? {
                return event_from_row(row).map(Some);
            }
            unauthenticated_event(db, &reference)
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
                + sweep_unauthenticated(&tx, before)?;
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
                "SELECT (SELECT COUNT(*) FROM outcome_events)
                      + (SELECT COALESCE(sum(last_seq - first_seq + 1 - skip), 0) FROM unauthenticated_event_batches)"
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

/// Inserts one outcome event of a flow or an account into `outcome_events`; a reference already stored is left as
/// it is. Events of requests that matched no flow go to [`insert_unauthenticated`] instead.
fn insert_event(db: &rusqlite::Connection, event: &OutcomeEvent) -> Result<(), StoreError> {
    let sql = concat!(
        "INSERT INTO outcome_events (",
        event_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (reference) DO NOTHING"
    );
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

/// One event of a request that matched no flow, as a line of `unauthenticated_event_batches.events`: written with
/// borrowed text (`S = &str`) and read back owned (`S = String`), so both go through the same fields. The keys are
/// the columns of `outcome_events`, `reference` first, so a lookup finds an event's line by the text it starts with
/// ([`line_start`]). Values absent are left out when written and read as `None` whether left out or `null` (the
/// lines migration 0011 built from the old rows have nulls).
#[derive(Serialize, Deserialize)]
struct EventLine<S> {
    reference: S,
    code: S,
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<S>,
    class: S,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identifier: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flow_id: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_description: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_uri: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider_status: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider_body: Option<S>,
    detail: S,
    hint: S,
    /// Unix milliseconds, as in the other tables.
    created_at: i64,
}

impl<'a> EventLine<&'a str> {
    /// The line to write for an event, borrowing its text.
    fn of(event: &'a OutcomeEvent) -> Self {
        Self {
            reference: &event.reference,
            code: &event.code,
            cause: event.cause.as_deref(),
            class: &event.class,
            connection: event.connection.as_deref(),
            identifier: event.identifier.as_deref(),
            flow_id: event.flow_id.as_deref(),
            error: event.error.as_deref(),
            error_description: event.error_description.as_deref(),
            error_uri: event.error_uri.as_deref(),
            iss: event.iss.as_deref(),
            provider_status: event.provider_status,
            provider_body: event.provider_body.as_deref(),
            detail: &event.detail,
            hint: &event.hint,
            created_at: millis(event.created_at.0),
        }
    }
}

impl EventLine<String> {
    /// Reads one line of a batch; a line that is not such an event is a [`StoreError::Corrupt`].
    fn read(line: &str) -> Result<OutcomeEvent, StoreError> {
        let line: Self = serde_json::from_str(line).map_err(|err| {
            StoreError::Corrupt(format!("an event of a request that matched no flow cannot be read: {err}"))
        })?;
        Ok(OutcomeEvent {
            reference: line.reference,
            code: line.code,
            cause: line.cause,
            class: line.class,
            connection: line.connection,
            identifier: line.identifier,
            flow_id: line.flow_id,
            error: line.error,
            error_description: line.error_description,
            error_uri: line.error_uri,
            iss: line.iss,
            provider_status: line.provider_status,
            provider_body: line.provider_body,
            detail: line.detail,
            hint: line.hint,
            created_at: Millis(from_millis(line.created_at)?),
            unauthenticated: true,
        })
    }
}

/// The row a batch of events of requests that matched no flow was stored as.
#[derive(Debug, Clone, Copy)]
struct StoredBatch {
    id: i64,
    /// The sequence number of its last event, the newest stored.
    last_seq: i64,
}

/// Stores events of requests that matched no flow as one row of `unauthenticated_event_batches` (migration 0011),
/// its sequence numbers following the newest batch's; `None` when there are none. Each event costs its
/// serialization, not a row of its own.
fn insert_unauthenticated<'e>(
    db: &rusqlite::Connection,
    events: impl IntoIterator<Item = &'e OutcomeEvent>,
) -> Result<Option<StoredBatch>, StoreError> {
    let events: Vec<&OutcomeEvent> = events.into_iter().collect();
    if events.is_empty() {
        return Ok(None);
    }
    // Room for a line of the usual size each, so a large batch is not copied again as it grows.
    let mut lines = Vec::with_capacity(events.len() * 256);
    let mut newest_at = i64::MIN;
    for (at, event) in events.iter().enumerate() {
        if at > 0 {
            lines.push(b'\n');
        }
        let line = EventLine::of(event);
        newest_at = newest_at.max(line.created_at);
        serde_json::to_writer(&mut lines, &line).map_err(|err| StoreError::Corrupt(err.to_string()))?;
    }
    let count = i64::try_from(events.len()).map_err(|err| StoreError::Corrupt(err.to_string()))?;
    let lines = std::str::from_utf8(&lines).map_err(|err| StoreError::Corrupt(err.to_string()))?;
    let batch = db
        .prepare_cached(
            "INSERT INTO unauthenticated_event_batches (first_seq, last_seq, newest_at, events)
             SELECT before + 1, before + ?1, ?2, ?3
             FROM (SELECT COALESCE((SELECT last_seq FROM unauthenticated_event_batches ORDER BY id DESC LIMIT 1), 0)
                   AS before)
             RETURNING id, last_seq",
        )?
        .query_row(params![count, newest_at, lines], |row| {
            Ok(StoredBatch { id: row.get(0)?, last_seq: row.get(1)? })
        })?;
    Ok(Some(batch))
}

/// Deletes the batches of events of requests that matched no flow whose sequence numbers all lie at or below `?1`.
/// Batches lie in the order of their sequence numbers, so this reads from the oldest up to the first batch kept
/// (or past `?2`, the newest batch's id plus one, when none is), not the ones kept after it.
const TRIM_UNAUTHENTICATED: &str = "DELETE FROM unauthenticated_event_batches
    WHERE id < COALESCE((SELECT id FROM unauthenticated_event_batches WHERE last_seq > ?1 ORDER BY id LIMIT 1), ?2)";

/// Marks the leading events of the oldest batch left, up to sequence number `?1`, as no longer kept.
const SKIP_UNAUTHENTICATED: &str = "UPDATE unauthenticated_event_batches SET skip = ?1 - first_seq + 1
    WHERE id = (SELECT min(id) FROM unauthenticated_event_batches) AND skip < ?1 - first_seq + 1";

/// Keeps exactly the newest `keep` events of requests that matched no flow, `batch` being the one just stored:
/// the batches wholly older go, and in the batch the bound falls inside, `skip` counts the lines no longer kept.
fn keep_newest_unauthenticated(db: &rusqlite::Connection, batch: StoredBatch, keep: i64) -> Result<(), StoreError> {
    let boundary = batch.last_seq.saturating_sub(keep);
    db.prepare_cached(TRIM_UNAUTHENTICATED)?.execute(params![boundary, batch.id.saturating_add(1)])?;
    db.prepare_cached(SKIP_UNAUTHENTICATED)?.execute([boundary])?;
    Ok(())
}

/// Deletes the batches, among the oldest `?2`, whose newest event is older than `?1`; returns how many events each
/// still kept.
const SWEEP_UNAUTHENTICATED: &str = "DELETE FROM unauthenticated_event_batches
    WHERE newest_at < ?1 AND id <= (SELECT min(id) FROM unauthenticated_event_batches) + ?2
    RETURNING last_seq - first_seq + 1 - skip";

/// Deletes the batches of events of requests that matched no flow whose newest event is older than `before`, and
/// returns how many kept events they held. The oldest lie first: a window of [`UNAUTHENTICATED_SWEEP_WINDOW`]
/// batches at the front is enough to look at, and a sweep a minute clears far more than are written.
fn sweep_unauthenticated(db: &rusqlite::Connection, before: i64) -> Result<usize, StoreError> {
    let mut statement = db.prepare_cached(SWEEP_UNAUTHENTICATED)?;
    let kept = statement.query_map(params![before, UNAUTHENTICATED_SWEEP_WINDOW], |row| row.get::<_, i64>(0))?;
    let mut swept: usize = 0;
    for events in kept {
        swept = swept.saturating_add(usize::try_from(events?).unwrap_or(0));
    }
    Ok(swept)
}

/// The text an event's line starts with: `{"reference":` and the reference as a JSON string, escaped as the lines
/// are written. A line holds it only at its start (within a line, a quote is always escaped) and only for exactly
/// this reference (the closing quote ends the string), so no reference, however shaped, finds another's line.
fn line_start(reference: &str) -> Result<String, StoreError> {
    let quoted = serde_json::to_string(reference).map_err(|err| StoreError::Corrupt(err.to_string()))?;
    Ok(format!("{{\"reference\":{quoted}"))
}

/// The kept event of a request that matched no flow with this reference, the newest if several are: the batches
/// whose text holds its line's start are read, newest first, and a line within a batch's `skip` is not kept.
fn unauthenticated_event(db: &rusqlite::Connection, reference: &str) -> Result<Option<OutcomeEvent>, StoreError> {
    // The sweep removes a batch once its newest event is past the retention; its older events must not resolve
    // meanwhile (a batch migration 0011 built from older rows can span days).
    let kept_since = OffsetDateTime::now_utc() - REFERENCE_RETENTION;
    let start = line_start(reference)?;
    let mut statement = db.prepare_cached(
        "SELECT skip, events FROM unauthenticated_event_batches WHERE instr(events, ?1) > 0 ORDER BY id DESC",
    )?;
    let mut rows = statement.query([&start])?;
    while let Some(row) = rows.next()? {
        let skip = usize::try_from(row.get::<_, i64>(0)?)
            .map_err(|_| StoreError::Corrupt("a batch of events skips fewer than none".into()))?;
        let events = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
        for (at, _) in events.rmatch_indices(&start) {
            let before = &events[..at];
            if before.bytes().filter(|&byte| byte == b'\n').count() < skip {
                continue;
            }
            let line_begins = before.rfind('\n').map_or(0, |newline| newline + 1);
            let line_ends = events[at..].find('\n').map_or(events.len(), |newline| at + newline);
            let event = EventLine::read(&events[line_begins..line_ends])?;
            if event.reference == reference && event.created_at.0 >= kept_since {
                return Ok(Some(event));
            }
        }
    }
    Ok(None)
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

    /// Unix milliseconds `offset` after a moment a day before the tests started: recent enough that events written
    /// then are still within the retention, and still resolve.
    fn recent(offset: i64) -> i64 {
        static BASE: std::sync::LazyLock<i64> =
            std::sync::LazyLock::new(|| millis(OffsetDateTime::now_utc()) - 86_400_000);
        *BASE + offset
    }

    /// An event of a request that matched no flow, written [`recent`]ly, `at` milliseconds after its base.
    fn unmatched(reference: &str, at: i64) -> OutcomeEvent {
        unmatched_at(reference, recent(at))
    }

    /// An event of a request that matched no flow, written at `at` unix milliseconds.
    fn unmatched_at(reference: &str, at: i64) -> OutcomeEvent {
        OutcomeEvent::unmatched_for_tests(reference, from_millis(at).unwrap())
    }

    fn shared(events: Vec<OutcomeEvent>) -> Arc<[Arc<OutcomeEvent>]> {
        events.into_iter().map(Arc::new).collect()
    }

    /// `(first_seq, last_seq, skip)` of each stored batch, oldest first.
    async fn batches(store: &SqliteStore) -> Vec<(i64, i64, i64)> {
        store
            .read(|db| {
                let mut statement =
                    db.prepare("SELECT first_seq, last_seq, skip FROM unauthenticated_event_batches ORDER BY id")?;
                let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
            .unwrap()
    }

    /// The references of each stored batch's lines, in order, skipped ones included.
    async fn batch_references(store: &SqliteStore) -> Vec<Vec<String>> {
        let texts: Vec<String> = store
            .read(|db| {
                let mut statement = db.prepare("SELECT events FROM unauthenticated_event_batches ORDER BY id")?;
                let rows = statement.query_map([], |row| row.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
            .unwrap();
        texts
            .iter()
            .map(|text| text.split('\n').map(|line| EventLine::read(line).unwrap().reference).collect())
            .collect()
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
            db.execute_batch(&format!(
                "INSERT INTO outcome_events (reference, code, class, detail, hint, created_at, unauthenticated)
                 VALUES ('CG-AAAA-AAAA', 'state_missing', 'security', 'no state', '', {}, 1),
                        ('CG-BBBB-BBBB', 'access_denied', 'user', 'denied', '', {}, 0);",
                recent(1),
                recent(2)
            ))
            .unwrap();
        }
        let store = SqliteStore::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        let unmatched = store.reference("CG-AAAA-AAAA").await.unwrap().expect("moved, not lost");
        assert_eq!((unmatched.code.as_str(), unmatched.unauthenticated), ("state_missing", true));
        let of_a_flow = store.reference("CG-BBBB-BBBB").await.unwrap().expect("kept");
        assert_eq!((of_a_flow.code.as_str(), of_a_flow.unauthenticated), ("access_denied", false));
        let rows: i64 =
            store.read(|db| Ok(db.query_row("SELECT COUNT(*) FROM outcome_events", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(rows, 1, "only the flow's event is left in outcome_events");
        assert_eq!(batches(&store).await, [(1, 1, 0)], "the unmatched one is the first event of a batch");
        assert_eq!(store.count(Table::OutcomeEvents).await.unwrap(), 2);
        store.close().await;
    }

    #[tokio::test]
    async fn unmatched_references_resolve_without_an_index_and_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate.db");
        {
            let mut db = rusqlite::Connection::open(&path).unwrap();
            migrations().to_version(&mut db, 9).unwrap();
            db.execute_batch(&format!(
                "INSERT INTO unauthenticated_events (rowid, reference, code, class, detail, hint, created_at)
                 VALUES (9, 'CG-AAAA-AAAA', 'state_missing', 'security', 'no state', '', {}),
                        (7, 'CG-BBBB-BBBB', 'state_invalid', 'security', 'forged', '', {});",
                recent(1),
                recent(2)
            ))
            .unwrap();
        }
        let store = SqliteStore::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        let (indexes, tables): (i64, String) = store
            .read(|db| {
                Ok(db.query_row(
                    "SELECT (SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index'
                               AND tbl_name = 'unauthenticated_event_batches'),
                            (SELECT group_concat(name, ' ') FROM sqlite_schema
                             WHERE type = 'table' AND name LIKE 'unauthenticated%')",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(indexes, 0, "no index to maintain on every batch");
        assert_eq!(tables, "unauthenticated_event_batches", "the table of one row per event is gone");
        assert_eq!(batches(&store).await, [(1, 2, 0)]);
        assert_eq!(batch_references(&store).await, [["CG-BBBB-BBBB", "CG-AAAA-AAAA"]], "in the order of their rowids");
        let found = store.reference("CG-AAAA-AAAA").await.unwrap().expect("found by reading the batches");
        assert_eq!((found.code.as_str(), found.unauthenticated), ("state_missing", true));
        assert!(store.reference("CG-CCCC-CCCC").await.unwrap().is_none());
        // The trim still keeps the newest, in the order they were written.
        let batch: Arc<[Arc<OutcomeEvent>]> = vec![Arc::new(unmatched("CG-DDDD-DDDD", 3))].into();
        store.record_outcomes(batch, 2).await.unwrap();
        assert!(store.reference("CG-BBBB-BBBB").await.unwrap().is_none(), "the oldest went");
        assert!(store.reference("CG-AAAA-AAAA").await.unwrap().is_some());
        assert!(store.reference("CG-DDDD-DDDD").await.unwrap().is_some());
        assert_eq!(batches(&store).await, [(1, 2, 1), (3, 3, 0)]);
        assert_eq!(store.count(Table::OutcomeEvents).await.unwrap(), 2);
        store.close().await;
    }

    /// Every field of an event, `unauthenticated` included.
    fn fields(event: &OutcomeEvent) -> String {
        format!("{event:?}")
    }

    #[tokio::test]
    async fn unmatched_events_are_one_row_per_batch_and_read_back_as_written() {
        let (_dir, store) = scratch_store().await;
        let awkward = "a \"quote\", a \\ backslash, a\nnewline, \r\t\u{0}\u{1}\u{1f}\u{7f}, \u{2028}, é, 日本, 🦀";
        let full = OutcomeEvent {
            reference: "CG-FULL-0001".into(),
            code: "state_invalid".into(),
            cause: Some("signature".into()),
            class: "security".into(),
            connection: Some(format!("conn {awkward}")),
            identifier: Some("user\n2".into()),
            flow_id: Some("flow".into()),
            error: Some(awkward.into()),
            // Text shaped like another event's line must not be found as one.
            error_description: Some(
                "{\"reference\":\"CG-FAKE-0001\",\"code\":\"x\"}\n{\"reference\":\"CG-FAKE-0002\"".into(),
            ),
            error_uri: Some("https://evil.example/\"".into()),
            iss: Some(String::new()),
            provider_status: Some(-1),
            provider_body: Some(awkward.repeat(3)),
            detail: awkward.into(),
            hint: "a hint with specifics".into(),
            created_at: Millis(from_millis(recent(123)).unwrap()),
            unauthenticated: true,
        };
        let bare = unmatched("CG-BARE-0002", 999);
        let zero_status = OutcomeEvent { provider_status: Some(0), ..unmatched("CG-ZERO-0003", -5) };
        let of_a_flow =
            OutcomeEvent { flow_id: Some("flow-1".into()), unauthenticated: false, ..unmatched("CG-FLOW-0004", 1_000) };
        let events = vec![full.clone(), of_a_flow.clone(), bare.clone(), zero_status.clone()];
        store.record_outcomes(shared(events), 100).await.unwrap();

        let in_outcome_events: Vec<String> = store
            .read(|db| {
                let mut statement = db.prepare("SELECT reference FROM outcome_events")?;
                let rows = statement.query_map([], |row| row.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
            .unwrap();
        assert_eq!(in_outcome_events, ["CG-FLOW-0004"], "the flow's event is a row of its own, as before");
        assert_eq!(batches(&store).await, [(1, 3, 0)], "the three others are one row");
        assert_eq!(batch_references(&store).await, [["CG-FULL-0001", "CG-BARE-0002", "CG-ZERO-0003"]]);
        let newest_at: i64 = store
            .read(|db| Ok(db.query_row("SELECT newest_at FROM unauthenticated_event_batches", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(newest_at, recent(999));
        assert_eq!(store.count(Table::OutcomeEvents).await.unwrap(), 4);
        for event in [&full, &bare, &zero_status, &of_a_flow] {
            let found = store.reference(&event.reference).await.unwrap().expect("resolves");
            assert_eq!(fields(&found), fields(event));
        }
        for fake in ["CG-FAKE-0001", "CG-FAKE-0002"] {
            assert!(store.reference(fake).await.unwrap().is_none(), "{fake} is only text inside a value");
        }
        // A later batch follows on, and an event stored alone (`record_outcome`) is a batch too.
        store.record_outcomes(shared(vec![unmatched("CG-NEXT-0005", 7)]), 100).await.unwrap();
        store.record_outcome(&unmatched("CG-LONE-0006", 8)).await.unwrap();
        assert_eq!(batches(&store).await, [(1, 3, 0), (4, 4, 0), (5, 5, 0)]);
        assert_eq!(
            fields(&store.reference("CG-LONE-0006").await.unwrap().unwrap()),
            fields(&unmatched("CG-LONE-0006", 8))
        );
        store.close().await;
    }

    #[tokio::test]
    async fn exactly_the_newest_unmatched_events_are_kept_even_inside_a_batch() {
        let (_dir, store) = scratch_store().await;
        let keep = 10;
        let reference = |n: usize| format!("CG-KEEP-{n:04}");
        let mut written = 0;
        // The batches kept after each write, as (first_seq, last_seq, skip): the bound falls inside an older batch,
        // on a batch's end, and inside the newest batch itself.
        let expected: [&[(i64, i64, i64)]; 6] = [
            &[(1, 3, 0)],
            &[(1, 3, 0), (4, 7, 0)],
            &[(1, 3, 2), (4, 7, 0), (8, 12, 0)],
            &[(4, 7, 0), (8, 12, 0), (13, 13, 0)],
            &[(8, 12, 3), (13, 13, 0), (14, 20, 0)],
            &[(21, 35, 5)],
        ];
        for (size, expected) in [3, 4, 5, 1, 7, 15].into_iter().zip(expected) {
            let mut events: Vec<OutcomeEvent> =
                (written..written + size).map(|n| unmatched(&reference(n), 1)).collect();
            // Events of flows in the same batch count for nothing here.
            events.insert(
                1.min(events.len()),
                OutcomeEvent { unauthenticated: false, ..unmatched(&format!("CG-FLOW-{written:04}"), 1) },
            );
            written += size;
            store.record_outcomes(shared(events), keep).await.unwrap();
            assert_eq!(batches(&store).await, expected, "after {written} events");
            let kept = written.min(usize::try_from(keep).unwrap());
            let flows_written: i64 = store
                .read(|db| Ok(db.query_row("SELECT COUNT(*) FROM outcome_events", [], |r| r.get(0))?))
                .await
                .unwrap();
            assert_eq!(store.count(Table::OutcomeEvents).await.unwrap(), i64::try_from(kept).unwrap() + flows_written);
            for n in 0..written {
                let found = store.reference(&reference(n)).await.unwrap();
                assert_eq!(found.is_some(), n >= written - kept, "{} after {written} events", reference(n));
            }
        }
        store.close().await;
    }

    #[tokio::test]
    async fn a_reference_finds_only_its_own_line() {
        let (_dir, store) = scratch_store().await;
        let stored = ["CG-AAAA-AAAA1", "CG-AAAA", "CG-BBBB-BBBB", "CG-\"QUOTE\"", "CG-\\SLASH"];
        store.record_outcomes(shared(stored.iter().map(|r| unmatched(r, 1)).collect()), 100).await.unwrap();
        for reference in stored {
            let found = store.reference(reference).await.unwrap().expect("stored");
            assert_eq!(found.reference, reference);
        }
        for missing in [
            // Prefixes and extensions of stored ones.
            "CG-AAAA-AAAA",
            "CG-AAA",
            "CG-BBBB-BBBB2",
            "",
            // Attempts to end the quoted reference early or to match across fields.
            "CG-AAAA\"",
            "CG-AAAA\\",
            "CG-AAAA\",\"code\":\"state_missing",
            "CG-\"QUOTE",
            "CG-\\",
            "CG-\\\\SLASH",
            "\"",
            "\\",
        ] {
            assert!(store.reference(missing).await.unwrap().is_none(), "{missing:?}");
        }
        store.close().await;
    }

    #[tokio::test]
    async fn a_line_that_cannot_be_read_is_an_error_not_a_panic() {
        let (_dir, store) = scratch_store().await;
        store
            .write(|db| {
                db.execute_batch(
                    r#"INSERT INTO unauthenticated_event_batches (first_seq, last_seq, newest_at, events)
                       VALUES (1, 2, 1, '{"reference":"CG-CUTS-0001","code":' || char(10) || '{"reference":"CG-TIME-0002","code":"c","class":"c","detail":"d","hint":"","created_at":9223372036854775807}')"#,
                )?;
                Ok(())
            })
            .await
            .unwrap();
        for reference in ["CG-CUTS-0001", "CG-TIME-0002"] {
            assert!(matches!(store.reference(reference).await, Err(StoreError::Corrupt(_))), "{reference}");
        }
        store.close().await;
    }

    #[tokio::test]
    async fn a_version_10_database_moves_its_unmatched_events_into_batches_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate.db");
        let total: i64 = 5000;
        // Rowids in the order written, references in no order of their own.
        let reference = |n: i64| format!("CG-{:04}-{n:04}", (n * 7919) % 10_000);
        let awkward = "\"quoted\" \\ a\nnewline \u{1} é 日本";
        {
            let mut db = rusqlite::Connection::open(&path).unwrap();
            migrations().to_version(&mut db, 10).unwrap();
            let tx = db.transaction().unwrap();
            {
                let mut insert = tx
                    .prepare(concat!(
                        "INSERT INTO unauthenticated_events (rowid, ",
                        event_columns!(),
                        ")
                                      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    ))
                    .unwrap();
                for n in 0..total {
                    let full = n == 2048;
                    let text = |value: &str| full.then(|| value.to_owned());
                    insert
                        .execute(params![
                            3 * n + 5,
                            reference(n),
                            "state_invalid",
                            text("signature"),
                            "security",
                            text("conn"),
                            text("user"),
                            text("flow"),
                            text(awkward),
                            text("description"),
                            text("https://uri.example/"),
                            text("https://iss.example/"),
                            full.then_some(502),
                            text("body"),
                            format!("detail {n}"),
                            if full { "hint" } else { "" },
                            recent(1_000_000 + n),
                        ])
                        .unwrap();
                }
            }
            tx.commit().unwrap();
        }
        let store = SqliteStore::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        assert_eq!(batches(&store).await, [(1, 2048, 0), (2049, 4096, 0), (4097, 5000, 0)]);
        let in_order: Vec<String> = batch_references(&store).await.concat();
        assert_eq!(in_order, (0..total).map(reference).collect::<Vec<_>>(), "sequence numbers follow the rowids");
        let newest: Vec<i64> = store
            .read(|db| {
                let mut statement = db.prepare("SELECT newest_at FROM unauthenticated_event_batches ORDER BY id")?;
                let rows = statement.query_map([], |row| row.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
            .unwrap();
        assert_eq!(newest, [recent(1_002_047), recent(1_004_095), recent(1_004_999)]);
        assert_eq!(store.count(Table::OutcomeEvents).await.unwrap(), total);
        for n in [0, 2047, 2049, 4096, total - 1] {
            let found = store.reference(&reference(n)).await.unwrap().expect("moved, not lost");
            let expected = OutcomeEvent {
                code: "state_invalid".into(),
                detail: format!("detail {n}"),
                ..unmatched(&reference(n), 1_000_000 + n)
            };
            assert_eq!(fields(&found), fields(&expected));
        }
        let full = store.reference(&reference(2048)).await.unwrap().expect("moved, not lost");
        let expected = OutcomeEvent {
            reference: reference(2048),
            code: "state_invalid".into(),
            cause: Some("signature".into()),
            class: "security".into(),
            connection: Some("conn".into()),
            identifier: Some("user".into()),
            flow_id: Some("flow".into()),
            error: Some(awkward.into()),
            error_description: Some("description".into()),
            error_uri: Some("https://uri.example/".into()),
            iss: Some("https://iss.example/".into()),
            provider_status: Some(502),
            provider_body: Some("body".into()),
            detail: "detail 2048".into(),
            hint: "hint".into(),
            created_at: Millis(from_millis(recent(1_002_048)).unwrap()),
            unauthenticated: true,
        };
        assert_eq!(fields(&full), fields(&expected), "lines built by SQLite read as those written by the store");
        // New events follow on, and the cap still drops the oldest first.
        store.record_outcomes(shared(vec![unmatched("CG-NEWS-0001", 2_000_000)]), 5000).await.unwrap();
        assert_eq!(batches(&store).await, [(1, 2048, 1), (2049, 4096, 0), (4097, 5000, 0), (5001, 5001, 0)]);
        assert!(store.reference(&reference(0)).await.unwrap().is_none());
        assert!(store.reference(&reference(1)).await.unwrap().is_some());
        assert_eq!(store.count(Table::OutcomeEvents).await.unwrap(), total);
        store.close().await;
    }

    #[tokio::test]
    async fn the_sweep_removes_unmatched_batches_past_retention_and_keeps_recent_ones() {
        let (_dir, store) = scratch_store().await;
        let now = OffsetDateTime::now_utc();
        let old = millis(now - REFERENCE_RETENTION) - 1;
        let recent = millis(now - REFERENCE_RETENTION) + 60_000;
        let events = |prefix: &str, at: i64, count: usize| -> Vec<OutcomeEvent> {
            (0..count).map(|n| unmatched_at(&format!("CG-{prefix}-{n:04}"), at)).collect()
        };
        store.record_outcomes(shared(events("OLDS", old, 3)), 7).await.unwrap();
        // Its newest event is recent: the batch stays, its old events with it.
        let mut mixed = events("MIXD", old, 2);
        mixed.extend(events("MIXR", recent, 1));
        store.record_outcomes(shared(mixed), 7).await.unwrap();
        store.record_outcomes(shared(events("NEWS", recent, 3)), 7).await.unwrap();
        assert_eq!(batches(&store).await, [(1, 3, 2), (4, 6, 0), (7, 9, 0)]);

        assert_eq!(store.sweep(now).await.unwrap(), 1, "the one event still kept of the old batch");
        assert_eq!(batches(&store).await, [(4, 6, 0), (7, 9, 0)]);
        assert_eq!(store.count(Table::OutcomeEvents).await.unwrap(), 6);
        assert!(store.reference("CG-OLDS-0002").await.unwrap().is_none());
        // An old event in a batch kept for a recent one stays stored with it, but no longer resolves.
        assert!(store.reference("CG-MIXD-0000").await.unwrap().is_none());
        for reference in ["CG-MIXR-0000", "CG-NEWS-0002"] {
            assert!(store.reference(reference).await.unwrap().is_some(), "{reference}");
        }
        assert_eq!(store.sweep(now).await.unwrap(), 0, "nothing more is past retention");
        assert_eq!(store.sweep(now + Duration::from_secs(120)).await.unwrap(), 6);
        assert_eq!(batches(&store).await, []);
        assert_eq!(store.count(Table::OutcomeEvents).await.unwrap(), 0);
        // Sequence numbers start again in an empty table, and the cap still holds.
        store.record_outcomes(shared(events("AGIN", recent, 9)), 7).await.unwrap();
        assert_eq!(batches(&store).await, [(1, 9, 2)]);
        store.close().await;
    }

    /// The trim, the skip and the sweep of unmatched events reach batches through their id (the table's key) and
    /// sort nothing.
    #[tokio::test]
    async fn unmatched_trims_and_sweeps_use_the_batch_id_and_sort_nothing() {
        let (_dir, store) = scratch_store().await;
        for sql in [TRIM_UNAUTHENTICATED, SKIP_UNAUTHENTICATED, SWEEP_UNAUTHENTICATED] {
            let plan: Vec<String> = store
                .read(move |db| {
                    let mut statement = db.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                    let bound = rusqlite::params_from_iter([5, 6].into_iter().take(statement.parameter_count()));
                    let rows = statement.query_map(bound, |row| row.get::<_, String>(3))?;
                    Ok(rows.collect::<Result<_, _>>()?)
                })
                .await
                .unwrap();
            assert!(plan.iter().any(|step| step.contains("USING INTEGER PRIMARY KEY")), "{sql}: {plan:?}");
            assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "no sort: {plan:?}");
        }
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
        assert_eq!(version, 11);
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
    async fn readiness_needs_the_writer_and_every_reader() {
        let (_dir, store) = scratch_store().await;
        store.ping().await.expect("ready");
        // A busy writer is still a ready one: readiness does not wait behind its writes.
        let (release, holder) = hold_writer(&store).await;
        tokio::time::timeout(Duration::from_secs(2), store.ping())
            .await
            .expect("answered while the writer is busy")
            .expect("ready while the writer is busy");
        drop(release);
        holder.await.unwrap();
        store.inner.writer.close().await;
        assert!(matches!(store.ping().await, Err(StoreError::Closed)), "no writer, not ready");
        assert!(store.find_link("any").await.unwrap().is_none(), "the readers still answer");
        store.close().await;

        let (_dir, store) = scratch_store().await;
        store.inner.readers[READERS - 1].close().await;
        assert!(matches!(store.ping().await, Err(StoreError::Closed)), "a reader gone, not ready");
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

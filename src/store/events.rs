//! Outcome events that concern no flow (a callback with a missing or forged state, a forged link) are written in
//! the background, in batches, so anyone able to send a request cannot make each one wait on the database's write
//! lock. Until written, an event is answered from memory, so its reference resolves at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::{OutcomeEvent, Store};

/// Events waiting to be written, at most; beyond this they are dropped (they are logged all the same).
const QUEUE: usize = 8192;
/// Events written in one transaction, at most. On SQLite the events of a batch that concern no flow are one row
/// (migration 0011) and the others (of flows whose own write failed) a row each; on PostgreSQL a batch is one
/// transaction of inserts. Larger batches write fewer pages per event (256 to 2,048 measured 28,500 to 32,400
/// failure pages per second in `bench/`, when each event was a row).
const BATCH: usize = 2048;
/// How long a batch is retried while the database is unreachable before its events are given up (and logged).
const RETRY_FOR: Duration = Duration::from_secs(120);
/// How long a first event waits for others to join its batch.
const LINGER: Duration = Duration::from_millis(100);

/// What the requests and the writer share. Requests only append to a list and wake the writer when the list was
/// empty or has a batch's worth: a channel, a map by reference and a wake-up per event cost a few percent of each
/// failure page under a flood of them (docs/performance.md, Finding 20). A lookup by reference (the references API,
/// and the result page of a flow whose event waits here) reads the lists through, holding the lock that senders
/// take: at most [`QUEUE`] and a batch are compared, tens of microseconds, and only lookups pay them.
#[derive(Debug, Default)]
struct Queue {
    /// Events not taken by the writer yet, in the order they were sent.
    waiting: Vec<Arc<OutcomeEvent>>,
    /// Batches the writer has taken and not finished writing: still answered from here.
    writing: Vec<Arc<[Arc<OutcomeEvent>]>>,
    /// Set when the writer stops: later events are dropped.
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer: the first event of an empty list, or a batch's worth. (It stops on its `watch` channel.)
    wake: Notify,
    dropped: AtomicU64,
}

impl Shared {
    /// The queue, even if a thread panicked holding it: it holds no invariant a panic could break halfway.
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The sending side, shared by every request.
#[derive(Debug, Clone)]
pub struct EventWriter {
    shared: Arc<Shared>,
}

/// The receiving side, run by the server until shutdown.
pub struct EventSink {
    shared: Arc<Shared>,
    /// Events of requests that matched no flow and no account kept in the store, at most.
    keep_unauthenticated: u64,
}

/// The queue of events to write in the background; the store keeps at most `keep_unauthenticated` events of
/// requests that matched no flow and no account.
pub fn channel(keep_unauthenticated: u64) -> (EventWriter, EventSink) {
    let shared = Arc::new(Shared::default());
    (EventWriter { shared: shared.clone() }, EventSink { shared, keep_unauthenticated })
}

impl EventWriter {
    /// Queues an event; returns false when the queue is full (or the writer has stopped) and the event was dropped.
    pub fn send(&self, event: OutcomeEvent) -> bool {
        let mut queue = self.shared.queue();
        if queue.closed || queue.waiting.len() >= QUEUE {
            drop(queue);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        queue.waiting.push(Arc::new(event));
        let waiting = queue.waiting.len();
        drop(queue);
        if waiting == 1 || waiting == BATCH {
            self.shared.wake.notify_one();
        }
        true
    }

    /// An event not written yet.
    pub fn pending(&self, reference: &str) -> Option<OutcomeEvent> {
        let queue = self.shared.queue();
        let writing = queue.writing.iter().flat_map(|batch| batch.iter());
        let event = queue.waiting.iter().chain(writing).find(|event| event.reference == reference)?;
        Some(OutcomeEvent::clone(event))
    }

    /// Events queued but not written yet.
    pub fn backlog(&self) -> usize {
        let queue = self.shared.queue();
        queue.waiting.len() + queue.writing.iter().map(|batch| batch.len()).sum::<usize>()
    }

    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl EventSink {
    /// Writes batches until `stop` fires, then writes what is left.
    pub async fn run(self, store: Store, mut stop: watch::Receiver<bool>) {
        let shared = self.shared.clone();
        loop {
            // Until an event waits.
            while shared.queue().waiting.is_empty() {
                tokio::select! {
                    () = shared.wake.notified() => {}
                    _ = stop.changed() => return self.finish(&store, &stop).await,
                }
            }
            // Then until a batch's worth waits, or the first has lingered long enough.
            let deadline = tokio::time::sleep(LINGER);
            tokio::pin!(deadline);
            while shared.queue().waiting.len() < BATCH {
                tokio::select! {
                    () = shared.wake.notified() => {}
                    () = &mut deadline => break,
                    _ = stop.changed() => return self.finish(&store, &stop).await,
                }
            }
            self.write_next(&store, &stop).await;
        }
    }

    /// Stops taking events and writes those waiting.
    async fn finish(&self, store: &Store, stop: &watch::Receiver<bool>) {
        self.shared.queue().closed = true;
        while self.write_next(store, stop).await {}
    }

    /// Takes up to a batch of the waiting events and writes them; false when none were waiting.
    async fn write_next(&self, store: &Store, stop: &watch::Receiver<bool>) -> bool {
        let batch: Arc<[Arc<OutcomeEvent>]> = {
            let mut queue = self.shared.queue();
            let take = queue.waiting.len().min(BATCH);
            if take == 0 {
                return false;
            }
            let batch: Arc<[Arc<OutcomeEvent>]> = queue.waiting.drain(..take).collect();
            queue.writing.push(batch.clone());
            batch
        };
        self.write(store, &batch, stop).await;
        let mut queue = self.shared.queue();
        queue.writing.retain(|written| !Arc::ptr_eq(written, &batch));
        true
    }

    /// Writes a batch; while the database is unreachable, tries again (the batch stays answerable from memory),
    /// up to [`RETRY_FOR`] and not once the service is stopping, so a database restart loses no reference.
    async fn write(&self, store: &Store, batch: &Arc<[Arc<OutcomeEvent>]>, stop: &watch::Receiver<bool>) {
        let count = batch.len();
        let mut wait = Duration::from_millis(250);
        let mut waited = Duration::ZERO;
        loop {
            match store.record_outcomes(batch.clone(), self.keep_unauthenticated).await {
                Ok(()) => break,
                Err(err) if err.is_unavailable() && waited < RETRY_FOR && !*stop.borrow() => {
                    tracing::warn!(target: "callback_gate::store", error = %err, events = count, "outcome events wait for the database");
                    tokio::time::sleep(wait).await;
                    waited += wait;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(err) => {
                    tracing::error!(target: "callback_gate::store", error = %err, events = count, "could not store outcome events");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> OutcomeEvent {
        OutcomeEvent::unmatched_for_tests(&format!("CG-TEST-{n:04}"), time::OffsetDateTime::now_utc())
    }

    async fn store(dir: &tempfile::TempDir) -> Store {
        Store::connect(&format!("sqlite://{}", dir.path().join("events.db").display())).await.expect("store")
    }

    /// Until written an event is answered from memory, and after from the store: none is lost on the way, and the
    /// backlog empties.
    #[tokio::test]
    async fn queued_events_resolve_before_and_after_they_are_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(&dir).await;
        let (writer, sink) = channel(100_000);
        for n in 0..BATCH + 10 {
            assert!(writer.send(event(n)));
        }
        assert_eq!(writer.backlog(), BATCH + 10);
        assert_eq!(writer.pending("CG-TEST-0007").map(|e| e.reference).as_deref(), Some("CG-TEST-0007"));
        assert!(writer.pending("CG-TEST-9999").is_none());

        let (stop, stopped) = watch::channel(false);
        let running = tokio::spawn(sink.run(store.clone(), stopped));
        let mut waited = Duration::ZERO;
        while writer.backlog() > 0 && waited < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += Duration::from_millis(10);
        }
        assert_eq!(writer.backlog(), 0, "written within {waited:?}");
        assert!(writer.pending("CG-TEST-0007").is_none());
        for n in [0, 7, BATCH - 1, BATCH, BATCH + 9] {
            let reference = format!("CG-TEST-{n:04}");
            let stored = store.reference(&reference).await.expect("lookup");
            assert_eq!(stored.map(|e| e.reference), Some(reference));
        }
        stop.send(true).expect("stop");
        running.await.expect("sink");
        store.close().await;
    }

    /// A full queue drops what comes next and counts it; a stopping writer writes what waits and takes no more.
    #[tokio::test]
    async fn a_full_queue_drops_and_a_stopping_writer_writes_what_waits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(&dir).await;
        let (writer, sink) = channel(100_000);
        for n in 0..QUEUE + 5 {
            writer.send(event(n));
        }
        assert_eq!((writer.backlog(), writer.dropped()), (QUEUE, 5));

        let (stop, stopped) = watch::channel(false);
        stop.send(true).expect("stop");
        sink.run(store.clone(), stopped).await;
        assert_eq!(writer.backlog(), 0, "everything waiting was written on the way out");
        assert_eq!(store.count(crate::store::Table::OutcomeEvents).await.expect("count"), QUEUE as i64);
        assert!(!writer.send(event(QUEUE + 6)), "a stopped writer takes no more");
        assert_eq!(writer.dropped(), 6);
        store.close().await;
    }
}

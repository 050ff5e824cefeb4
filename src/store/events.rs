//! Outcome events that concern no flow (a callback with a missing or forged state, a forged link) are written in
//! the background, in batches, so anyone able to send a request cannot make each one wait on the database's write
//! lock. Until written, an event is answered from memory, so its reference resolves at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{OutcomeEvent, Store};

/// Events waiting to be written, at most; beyond this they are dropped (they are logged all the same).
const QUEUE: usize = 8192;
/// Events written in one transaction, at most. References are random, so a batch's inserts land all over the
/// reference index; larger batches share more of its pages and write fewer per event (256 to 2,048 measured
/// 28,500 to 32,400 failure pages per second in `bench/`).
const BATCH: usize = 2048;
/// How long a batch is retried while the database is unreachable before its events are given up (and logged).
const RETRY_FOR: Duration = Duration::from_secs(120);
/// How long a first event waits for others to join its batch.
const LINGER: Duration = Duration::from_millis(100);

/// The sending side, shared by every request.
#[derive(Debug, Clone)]
pub struct EventWriter {
    sender: mpsc::Sender<Arc<OutcomeEvent>>,
    /// The same events as the queue's (one allocation each), by reference.
    pending: Arc<Mutex<HashMap<String, Arc<OutcomeEvent>>>>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

/// The receiving side, run by the server until shutdown.
pub struct EventSink {
    receiver: mpsc::Receiver<Arc<OutcomeEvent>>,
    pending: Arc<Mutex<HashMap<String, Arc<OutcomeEvent>>>>,
    /// Events of requests that matched no flow and no account kept in the store, at most.
    keep_unauthenticated: u64,
}

/// The queue of events to write in the background; the store keeps at most `keep_unauthenticated` events of
/// requests that matched no flow and no account.
pub fn channel(keep_unauthenticated: u64) -> (EventWriter, EventSink) {
    let (sender, receiver) = mpsc::channel(QUEUE);
    let pending = Arc::new(Mutex::new(HashMap::new()));
    let writer = EventWriter { sender, pending: pending.clone(), dropped: Arc::default() };
    (writer, EventSink { receiver, pending, keep_unauthenticated })
}

impl EventWriter {
    /// Queues an event; returns false when the queue is full and the event was dropped.
    pub fn send(&self, event: OutcomeEvent) -> bool {
        let reference = event.reference.clone();
        let event = Arc::new(event);
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(reference.clone(), event.clone());
        }
        if self.sender.try_send(event).is_ok() {
            return true;
        }
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&reference);
        }
        self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        false
    }

    /// An event not written yet.
    pub fn pending(&self, reference: &str) -> Option<OutcomeEvent> {
        let event = self.pending.lock().ok().and_then(|pending| pending.get(reference).cloned())?;
        Some(OutcomeEvent::clone(&event))
    }

    /// Events queued but not written yet.
    pub fn backlog(&self) -> usize {
        self.pending.lock().map_or(0, |pending| pending.len())
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl EventSink {
    /// Writes batches until `stop` fires, then writes what is left.
    pub async fn run(mut self, store: Store, mut stop: watch::Receiver<bool>) {
        loop {
            let first = tokio::select! {
                event = self.receiver.recv() => event,
                _ = stop.changed() => None,
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            let deadline = tokio::time::sleep(LINGER);
            tokio::pin!(deadline);
            while batch.len() < BATCH {
                tokio::select! {
                    event = self.receiver.recv() => match event {
                        Some(event) => batch.push(event),
                        None => break,
                    },
                    () = &mut deadline => break,
                }
            }
            self.write(&store, batch, &stop).await;
        }
        self.receiver.close();
        let mut rest = Vec::new();
        while let Ok(event) = self.receiver.try_recv() {
            rest.push(event);
        }
        if !rest.is_empty() {
            self.write(&store, rest, &stop).await;
        }
    }

    /// Writes a batch; while the database is unreachable, tries again (the batch stays answerable from memory),
    /// up to [`RETRY_FOR`] and not once the service is stopping, so a database restart loses no reference.
    async fn write(&self, store: &Store, batch: Vec<Arc<OutcomeEvent>>, stop: &watch::Receiver<bool>) {
        let count = batch.len();
        let batch: Arc<[Arc<OutcomeEvent>]> = batch.into();
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
        if let Ok(mut pending) = self.pending.lock() {
            for event in batch.iter() {
                pending.remove(&event.reference);
            }
        }
    }
}

//! The flows this instance ended a moment ago, kept in memory so that the result page the browser is sent to next
//! needs no store read.
//!
//! A flow that has succeeded or failed never changes again (only the sweeper deletes it, a day later), so the
//! record the callback wrote is what the store would answer. An ending is handed out once, to the result page
//! that follows its callback, so only the endings whose browser has not come yet are kept: a handful, and at
//! most [`KEPT`] for at most a minute. A result page that is opened again, reaches another instance, comes after
//! a restart or comes late reads the store, as before.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::store::{FlowEnding, FlowRecord, FlowStatus};

/// Endings kept at most: a browser asks for its result page milliseconds after its callback, so even at several
/// thousand flows a second an ending is still here when it does. Under 2 MB when full, which only browsers that
/// never come to their result page can fill.
const KEPT: usize = 4096;
/// How long an ending is kept at most.
const KEEP_FOR: Duration = Duration::from_secs(60);

/// The flows this instance ended a moment ago, by id.
pub struct RecentEndings {
    kept: Mutex<Kept>,
    capacity: usize,
    keep_for: Duration,
}

#[derive(Default)]
struct Kept {
    by_id: HashMap<String, (Instant, Box<FlowRecord>)>,
    /// Ids in the order they were kept, oldest first, to forget them in that order.
    order: VecDeque<String>,
}

impl Default for RecentEndings {
    fn default() -> Self {
        Self::new(KEPT, KEEP_FOR)
    }
}

impl RecentEndings {
    fn new(capacity: usize, keep_for: Duration) -> Self {
        Self { kept: Mutex::default(), capacity, keep_for }
    }

    /// Keeps a flow that this instance has just ended as succeeded.
    pub fn succeeded(&self, flow: &FlowRecord) {
        self.keep(FlowRecord { status: FlowStatus::Succeeded, ..kept(flow) });
    }

    /// Keeps a flow that this instance has just ended as failed, with its ending.
    pub fn failed(&self, flow: &FlowRecord, ending: &FlowEnding) {
        self.keep(FlowRecord {
            status: FlowStatus::Failed,
            outcome_code: Some(ending.code.clone()),
            outcome_cause: ending.cause.clone(),
            reference: Some(ending.reference.clone()),
            ..kept(flow)
        });
    }

    /// The ended flow with this id, if this instance ended it a moment ago and has not handed it out yet.
    pub fn take(&self, flow_id: &str) -> Option<FlowRecord> {
        let (at, flow) = self.lock().by_id.remove(flow_id)?;
        (at.elapsed() < self.keep_for).then_some(*flow)
    }

    fn keep(&self, flow: FlowRecord) {
        let now = Instant::now();
        let mut kept = self.lock();
        let Kept { by_id, order } = &mut *kept;
        while let Some(oldest) = order.front() {
            let stale = by_id.get(oldest).is_none_or(|(at, _)| now.duration_since(*at) >= self.keep_for);
            if order.len() < self.capacity && !stale {
                break;
            }
            if let Some(id) = order.pop_front() {
                by_id.remove(&id);
            }
        }
        order.push_back(flow.id.clone());
        by_id.insert(flow.id.clone(), (now, Box::new(flow)));
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        // Nothing here panics while holding the lock; should it ever, what is kept is still whole.
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What is kept of a flow: everything the result page reads, and not its state's hash or sealed secrets.
fn kept(flow: &FlowRecord) -> FlowRecord {
    FlowRecord { state_hash: String::new(), sealed_secrets: Vec::new(), ..flow.clone() }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;

    fn flow(id: &str) -> FlowRecord {
        let now = OffsetDateTime::now_utc();
        FlowRecord {
            id: id.to_owned(),
            state_hash: "hash".into(),
            link_id: "link".into(),
            connection: "github".into(),
            identifier: "user-1".into(),
            browser_hash: "browser".into(),
            sealed_secrets: vec![1, 2, 3],
            return_to: None,
            status: FlowStatus::Exchanging,
            outcome_code: None,
            outcome_cause: None,
            reference: None,
            created_at: now,
            expires_at: now,
            claimed_at: Some(now),
        }
    }

    #[test]
    fn hands_an_ending_out_once_as_the_store_would_answer_it_without_its_secrets() {
        let endings = RecentEndings::default();
        endings.succeeded(&flow("a"));
        let ending = FlowEnding {
            code: "failed_to_exchange_token".into(),
            cause: Some("invalid_grant".into()),
            reference: "ref-1".into(),
            at: OffsetDateTime::now_utc(),
        };
        endings.failed(&flow("b"), &ending);

        let a = endings.take("a").expect("kept");
        assert_eq!(a.status, FlowStatus::Succeeded);
        assert_eq!((a.outcome_code, a.reference), (None, None));
        assert!(a.sealed_secrets.is_empty() && a.state_hash.is_empty());
        assert_eq!((a.browser_hash.as_str(), a.connection.as_str()), ("browser", "github"));
        assert!(endings.take("a").is_none(), "handed out once");
        let b = endings.take("b").expect("kept");
        assert_eq!(b.status, FlowStatus::Failed);
        assert_eq!(b.outcome_code.as_deref(), Some("failed_to_exchange_token"));
        assert_eq!(b.outcome_cause.as_deref(), Some("invalid_grant"));
        assert_eq!(b.reference.as_deref(), Some("ref-1"));
        assert!(endings.take("c").is_none());
    }

    #[test]
    fn forgets_the_oldest_beyond_its_capacity_and_what_it_handed_out() {
        let endings = RecentEndings::new(3, KEEP_FOR);
        for id in ["a", "b", "c", "d", "e"] {
            endings.succeeded(&flow(id));
        }
        assert_eq!(endings.lock().by_id.len(), 3);
        assert_eq!(endings.lock().order, ["c", "d", "e"]);
        assert!(endings.take("a").is_none() && endings.take("b").is_none());
        assert!(endings.take("c").is_some() && endings.take("d").is_some());
        // What was handed out leaves the order at the next keep, and what is left stays.
        endings.succeeded(&flow("f"));
        assert_eq!(endings.lock().order, ["e", "f"]);
        assert!(endings.take("e").is_some() && endings.take("f").is_some());
    }

    #[test]
    fn forgets_an_ending_once_it_is_old() {
        let endings = RecentEndings::new(100, Duration::from_millis(50));
        endings.succeeded(&flow("a"));
        endings.succeeded(&flow("b"));
        assert!(endings.take("a").is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(endings.take("b").is_none(), "an old ending is not handed out");
        endings.succeeded(&flow("c"));
        endings.succeeded(&flow("d"));
        std::thread::sleep(Duration::from_millis(60));
        endings.succeeded(&flow("e"));
        assert_eq!(endings.lock().order, ["e"], "old endings are dropped at the next keep");
        assert_eq!(endings.lock().by_id.len(), 1);
    }
}

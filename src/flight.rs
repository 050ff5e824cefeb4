//! Single flight within this process: one run of a piece of work per key at a time, whose result every caller
//! that asked for the same key while it ran shares.
//!
//! The work runs as its own task on the given [`TaskTracker`], not inside any caller: a caller that goes away (a
//! client that disconnects) does not cancel it halfway, which for a token refresh would lose a refresh token the
//! provider has already rotated. Results are type-erased so that the context holding the
//! flights need not know the types of the modules above it that use them.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio_util::task::TaskTracker;

/// What a flight gives back: the work's own result, or nothing when its task panicked.
pub type Landing = Option<Arc<dyn Any + Send + Sync>>;

type Running = Shared<BoxFuture<'static, Landing>>;

/// The flights running in this process, by key.
#[derive(Default)]
pub struct Flights {
    running: Mutex<HashMap<String, (u64, Running)>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Flights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights").field("running", &self.lock().len()).finish()
    }
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (u64, Running)>> {
        // The map stays consistent whatever a panicking holder did: entries are inserted and removed whole.
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a flight for `key` is running now.
    pub fn is_running(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    /// Runs `work` for `key` unless a flight for `key` is already running, in which case its result is awaited
    /// instead and `work` is dropped unrun.
    pub async fn run<T, F>(self: &Arc<Self>, key: String, tasks: &TaskTracker, work: F) -> Landing
    where
        T: Any + Send + Sync,
        F: Future<Output = T> + Send + 'static,
    {
        let running = {
            let mut running = self.lock();
            match running.get(&key) {
                Some((_, flight)) => flight.clone(),
                None => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let flights = Arc::clone(self);
                    let landing_key = key.clone();
                    let task = tasks.spawn(async move {
                        let result: Arc<dyn Any + Send + Sync> = Arc::new(work.await);
                        // Landed: callers from now on start a flight of their own.
                        flights.land(&landing_key, id);
                        result
                    });
                    let flights = Arc::clone(self);
                    let panic_key = key.clone();
                    let flight: Running = async move {
                        match task.await {
                            Ok(result) => Some(result),
                            Err(_) => {
                                flights.land(&panic_key, id);
                                None
                            }
                        }
                    }
                    .boxed()
                    .shared();
                    running.insert(key, (id, flight.clone()));
                    flight
                }
            }
        };
        running.await
    }

    fn land(&self, key: &str, id: u64) {
        let mut running = self.lock();
        if running.get(key).is_some_and(|(running_id, _)| *running_id == id) {
            running.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn callers_during_a_flight_share_its_one_run() {
        let flights = Arc::new(Flights::default());
        let tasks = TaskTracker::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let callers = (0..8).map(|_| {
            let (flights, tasks, runs) = (Arc::clone(&flights), tasks.clone(), Arc::clone(&runs));
            async move {
                let work = async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    7_u32
                };
                flights.run("account".into(), &tasks, work).await
            }
        });
        let landings = futures::future::join_all(callers).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        for landing in landings {
            assert_eq!(landing.and_then(|l| l.downcast::<u32>().ok()).as_deref(), Some(&7));
        }
        assert!(!flights.is_running("account"), "a landed flight is gone");
        // The next caller runs the work again.
        let again = flights.run("account".into(), &tasks, async { 8_u32 }).await;
        assert_eq!(again.and_then(|l| l.downcast::<u32>().ok()).as_deref(), Some(&8));
    }

    #[tokio::test]
    async fn a_flight_whose_callers_went_away_still_lands() {
        let flights = Arc::new(Flights::default());
        let tasks = TaskTracker::new();
        let finished = Arc::new(AtomicUsize::new(0));
        let done = Arc::clone(&finished);
        let call = flights.run("account".into(), &tasks, async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            done.fetch_add(1, Ordering::SeqCst);
        });
        // The caller gives up before the work is done.
        let _ = tokio::time::timeout(Duration::from_millis(5), call).await;
        tasks.close();
        tasks.wait().await;
        assert_eq!(finished.load(Ordering::SeqCst), 1, "the work ran to its end");
        assert!(!flights.is_running("account"));
    }

    fn tasks_panic() -> bool {
        true
    }

    #[tokio::test]
    async fn a_panicking_flight_lands_empty() {
        let flights = Arc::new(Flights::default());
        let tasks = TaskTracker::new();
        let landing = flights
            .run("account".into(), &tasks, async {
                if tasks_panic() {
                    panic!("work failed");
                }
                0_u32
            })
            .await;
        assert!(landing.is_none());
        assert!(!flights.is_running("account"));
    }
}

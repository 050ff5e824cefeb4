//! What the domain's operations run with: settings, the store, the providers, the counters, and the background
//! work that outlives a request. The flow and token operations take a [`Context`]; the HTTP layer (`server`,
//! `pages`, `api`, `limits`) holds one inside its own state and adds what only it needs.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::endings::RecentEndings;
use crate::flight::Flights;
use crate::provider::Providers;
use crate::store::Store;
use crate::store::events::EventWriter;
use crate::telemetry::Metrics;

#[derive(Clone)]
pub struct Context {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub providers: Providers,
    pub metrics: Arc<Metrics>,
    /// Outcome events that concern no flow, written in the background.
    pub events: EventWriter,
    /// Work that must finish even when its request goes away (a claimed callback); waited for at shutdown.
    pub tasks: TaskTracker,
    /// The token refreshes running in this process, one per account at a time.
    pub refreshes: Arc<Flights>,
    /// The flows this process ended a moment ago, for the result pages that follow.
    pub endings: Arc<RecentEndings>,
}

//! How the service is wired: the shared state, the router with its layers, the background sweeper, and serving
//! with graceful shutdown. Tests build the same [`Application`] on port 0.
//!
//! Connections are served by hyper directly rather than by `axum::serve`, which cannot bound how long a client
//! takes to send a request's head: each connection closes when a head takes longer than the header read timeout
//! (a slowloris client, a silent connection, an idle keep-alive one), and at most `limits.max_connections` are
//! open at once; with all of them taken, nothing more is accepted until one closes, and new connections wait in
//! the listen backlog.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, OriginalUri, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{Route, get};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Layer, Service, ServiceExt};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::assets::Assets;
use crate::config::Settings;
use crate::context::Context;
use crate::edge::{Edge, EdgeService};
use crate::i18n::Language;
use crate::limits::{self, RateLimits};
use crate::pages::Frame;
use crate::provider::{self, Providers, ResolveError};
use crate::store::events::EventSink;
use crate::store::{self, Store, StoreError};
use crate::telemetry::{self, Metrics};
use crate::{api, pages};

/// Everything a handler can reach: the domain's [`Context`] (reached through `Deref`, so `state.store` reads as
/// before) and what only the HTTP layer needs. One `Arc`: axum clones the state for every extractor and layer of
/// every request, and a clone of each part was a dozen atomic counts each time.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] shares.
pub struct Shared {
    pub context: Context,
    pub limits: RateLimits,
    pub assets: Arc<Assets>,
    pub frame: Arc<Frame>,
    /// Failure pages rendered once, filled in with each request's reference and time.
    pub prerendered: crate::pages::Prerendered,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl std::ops::Deref for Shared {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.context
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("could not open the store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Provider(#[from] ResolveError),
    #[error("could not listen on {address}: {source}")]
    Listen { address: String, source: std::io::Error },
}

/// How often expired links and old flows are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often the store's write-ahead log is copied into the database file: every half second while it is quiet,
/// and down to every 20 ms while flows are written fast, so that the log never reaches the writer's own
/// checkpoint threshold (10,000 pages), which would copy it on a request's path.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
const CHECKPOINT_BUSY: Duration = Duration::from_millis(20);
/// Pages written since the last checkpoint above which the next one comes after [`CHECKPOINT_BUSY`].
const CHECKPOINT_BUSY_PAGES: i64 = 500;

/// A built service bound to its listener, ready to run.
pub struct Application {
    listener: TcpListener,
    /// `metrics.listen`: serves `/metrics` without an API key.
    metrics_listener: Option<TcpListener>,
    served: Served,
    state: AppState,
    events: EventSink,
}

/// What the listener serves.
enum Served {
    /// The routes, to serve inside the edge.
    Routes { edge: Arc<Edge>, routes: Router },
    /// The edge and the routes inside layers added by [`Application::layer`].
    Layered(Router),
}

/// Binds the configured `listen` address.
pub async fn bind(address: &str) -> Result<TcpListener, StartupError> {
    TcpListener::bind(address).await.map_err(|source| StartupError::Listen { address: address.to_owned(), source })
}

impl Application {
    /// Opens the store, resolves providers and builds the router; `extra` adds routes (the demo's).
    pub async fn build(
        settings: Settings,
        listener: TcpListener,
        extra: Router<AppState>,
    ) -> Result<Self, StartupError> {
        let store = Store::connect(settings.database_url.expose()).await?;
        // Events are written by the store itself, in the transaction of each change, once webhooks are configured.
        store.enable_webhooks(settings.webhooks.is_some()).await?;
        let http = provider::http_client(&settings)?;
        let providers = Providers::resolve(&settings, http).await?;
        let assets = Arc::new(Assets::build(&settings.branding));
        let frame = Arc::new(Frame {
            assets: assets.clone(),
            app_name: settings.branding.name.clone().unwrap_or_else(|| settings.app.name.clone()),
            return_url: settings.app.return_url.as_ref().map(|url| url.to_string()),
        });
        let limits = RateLimits::new(&settings.limits, frame.clone());
        let (events, sink) = store::events::channel(settings.limits.unmatched_references);
        let queue = events.clone();
        let metrics =
            Arc::new(Metrics::new(settings.connections.iter().map(|c| c.name.clone()), move || queue.dropped()));
        // Every store operation is timed where it runs, including the background writers and sweeps.
        let observer = metrics.clone();
        let store = store.observed(Arc::new(move |operation, elapsed| observer.observe_store(operation, elapsed)));
        let metrics_listener = match &settings.metrics_listen {
            Some(address) => Some(bind(address).await?),
            None => None,
        };
        let settings = Arc::new(settings);
        let tasks = TaskTracker::new();
        let context = Context {
            settings,
            store,
            providers,
            metrics,
            events,
            tasks,
            refreshes: Default::default(),
            endings: Default::default(),
        };
        let state = AppState(Arc::new(Shared { context, limits, assets, frame, prerendered: Default::default() }));
        let edge = Arc::new(Edge::new(
            state.limits.clone(),
            state.frame.clone(),
            &state.assets,
            state.settings.request_timeout,
        ));
        let served = Served::Routes { edge, routes: router(state.clone(), extra) };
        Ok(Self { listener, metrics_listener, served, state, events: sink })
    }

    /// Wraps every route, the service's own included, in `layer`, outside all of the service's layers (the demo
    /// refuses requests for foreign host names this way before anything else runs).
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<Route> + Clone + Send + Sync + 'static,
        L::Service: Service<Request> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as Service<Request>>::Error: Into<Infallible> + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        let inside = match self.served {
            Served::Routes { edge, routes } => Router::new().fallback_service(edged(edge, routes)),
            Served::Layered(router) => router,
        };
        self.served = Served::Layered(inside.layer(layer));
        self
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    /// The port of `metrics.listen`, where configured.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.port())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves; in-flight requests (callbacks mid-exchange among them) finish first.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let sweeper = tokio::spawn(sweep_forever(self.state.clone(), stop_rx.clone()));
        let checkpointer = tokio::spawn(checkpoint_forever(self.state.store.clone(), stop_rx.clone()));
        let metrics = self.metrics_listener.map(|listener| {
            let mut stop = stop_rx.clone();
            let router = metrics_router(self.state.metrics.clone());
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.changed().await;
                };
                axum::serve(listener, router).with_graceful_shutdown(stopped).await
            })
        });
        let deliveries = tokio::spawn(deliver_forever(self.state.clone(), stop_rx.clone()));
        let events = tokio::spawn(self.events.run(self.state.store.clone(), stop_rx));
        let connections = Connections {
            max: self.state.settings.limits.max_connections,
            header_read_timeout: self.state.settings.header_read_timeout,
        };
        let (stop_refreshing, refreshing_stopped) = watch::channel(false);
        let refresher = tokio::spawn(refresh_forever(self.state.clone(), refreshing_stopped));
        let counted = self.state.metrics.clone();
        match self.served {
            Served::Routes { edge, routes } => {
                serve(self.listener, edged(edge, routes), connections, counted, shutdown).await;
            }
            Served::Layered(router) => serve(self.listener, router, connections, counted, shutdown).await,
        }
        // No new background refreshes from here; those running finish with the other tasks.
        let _ = stop_refreshing.send(true);
        let _ = refresher.await;
        // Callbacks whose browser went away still finish and record their ending before the store closes.
        self.state.tasks.close();
        self.state.tasks.wait().await;
        let _ = stop_tx.send(true);
        let _ = sweeper.await;
        let _ = checkpointer.await;
        let _ = deliveries.await;
        if let Some(metrics) = metrics
            && let Ok(Err(err)) = metrics.await
        {
            tracing::warn!(target: "callback_gate::server", error = %err, "the metrics listener failed");
        }
        // Events still queued are written before the store closes.
        let _ = events.await;
        self.state.store.close().await;
        Ok(())
    }
}

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
struct Connections {
    /// Open at once, at most.
    max: usize,
    header_read_timeout: Duration,
}

/// How often, at most, a full set of connections is logged.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Accepts and serves connections until `shutdown` resolves, then lets every open connection finish the request it
/// is serving (idle ones close at once) and returns when all are closed.
async fn serve(
    listener: TcpListener,
    service: impl RouteService,
    limits: Connections,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max));
    let open = TaskTracker::new();
    let closing = CancellationToken::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let mut warned_full: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        if slots.available_permits() == 0 && warned_full.is_none_or(|at| at.elapsed() >= FULL_WARNING_EVERY) {
            warned_full = Some(Instant::now());
            tracing::warn!(target: "callback_gate::server", max_connections = limits.max, "every connection slot is taken; new connections wait until one closes");
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        // The semaphore is never closed; were it, nothing more could be served.
        let Ok(slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_failed(err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = service.clone().map_request(move |request: axum::http::Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let closing = closing.clone();
        let counted = metrics.open_connection();
        open.spawn(async move {
            let _slot = slot;
            let _counted = counted;
            tokio::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(err) = served {
                        tracing::debug!(target: "callback_gate::server", error = %err, "connection ended with an error");
                    }
                }
                () = closing.cancelled() => {
                    // Finishes the request in flight, if any, then closes.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    closing.cancel();
    open.close();
    open.wait().await;
}

/// An error accepting a connection: one the peer caused is ignored; any other (such as running out of file
/// descriptors) is logged and accepting pauses for a second, so that the loop does not spin.
async fn accept_failed(err: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(err.kind(), ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset) {
        return;
    }
    tracing::error!(target: "callback_gate::server", error = %err, "could not accept a connection; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Every route; what every request passes through around them is [`Edge`].
fn router(state: AppState, extra: Router<AppState>) -> Router {
    Router::new()
        .merge(pages::routes())
        .nest("/v1", api::routes(state.clone()))
        .merge(extra)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        // Last, so that it reaches every route above, the merged ones included.
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The routes inside the edge, with the default body limit that extractors read.
fn edged(edge: Arc<Edge>, routes: Router) -> EdgeService<impl RouteService> {
    EdgeService::new(edge, DefaultBodyLimit::max(limits::MAX_BODY_BYTES).layer(routes))
}

/// A service that answers every request, as a route does.
trait RouteService:
    Service<Request, Response = Response, Error = Infallible, Future: Send + 'static> + Clone + Send + Sync + 'static
{
}

impl<S> RouteService for S where
    S: Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// A route exists but not for this method: under `/v1` the API's JSON error, elsewhere the bare status (axum adds
/// `Allow` to both).
async fn method_not_allowed(OriginalUri(uri): OriginalUri, method: Method) -> Response {
    if api::is_api_path(uri.path()) {
        return api::error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on this route; the Allow header lists the methods that are"),
        );
    }
    StatusCode::METHOD_NOT_ALLOWED.into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => "ready".into_response(),
        Err(err) => {
            tracing::warn!(target: "callback_gate::store", error = %err, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "store unreachable").into_response()
        }
    }
}

/// `/metrics` on the main address: it tells how many flows of which connection fail how, so it needs a `/v1` API
/// key like the API (a scraper without one uses `metrics.listen`).
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(refused) = api::check_api_key(&state.settings, &headers) {
        return refused.into_response();
    }
    metrics_page(&state.metrics)
}

fn metrics_page(metrics: &Metrics) -> Response {
    ([(header::CONTENT_TYPE, telemetry::METRICS_CONTENT_TYPE)], metrics.render()).into_response()
}

/// What `metrics.listen` serves: `/metrics` without a key, and nothing else.
fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(|State(metrics): State<Arc<Metrics>>| async move { metrics_page(&metrics) }))
        .with_state(metrics)
        .layer(SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
}

async fn not_found(State(state): State<AppState>, headers: HeaderMap) -> Response {
    pages::plain_notice(
        &state.frame,
        &Language::from_headers(&headers),
        StatusCode::NOT_FOUND,
        "not-found-title",
        "not-found-body",
    )
}

async fn sweep_forever(state: AppState, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = stop.changed() => return,
        }
        state.limits.forget_idle();
        match crate::flow::end_abandoned(&state, None).await {
            Ok(0) => {}
            Ok(ended) => tracing::info!(target: "callback_gate::flow", ended, "ended abandoned flows"),
            Err(err) => tracing::warn!(target: "callback_gate::store", error = %err, "could not end abandoned flows"),
        }
        match state.store.sweep(time::OffsetDateTime::now_utc()).await {
            Ok(0) => {}
            Ok(removed) => {
                tracing::debug!(target: "callback_gate::store", removed, "swept expired records")
            }
            Err(err) => {
                tracing::warn!(target: "callback_gate::store", error = %err, "sweep failed")
            }
        }
    }
}

/// Renews tokens before they expire: each second, the accounts that are due and that no refresh holds, a bounded
/// number at once. With several instances on one database, each account's lease lets one of them refresh it.
async fn refresh_forever(state: AppState, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(crate::tokens::REFRESH_CONCURRENCY));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(crate::tokens::REFRESH_EVERY) => {}
            _ = stop.changed() => return,
        }
        if let Err(err) = crate::tokens::refresh_due_accounts(&state, &slots).await {
            tracing::warn!(target: "callback_gate::tokens", error = %err, "could not look for due refreshes");
        }
    }
}

/// Delivers webhook events from the outbox while the service runs, a few times a second, and keeps the outbox depth
/// metric current. Does nothing without `[webhooks]`.
async fn deliver_forever(state: AppState, mut stop: watch::Receiver<bool>) {
    let Some(settings) = state.settings.webhooks.clone() else {
        return;
    };
    let mut looks = 0u32;
    let mut busy = false;
    loop {
        // After a full batch more are likely due: the next pass starts at once.
        if busy {
            if *stop.borrow() {
                return;
            }
        } else {
            tokio::select! {
                _ = tokio::time::sleep(crate::webhooks::DELIVER_EVERY) => {}
                _ = stop.changed() => return,
            }
        }
        busy = match crate::webhooks::deliver_due(&state, &settings).await {
            Ok(attempted) => attempted >= crate::webhooks::BATCH as usize,
            Err(err) => {
                tracing::warn!(target: "callback_gate::webhooks", error = %err, "could not claim webhook deliveries");
                false
            }
        };
        looks = looks.wrapping_add(1);
        if looks % 20 == 1
            && let Ok(depth) = state.store.pending_deliveries().await
        {
            state.metrics.set_outbox_depth(depth);
        }
    }
}

async fn checkpoint_forever(store: Store, mut stop: watch::Receiver<bool>) {
    let mut pause = CHECKPOINT_EVERY;
    let mut last_log = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
        pause = match store.checkpoint().await {
            Ok(done) => {
                // The log restarts from its beginning after a complete checkpoint: a log shorter than the last one
                // was restarted, and all of it is new.
                let written = if done.log >= last_log { done.log - last_log } else { done.log };
                last_log = done.log;
                // A busy log is checkpointed again soon, so that each copy stays small.
                match written {
                    0 => CHECKPOINT_EVERY,
                    w if w >= CHECKPOINT_BUSY_PAGES => CHECKPOINT_BUSY,
                    _ => CHECKPOINT_EVERY / 5,
                }
            }
            Err(err) => {
                tracing::warn!(target: "callback_gate::store", error = %err, "checkpoint failed");
                CHECKPOINT_EVERY
            }
        };
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!(target: "callback_gate::server", "shutting down: finishing in-flight requests");
}

//! What every request passes through around its route, in this order: the request timeout and the panic catcher,
//! which answer what no handler answered in the request's kind (the API's JSON error under `/v1`, the safe page
//! elsewhere); the size limits; the rate limits; the route. On the way out, every response gets the security
//! headers, and `no-store` unless its route chose its own caching.
//!
//! One service does all of it, around the router rather than inside it: applied with `Router::layer`, each step
//! was a layer of its own around every route, cloned, boxed and dropped on every request, which cost a failure
//! page a fifth of its time (`docs/performance.md`, Finding 12).

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::FutureExt;
use tower::{Service, ServiceExt};

use crate::api;
use crate::assets::Assets;
use crate::i18n::Language;
use crate::limits::{self, RateLimits};
use crate::pages::{self, Frame};

/// What the edge needs, shared by every request.
pub struct Edge {
    rate_limits: RateLimits,
    frame: Arc<Frame>,
    /// How long a request may take.
    timeout: Duration,
    /// Set on every response, replacing what a route set.
    overriding: [(HeaderName, HeaderValue); 5],
}

impl Edge {
    pub fn new(rate_limits: RateLimits, frame: Arc<Frame>, assets: &Assets, timeout: Duration) -> Self {
        // Computed once: the policy only changes with the branding config.
        let csp = HeaderValue::from_str(&pages::content_security_policy(assets))
            .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"));
        Self {
            rate_limits,
            frame,
            timeout,
            overriding: [
                (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
                (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
                (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
                (HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin")),
                (header::CONTENT_SECURITY_POLICY, csp),
            ],
        }
    }

    async fn handle<S>(&self, request: Request, route: S) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        let api = api::is_api_path(request.uri().path());
        // Kept for the answer to a panic or a timeout, which no longer has the request.
        let accept_language = request.headers().get(header::ACCEPT_LANGUAGE).cloned();
        let guarded = AssertUnwindSafe(self.guard(request, route)).catch_unwind();
        let mut response = match tokio::time::timeout(self.timeout, guarded).await {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => {
                // The panic's message stays out of the log line and the answer: it may hold anything the handler
                // had in hand.
                tracing::error!(target: "callback_gate::server", "a request handler panicked; answered 500");
                let message = "something went wrong on our side; try again".to_owned();
                self.unanswered(api, accept_language, StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
            }
            Err(_) => {
                tracing::warn!(target: "callback_gate::server", timeout = ?self.timeout, "a request took longer than the request timeout; answered 504");
                let message = format!("the request did not finish within {:?}", self.timeout);
                self.unanswered(api, accept_language, StatusCode::GATEWAY_TIMEOUT, "request_timeout", message)
            }
        };
        self.add_headers(response.headers_mut());
        response
    }

    /// The size and rate limits, then the route.
    async fn guard<S>(&self, request: Request, route: S) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        if let Some(refused) = limits::refuse_oversized(&self.frame, &request) {
            return refused;
        }
        if let Some(refused) = self.rate_limits.refuse(&request) {
            return refused;
        }
        match route.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// The answer to a request no handler answered: a panic or the timeout.
    fn unanswered(
        &self,
        api: bool,
        accept_language: Option<HeaderValue>,
        status: StatusCode,
        code: &'static str,
        message: String,
    ) -> Response {
        if api {
            return api::error_response(status, code, message);
        }
        let language = Language::negotiate(accept_language.as_ref().and_then(|value| value.to_str().ok()));
        pages::plain_notice(&self.frame, &language, status, "internal-title", "internal-body")
    }

    fn add_headers(&self, map: &mut HeaderMap) {
        // Room for them all at once: growing the map a header at a time rehashed it twice per response.
        map.reserve(self.overriding.len() + 1);
        if !map.contains_key(header::CACHE_CONTROL) {
            map.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        for (name, value) in &self.overriding {
            map.insert(name.clone(), value.clone());
        }
    }
}

/// The edge around a service (the router). Cloning it, which the HTTP server does for every request, clones two
/// reference counts' worth: the edge's and the router's.
#[derive(Clone)]
pub struct EdgeService<S> {
    edge: Arc<Edge>,
    route: S,
}

impl<S> EdgeService<S> {
    pub fn new(edge: Arc<Edge>, route: S) -> Self {
        Self { edge, route }
    }
}

impl<S> Service<Request> for EdgeService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The route is made ready in `guard`, by `oneshot`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let edge = self.edge.clone();
        let route = self.route.clone();
        Box::pin(async move { Ok(edge.handle(request, route).await) })
    }
}

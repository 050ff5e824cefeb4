//! The load tool for single requests: keep-alive HTTP/1.1 connections driven by hyper's low-level client, with
//! nothing in between (no pool, no cookies, no redirects), so that as much of the machine as possible is left to
//! the server under test. The same code measures the ceiling and callback-gate.
//!
//! Two shapes: a closed loop (N connections, each sending its next request as soon as the last one is answered:
//! the highest rate the server sustains) and an open loop (requests scheduled at a fixed rate, latency counted from
//! the scheduled instant, so a stalled server cannot hide its stall by slowing the load down).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HOST, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// A histogram of latencies in microseconds, from 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|err| panic!("histogram bounds: {err}"))
}

pub fn micros(elapsed: Duration) -> u64 {
    (elapsed.as_micros() as u64).max(1)
}

/// One keep-alive connection.
pub struct Connection {
    sender: SendRequest<Empty<Bytes>>,
    host: HeaderValue,
}

#[derive(Debug)]
pub enum RequestError {
    Transport(String),
    Status(StatusCode),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(err) => write!(f, "transport: {err}"),
            Self::Status(status) => write!(f, "HTTP {}", status.as_u16()),
        }
    }
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> Result<Self, RequestError> {
        let stream = TcpStream::connect(addr).await.map_err(|err| RequestError::Transport(err.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.map_err(|err| RequestError::Transport(err.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let host = HeaderValue::from_str(&addr.to_string()).map_err(|err| RequestError::Transport(err.to_string()))?;
        Ok(Self { sender, host })
    }

    /// `GET path` on this connection; reads the whole body. Returns the status and the body's length.
    pub async fn get(&mut self, path: &str) -> Result<(StatusCode, usize), RequestError> {
        self.sender.ready().await.map_err(|err| RequestError::Transport(err.to_string()))?;
        let request = Request::get(path)
            .header(HOST, self.host.clone())
            .body(Empty::new())
            .map_err(|err| RequestError::Transport(err.to_string()))?;
        let response =
            self.sender.send_request(request).await.map_err(|err| RequestError::Transport(err.to_string()))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|err| RequestError::Transport(err.to_string()))?;
        Ok((status, body.to_bytes().len()))
    }
}

/// One `GET` on a fresh connection; for readiness polling.
pub async fn get_once(addr: SocketAddr, path: &str) -> Result<StatusCode, RequestError> {
    let mut connection = Connection::open(addr).await?;
    connection.get(path).await.map(|(status, _)| status)
}

/// Which request to send: the n-th request's path. Must be cheap.
pub type PathFn = Arc<dyn Fn(u64) -> String + Send + Sync>;

/// What a load run measured over its window (warm-up excluded).
#[derive(Debug, Clone)]
pub struct Measured {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub window: Duration,
    pub latency: Histogram<u64>,
    pub body_bytes: u64,
    /// Requests the open loop could not even schedule (its queue was full).
    pub shed: u64,
}

impl Measured {
    fn new() -> Self {
        Self {
            ok: 0,
            errors: 0,
            first_error: None,
            window: Duration::ZERO,
            latency: histogram(),
            body_bytes: 0,
            shed: 0,
        }
    }

    fn merge(&mut self, other: &Measured) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.body_bytes += other.body_bytes;
        self.shed += other.shed;
        let _ = self.latency.add(&other.latency);
    }

    fn record(&mut self, result: Result<(StatusCode, usize), RequestError>, expect: StatusCode, took: Duration) {
        match result {
            Ok((status, len)) if status == expect => {
                self.ok += 1;
                self.body_bytes += len as u64;
                let _ = self.latency.record(micros(took));
            }
            Ok((status, _)) => self.error(RequestError::Status(status)),
            Err(err) => self.error(err),
        }
    }

    fn error(&mut self, err: RequestError) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(err.to_string());
        }
    }

    pub fn per_second(&self) -> f64 {
        if self.window.is_zero() { 0.0 } else { self.ok as f64 / self.window.as_secs_f64() }
    }
}

/// The shape of one load run.
#[derive(Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    pub path: PathFn,
    pub expect: StatusCode,
    pub warmup: Duration,
    pub window: Duration,
}

/// Closed loop: `connections` connections, each sending its next request as soon as the previous one is answered.
pub async fn closed_loop(plan: &Plan, connections: usize) -> Measured {
    let started = Instant::now();
    let record_from = started + plan.warmup;
    let stop_at = record_from + plan.window;
    let counter = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (plan, counter) = (plan.clone(), counter.clone());
        workers.push(tokio::spawn(async move {
            let mut measured = Measured::new();
            let mut connection = None;
            loop {
                let now = Instant::now();
                if now >= stop_at {
                    break;
                }
                if connection.is_none() {
                    match Connection::open(plan.addr).await {
                        Ok(opened) => connection = Some(opened),
                        Err(err) => {
                            if now >= record_from {
                                measured.error(err);
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let Some(open) = connection.as_mut() else { continue };
                let path = (plan.path)(counter.fetch_add(1, Ordering::Relaxed));
                let sent = Instant::now();
                let result = open.get(&path).await;
                let took = sent.elapsed();
                if matches!(result, Err(RequestError::Transport(_))) {
                    connection = None;
                }
                if sent >= record_from && sent < stop_at {
                    measured.record(result, plan.expect, took);
                }
            }
            measured
        }));
    }
    let mut total = Measured::new();
    for worker in workers {
        if let Ok(measured) = worker.await {
            total.merge(&measured);
        }
    }
    total.window = plan.window;
    total
}

/// Open loop: `rate` requests per second scheduled evenly, served by up to `connections` connections; latency is
/// counted from each request's scheduled instant.
pub async fn open_loop(plan: &Plan, rate: f64, connections: usize) -> Measured {
    let started = Instant::now();
    let record_from = started + plan.warmup;
    let stop_at = record_from + plan.window;
    let total_requests = (rate * (plan.warmup + plan.window).as_secs_f64()).ceil() as u64;
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    // The queue holds at most one second of requests; beyond that the server has fallen hopelessly behind.
    let (tx, rx) = tokio::sync::mpsc::channel::<(u64, Instant)>(rate.ceil().max(1.0) as usize);
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (plan, rx) = (plan.clone(), rx.clone());
        workers.push(tokio::spawn(async move {
            let mut measured = Measured::new();
            let mut connection: Option<Connection> = None;
            loop {
                let next = rx.lock().await.recv().await;
                let Some((n, scheduled)) = next else { break };
                if connection.is_none() {
                    match Connection::open(plan.addr).await {
                        Ok(opened) => connection = Some(opened),
                        Err(err) => {
                            if scheduled >= record_from {
                                measured.error(err);
                            }
                            continue;
                        }
                    }
                }
                let Some(open) = connection.as_mut() else { continue };
                let result = open.get(&(plan.path)(n)).await;
                if matches!(result, Err(RequestError::Transport(_))) {
                    connection = None;
                }
                if scheduled >= record_from {
                    measured.record(result, plan.expect, scheduled.elapsed());
                }
            }
            measured
        }));
    }
    let mut shed = 0;
    for n in 0..total_requests {
        let due = started + period.mul_f64(n as f64);
        if due >= stop_at {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        if tx.try_send((n, due)).is_err() && due >= record_from {
            shed += 1;
        }
    }
    drop(tx);
    let mut total = Measured::new();
    for worker in workers {
        if let Ok(measured) = worker.await {
            total.merge(&measured);
        }
    }
    total.shed = shed;
    total.errors += shed;
    if shed > 0 && total.first_error.is_none() {
        total.first_error = Some(format!("{shed} requests shed: the server fell more than a second behind"));
    }
    total.window = plan.window;
    total
}

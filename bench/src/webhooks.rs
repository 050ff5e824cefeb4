//! Webhook delivery, measured: `callback-gate-bench webhooks`. callback-gate runs with `[webhooks]` pointed at a
//! receiver in this process that answers 204 at once; the harness mints authorization links through the API
//! (each creates an account, so each writes one `account.status_changed` event in its transaction) and times,
//! per event, from the API's answer to the receiver's receipt. Throughput is events delivered per second from the
//! first mint to the last receipt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::sync::Semaphore;

use crate::load::histogram;
use crate::servers::{Backend, GateSetup};

/// First receipt of each identifier's event, and how many deliveries arrived in all (duplicates included).
#[derive(Default)]
struct Received {
    first: HashMap<String, Instant>,
    total: u64,
}

async fn receive(State(received): State<Arc<Mutex<Received>>>, body: Bytes) -> StatusCode {
    let at = Instant::now();
    let identifier = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|event| event["data"]["identifier"].as_str().map(str::to_owned));
    if let (Some(identifier), Ok(mut received)) = (identifier, received.lock()) {
        received.total += 1;
        received.first.entry(identifier).or_insert(at);
    }
    StatusCode::NO_CONTENT
}

/// What one run measured.
pub struct Measured {
    pub events: usize,
    pub concurrency: usize,
    pub backend: &'static str,
    pub mint_seconds: f64,
    pub delivered_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub duplicates: u64,
}

impl Measured {
    pub fn markdown(&self) -> String {
        format!(
            "| events | minting concurrency | store | minted in | delivered per second | latency p50 | p99 | max | duplicates |\n\
             |---|---|---|---|---|---|---|---|---|\n\
             | {} | {} | {} | {:.2} s | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {} |\n",
            self.events,
            self.concurrency,
            self.backend,
            self.mint_seconds,
            self.delivered_per_second,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.duplicates
        )
    }
}

pub async fn run(
    binary: &std::path::Path,
    out: &std::path::Path,
    backend: &Backend,
    events: usize,
    concurrency: usize,
) -> Result<Measured, String> {
    let received = Arc::new(Mutex::new(Received::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|err| format!("receiver: {err}"))?;
    let port = listener.local_addr().map_err(|err| err.to_string())?.port();
    let router = Router::new().route("/hooks", post(receive)).with_state(received.clone());
    let receiver = tokio::spawn(async move { axum::serve(listener, router).await });

    let dir = out.join("webhooks");
    let _ = std::fs::remove_dir_all(&dir);
    let mut setup = GateSetup::new(binary, &dir, "http://127.0.0.1:9", backend)?;
    let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
    setup.webhooks = Some((format!("http://127.0.0.1:{port}/hooks"), format!("whsec_{}", STANDARD.encode(key))));
    setup.detect_limits()?;
    let gate = setup.start().await?;
    let base = format!("http://{}", gate.server.addr);

    let client = reqwest::Client::new();
    let minted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(events);
    for n in 0..events {
        let permit = slots.clone().acquire_owned().await.map_err(|err| err.to_string())?;
        let (client, base, key, minted) = (client.clone(), base.clone(), gate.api_key.clone(), minted.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let identifier = format!("bench_user_{n}");
            let body = serde_json::json!({ "connection": crate::browser::CONNECTION, "identifier": identifier });
            let answer = client
                .post(format!("{base}/v1/authorization-links"))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await;
            match answer {
                Ok(answer) if answer.status() == reqwest::StatusCode::CREATED => {
                    if let Ok(mut minted) = minted.lock() {
                        minted.insert(identifier, Instant::now());
                    }
                    Ok(())
                }
                Ok(answer) => Err(format!("minting a link answered {}", answer.status())),
                Err(err) => Err(format!("minting a link: {err}")),
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|err| err.to_string())??;
    }
    let mint_seconds = started.elapsed().as_secs_f64();

    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let delivered = received.lock().map(|r| r.first.len()).unwrap_or(0);
        if delivered >= events {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {delivered} of {events} events were delivered within 5 minutes"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Any duplicate delivery would arrive within a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    gate.server.stop().await;
    receiver.abort();

    let received = received.lock().map_err(|_| "receiver state".to_owned())?;
    let minted = minted.lock().map_err(|_| "mint state".to_owned())?;
    let mut latency = histogram();
    let mut last = started;
    for (identifier, at) in &received.first {
        last = last.max(*at);
        if let Some(minted_at) = minted.get(identifier) {
            let _ = latency.record(at.saturating_duration_since(*minted_at).as_micros() as u64);
        }
    }
    let span = last.duration_since(started).as_secs_f64().max(1e-9);
    Ok(Measured {
        events,
        concurrency,
        backend: backend.name(),
        mint_seconds,
        delivered_per_second: events as f64 / span,
        p50_ms: latency.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: latency.value_at_quantile(0.99) as f64 / 1000.0,
        max_ms: latency.max() as f64 / 1000.0,
        duplicates: received.total.saturating_sub(received.first.len() as u64),
    })
}

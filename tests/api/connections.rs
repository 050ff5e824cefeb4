//! Connections a long-lived deployment meets: a client that sends its request head byte by byte, one that never
//! speaks, one that keeps an idle connection open, more connections than the service serves at once, and a
//! shutdown while a request is in flight.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::helpers::{Options, TestApp, spawn_with};

const HEADER_READ_TIMEOUT: Duration = Duration::from_millis(400);

async fn spawn_impatient() -> TestApp {
    spawn_with(Options { header_read_timeout: Some(HEADER_READ_TIMEOUT), ..Options::default() }).await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(("127.0.0.1", app.port)).await.unwrap()
}

/// Reads (and drops) whatever the service sends until it closes the connection; how long that took, or `None` if it
/// was still open after `patience`.
async fn closed_after(reader: &mut (impl AsyncReadExt + Unpin), patience: Duration) -> Option<Duration> {
    let started = Instant::now();
    let until_closed = async {
        let mut buffer = [0u8; 4096];
        // End of stream or a reset: closed either way.
        while let Ok(1..) = reader.read(&mut buffer).await {}
    };
    tokio::time::timeout(patience, until_closed).await.ok().map(|()| started.elapsed())
}

/// Reads one response to a `GET /healthz` (its body is "ok") and returns what was read.
async fn read_health_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&received).ends_with("\r\n\r\nok") {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await.unwrap().unwrap();
        assert!(read > 0, "closed before the response: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn a_connection_that_never_speaks_is_closed() {
    let app = spawn_impatient().await;
    let mut silent = connect(&app).await;
    let after = closed_after(&mut silent, Duration::from_secs(5)).await.expect("a silent connection is closed");
    assert!(after >= HEADER_READ_TIMEOUT.mul_f64(0.8), "closed by the header read timeout, not at once: {after:?}");
}

#[tokio::test]
async fn a_request_head_sent_slowly_is_closed() {
    let app = spawn_impatient().await;
    let (mut reader, mut writer) = connect(&app).await.into_split();
    // A slowloris client: a header line every 50 ms, never the blank line that ends the head.
    let trickle = tokio::spawn(async move {
        writer.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n").await?;
        for i in 0..200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            writer.write_all(format!("x-slow-{i}: y\r\n").as_bytes()).await?;
        }
        std::io::Result::Ok(())
    });
    let after = closed_after(&mut reader, Duration::from_secs(5)).await;
    assert!(after.is_some(), "a head still arriving after 5 s keeps its connection open");
    assert!(!trickle.is_finished() || trickle.await.unwrap().is_err(), "the client was still sending when closed");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = spawn_impatient().await;
    let mut stream = connect(&app).await;
    for _ in 0..2 {
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
        let response = read_health_response(&mut stream).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(!response.to_ascii_lowercase().contains("connection: close"), "kept alive: {response}");
    }
    let after = closed_after(&mut stream, Duration::from_secs(5)).await.expect("an idle connection is closed");
    assert!(after >= HEADER_READ_TIMEOUT.mul_f64(0.8), "idle for the timeout, not closed at once: {after:?}");
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_millis(1200)).await;
    "done"
}

#[tokio::test]
async fn a_request_slower_than_the_header_read_timeout_still_finishes() {
    let routes = Router::new().route("/connect/test-slow", get(slow));
    let app = spawn_with(Options {
        extra_routes: Some(routes),
        header_read_timeout: Some(HEADER_READ_TIMEOUT),
        ..Options::default()
    })
    .await;
    let response = app.api.get(app.url("/connect/test-slow")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "done");
}

#[tokio::test]
async fn connections_beyond_the_bound_wait_until_one_closes() {
    let limits = format!("{}\nmax_connections = 2", Options::default().limits);
    let app = spawn_with(Options { limits, ..Options::default() }).await;
    let first = connect(&app).await;
    let mut second = connect(&app).await;
    second.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    assert!(read_health_response(&mut second).await.starts_with("HTTP/1.1 200"), "the second is served");

    // The third is queued by the kernel but not accepted: its request goes unanswered while two are open.
    let mut third = connect(&app).await;
    third.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut buffer = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(700), third.read(&mut buffer)).await;
    assert!(early.is_err(), "a connection beyond the bound is not served while the others are open");

    drop(first);
    let response = read_health_response(&mut third).await;
    assert!(response.starts_with("HTTP/1.1 200"), "served once a slot is free: {response}");
    // The service still answers after being full.
    drop(second);
    assert_eq!(app.api.get(app.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish_and_accepts_no_more() {
    let shutdown = CancellationToken::new();
    let routes = Router::new().route("/connect/test-slow", get(slow));
    let app =
        spawn_with(Options { extra_routes: Some(routes), shutdown: Some(shutdown.clone()), ..Options::default() })
            .await;
    let mut idle = connect(&app).await;
    let in_flight = tokio::spawn(app.api.get(app.url("/connect/test-slow")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();

    let response = in_flight.await.unwrap().expect("the request in flight is answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "done");
    assert!(closed_after(&mut idle, Duration::from_secs(5)).await.is_some(), "an idle connection is closed");
    let refused = TcpStream::connect(("127.0.0.1", app.port)).await;
    assert!(refused.is_err(), "nothing is accepted after shutdown");
}

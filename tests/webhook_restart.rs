//! A service killed with webhook deliveries pending (`kill -9`, no chance to finish anything) delivers them after
//! it restarts: the events live in the database's outbox, written with the changes that caused them.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{ChildGuard, Env, command, free_port};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const API_KEY: &str = "restart-test-api-key-0123456789";

fn config(port: u16, database: &Path, hooks: &str) -> String {
    format!(
        r#"
public_url = "http://127.0.0.1:{port}"
listen = "127.0.0.1:{port}"
mode = "development"
database_url = "sqlite://{database}"

[app]
name = "Restart"
return_url = "http://127.0.0.1:{port}/"
allowed_return_origins = ["http://127.0.0.1:{port}"]
user_verify_url = "http://127.0.0.1:{port}/verify"

[support]
email = "support@example.com"

[[connections]]
name = "mock"
provider = "oauth2"
client_id = "restart"
client_secret_env = "MOCK_CLIENT_SECRET"
authorization_url = "http://127.0.0.1:9/authorize"
token_url = "http://127.0.0.1:9/token"

[webhooks]
url = "{hooks}"
secret_env = "HOOK_SECRET"
"#,
        database = database.display()
    )
}

/// Runs `serve` on `config` until it says it is ready; its log goes to `log`.
fn serve(dir: &Path, config: &str, env: &Env, log: &Path) -> ChildGuard {
    let path = dir.join("callback-gate.toml");
    std::fs::write(&path, config).expect("config");
    let mut serve = command(&["serve", "--config", path.to_str().expect("path")], dir, env);
    serve.stdout(std::process::Stdio::null()).stderr(std::fs::File::create(log).expect("log"));
    let mut child = ChildGuard::new(serve.spawn().expect("spawn serve"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("callback-gate is ready") {
            return child;
        }
        assert!(child.try_wait().is_none(), "serve exited\n{text}");
        assert!(Instant::now() < deadline, "serve was not ready in time\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn deliveries_pending_when_the_service_is_killed_are_made_after_it_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("gate.db");
    let key = format!("whsec_{}", STANDARD.encode(common::random_bytes::<32>()));
    let env = Env::minimal()
        .set("CALLBACK_GATE_SECRET_KEY", common::secret_key())
        .set("CALLBACK_GATE_API_KEYS", API_KEY)
        .set("MOCK_CLIENT_SECRET", "restart-client-secret")
        .set("HOOK_SECRET", key.clone());
    let port = free_port();

    // The receiver is down: the event is written, its first attempt fails, and it waits for the next.
    let down = format!("http://127.0.0.1:{}/hooks", free_port());
    let mut first = serve(dir.path(), &config(port, &database, &down), &env, &dir.path().join("first.log"));
    let minted = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/authorization-links"))
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({ "connection": "mock", "identifier": "user_1" }))
        .send()
        .await
        .expect("mint a link");
    assert_eq!(minted.status(), reqwest::StatusCode::CREATED);
    let attempted = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(dir.path().join("first.log")).unwrap_or_default().contains("will retry") {
        assert!(Instant::now() < attempted, "the first attempt was made");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No graceful stop: SIGKILL.
    first.child().kill().expect("kill -9");
    first.child().wait().expect("killed");

    // The receiver is up now; the restarted service delivers what was pending.
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).and(path("/hooks")).respond_with(ResponseTemplate::new(204)).mount(&receiver).await;
    let up = format!("{}/hooks", receiver.uri());
    let _second = serve(dir.path(), &config(port, &database, &up), &env, &dir.path().join("second.log"));
    let delivered = Instant::now() + Duration::from_secs(20);
    let request = loop {
        if let Some(request) = receiver.received_requests().await.unwrap_or_default().into_iter().next() {
            break request;
        }
        assert!(Instant::now() < delivered, "delivered after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    standardwebhooks::Webhook::new(&key).expect("key").verify(&request.body, &request.headers).expect("signed");
    let event: serde_json::Value = serde_json::from_slice(&request.body).expect("json");
    assert_eq!(event["type"], "account.status_changed");
    assert_eq!(event["data"]["identifier"], "user_1");
    assert_eq!(event["data"]["status"], "PENDING_AUTH");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received_requests().await.unwrap_or_default().len(), 1, "delivered once");
}

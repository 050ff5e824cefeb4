//! The demo works as is: driven like a browser through the demo app, the demo provider's consent page and back,
//! for both Approve and Deny; and `callback-gate demo --port 0` starts and says where to go.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use callback_gate::demo::Demo;
use callback_gate::store::Table;
use common::{ChildGuard, Env, attribute_of, code_on, reference_on};
use reqwest::StatusCode;
use reqwest::header::{HOST, LOCATION, ORIGIN};
use serde_json::Value;

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .expect("http client")
}

/// Resolves a `Location` against the demo's origin.
fn absolute(base: &str, location: &str) -> String {
    if location.starts_with('/') { format!("{base}{location}") } else { location.to_owned() }
}

fn location(response: &reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "expected a 303 from {}", response.url());
    response.headers()[LOCATION].to_str().expect("ascii location").to_owned()
}

/// The row of the demo app's account table for `identifier`.
fn row<'a>(page: &'a str, identifier: &str) -> Option<&'a str> {
    let start = page.find(&format!("<tr data-identifier=\"{identifier}\""))?;
    let end = start + page[start..].find("</tr>")?;
    Some(&page[start..end])
}

struct Running {
    url: String,
    api_key: String,
    client: reqwest::Client,
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// From the demo app page to the demo provider's consent page; returns the consent page's HTML.
    async fn to_consent(&self, identifier: &str) -> String {
        let response = self
            .client
            .post(self.url("/demo/connect"))
            .header(ORIGIN, &self.url)
            .form(&[("identifier", identifier)])
            .send()
            .await
            .expect("POST /demo/connect");
        let start = absolute(&self.url, &location(&response));
        assert!(
            start.starts_with(&self.url("/connect/start/")),
            "the demo app sends the browser to a start link: {start}"
        );
        let response = self.client.get(&start).send().await.expect("open link");
        let authorize = absolute(&self.url, &location(&response));
        assert!(
            authorize.starts_with(&self.url("/demo/provider/authorize?")),
            "the start link sends the browser to the demo provider: {authorize}"
        );
        let response = self.client.get(&authorize).send().await.expect("consent page");
        assert_eq!(response.status(), StatusCode::OK);
        let page = response.text().await.expect("body");
        assert!(page.contains("Approve") && page.contains("Deny"), "{page}");
        assert!(page.contains("value=\"approve\"") && page.contains("value=\"deny\""), "{page}");
        page
    }

    /// Submits the consent form with `decision`, follows the provider's redirect to the callback and the callback's
    /// redirect to the result page; returns the result page's status and HTML.
    async fn decide(&self, consent: &str, decision: &str) -> (StatusCode, String) {
        let mut form: Vec<(String, String)> = ["redirect_uri", "state", "scope", "code_challenge"]
            .iter()
            .map(|name| {
                let value = attribute_of(consent, &format!("name=\"{name}\""), "value")
                    .unwrap_or_else(|| panic!("hidden field {name} on the consent page"));
                ((*name).to_owned(), value)
            })
            .collect();
        form.push(("decision".into(), decision.into()));
        let response = self
            .client
            .post(self.url("/demo/provider/decide"))
            .header(ORIGIN, &self.url)
            .form(&form)
            .send()
            .await
            .expect("POST /demo/provider/decide");
        let callback = absolute(&self.url, &location(&response));
        assert!(
            callback.starts_with(&self.url("/connect/callback/demo?")),
            "the provider sends the browser back to the callback: {callback}"
        );
        let response = self.client.get(&callback).send().await.expect("callback");
        let result = absolute(&self.url, &location(&response));
        assert!(result.starts_with(&self.url("/connect/result/")), "{result}");
        let response = self.client.get(&result).send().await.expect("result page");
        let status = response.status();
        (status, response.text().await.expect("body"))
    }

    async fn app_page(&self) -> String {
        let response = self.client.get(self.url("/")).send().await.expect("GET /");
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("body")
    }

    async fn account(&self, identifier: &str) -> Value {
        let response = self
            .client
            .get(self.url(&format!("/v1/connected-accounts/demo/{identifier}")))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .expect("API");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_connects_and_deny_explains() {
    let built: Demo = callback_gate::demo::build(0, None).await.expect("the demo builds");
    // Only the app moves into the server task; the rest of `built` (its temporary data folder) lives until the
    // end of the test.
    tokio::spawn(built.app.run_until(std::future::pending()));
    let demo = Running { url: built.url.clone(), api_key: built.api_key.clone(), client: browser() };
    assert!(demo.url.starts_with("http://127.0.0.1:"), "{}", demo.url);
    assert!(built.data_dir.exists(), "the demo has its data folder");

    // The demo app page: a form that mints a link.
    let page = demo.app_page().await;
    let form_tag = attribute_of(&page, "action=\"/demo/connect\"", "method").expect("a form posting to /demo/connect");
    assert_eq!(form_tag.to_ascii_lowercase(), "post");
    assert!(page.contains("name=\"identifier\""), "{page}");

    // Approve.
    let consent = demo.to_consent("user_demo").await;
    let (status, page) = demo.decide(&consent, "approve").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("data-outcome=\"connected\""), "{page}");

    let page = demo.app_page().await;
    let approved = row(&page, "user_demo").expect("user_demo is listed");
    assert!(approved.contains("ACTIVE"), "{approved}");

    let account = demo.account("user_demo").await;
    assert_eq!(account["status"], "ACTIVE", "{account}");
    assert_eq!(account["connection"], "demo");
    assert_eq!(account["identifier"], "user_demo");
    assert!(account["last_error"].is_null(), "{account}");

    // The demo provider refreshes like providers that rotate refresh tokens: twice in a row works, each time
    // with the refresh token the previous answer gave.
    for _ in 0..2 {
        let response = demo
            .client
            .post(demo.url("/v1/connected-accounts/demo/user_demo/refresh"))
            .bearer_auth(&demo.api_key)
            .send()
            .await
            .expect("refresh");
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "ACTIVE");
        assert!(body["last_error"].is_null(), "{body}");
    }

    // The API wants its key.
    let response = demo.client.get(demo.url("/v1/connected-accounts/demo/user_demo")).send().await.expect("API");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Deny.
    let consent = demo.to_consent("user_deny").await;
    let (status, page) = demo.decide(&consent, "deny").await;
    assert!(status.is_client_error() || status == StatusCode::OK, "{status}");
    assert!(page.contains("data-outcome=\"failed\""), "{page}");
    assert_eq!(code_on(&page).as_deref(), Some("access_denied"), "{page}");
    let reference = reference_on(&page).expect("the failure page shows a reference");
    assert!(callback_gate::telemetry::is_reference(&reference), "{reference}");

    let account = demo.account("user_deny").await;
    assert_eq!(account["status"], "PENDING_AUTH", "{account}");
    assert_eq!(account["last_error"]["code"], "access_denied", "{account}");
    assert_eq!(account["last_error"]["reference"], reference.as_str(), "{account}");

    let page = demo.app_page().await;
    let denied = row(&page, "user_deny").expect("user_deny is listed");
    assert!(denied.contains("PENDING_AUTH") && denied.contains("access_denied"), "{denied}");
    assert!(row(&page, "user_demo").expect("still listed").contains("ACTIVE"));
    assert_eq!(demo.account("user_demo").await["status"], "ACTIVE");
}

/// The demo listens on 127.0.0.1 without a login: a page elsewhere must not reach it by DNS rebinding (a foreign
/// name resolving to 127.0.0.1, so a foreign `Host`), whatever the route, the service's own included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_answers_only_loopback_host_names() {
    let built: Demo = callback_gate::demo::build(0, None).await.expect("the demo builds");
    let port = built.app.port();
    tokio::spawn(built.app.run_until(std::future::pending()));
    let demo = Running { url: built.url.clone(), api_key: built.api_key.clone(), client: browser() };
    let foreign = [
        format!("evil.example:{port}"),
        "127.0.0.1.evil.example".to_owned(),
        format!("127.0.0.1.evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        "evil.example".to_owned(),
    ];
    let paths = ["/", "/demo/provider/authorize?client_id=callback-gate-demo", "/v1/connected-accounts", "/healthz"];
    for host in &foreign {
        for path in paths {
            let response =
                demo.client.get(demo.url(path)).header(HOST, host).bearer_auth(&demo.api_key).send().await.expect(path);
            assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST, "Host {host} on {path}");
            let api = path.starts_with("/v1/");
            let body = response.text().await.expect("body");
            assert!(!body.contains("demo_") && !body.contains("<table"), "nothing of the demo leaks: {body}");
            if api {
                let json: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON under /v1: {body}"));
                assert_eq!(json["error"]["code"], "misdirected_request", "{json}");
            }
        }
        // The service's own token endpoint call is not the only way in: a POST is refused too.
        let response = demo
            .client
            .post(demo.url("/demo/connect"))
            .header(HOST, host)
            .header(ORIGIN, format!("http://{host}"))
            .form(&[("identifier", "rebound")])
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST, "Host {host} on POST /demo/connect");
    }
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("LocalHost:{port}")] {
        let response = demo.client.get(demo.url("/")).header(HOST, &host).send().await.expect("GET /");
        assert_eq!(response.status(), StatusCode::OK, "Host {host}");
    }
    // The whole flow still runs on the loopback name.
    let consent = demo.to_consent("user_host").await;
    let (status, page) = demo.decide(&consent, "approve").await;
    assert_eq!(status, StatusCode::OK, "{page}");
}

/// Nor by posting a form across sites: the demo's forms mint links and issue codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_form_posts_are_refused_and_do_nothing() {
    let built: Demo = callback_gate::demo::build(0, None).await.expect("the demo builds");
    let state = built.app.state().clone();
    let port = built.app.port();
    tokio::spawn(built.app.run_until(std::future::pending()));
    let demo = Running { url: built.url.clone(), api_key: built.api_key.clone(), client: browser() };
    let connect = |origin: Option<String>| {
        let mut request = demo.client.post(demo.url("/demo/connect")).form(&[("identifier", "victim")]);
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        request.send()
    };
    let refused = [
        None,
        Some("null".to_owned()),
        Some("http://evil.example".to_owned()),
        Some(format!("http://127.0.0.1.evil.example:{port}")),
        Some(format!("http://127.0.0.1:{}", port.wrapping_add(1))),
        Some(format!("https://127.0.0.1:{port}")),
    ];
    for origin in refused {
        let response = connect(origin.clone()).await.expect("POST /demo/connect");
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "Origin {origin:?}");
        assert!(response.headers().get(LOCATION).is_none(), "Origin {origin:?}");
    }
    assert_eq!(state.store.count(Table::Links).await.expect("count"), 0, "no link was minted");
    let listed = demo
        .client
        .get(demo.url("/v1/connected-accounts?connection=demo"))
        .bearer_auth(&demo.api_key)
        .send()
        .await
        .expect("API");
    let listed: Value = listed.json().await.expect("json");
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(0), "no account was created: {listed}");

    // The consent form: a cross-site post issues no code and leaves the flow usable.
    let consent = demo.to_consent("user_consent").await;
    let form: Vec<(String, String)> = ["redirect_uri", "state", "scope", "code_challenge"]
        .iter()
        .map(|name| {
            let value = attribute_of(&consent, &format!("name=\"{name}\""), "value").expect("hidden field");
            ((*name).to_owned(), value)
        })
        .chain([("decision".to_owned(), "approve".to_owned())])
        .collect();
    for origin in [None, Some("null"), Some("http://evil.example")] {
        let mut request = demo.client.post(demo.url("/demo/provider/decide")).form(&form);
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        let response = request.send().await.expect("POST /demo/provider/decide");
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "Origin {origin:?}");
        assert!(response.headers().get(LOCATION).is_none(), "no code is issued (Origin {origin:?})");
    }
    let (status, page) = demo.decide(&consent, "approve").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("data-outcome=\"connected\""), "{page}");

    // Every response says Referrer-Policy: no-referrer, under which a browser's form post carries "Origin: null":
    // the demo's pages keep their origin for same-origin requests so that their own forms still work.
    let meta = r#"<meta name="referrer" content="same-origin">"#;
    assert!(demo.app_page().await.contains(meta) && consent.contains(meta));

    // Same origin, in its localhost form too, is accepted.
    let response = demo
        .client
        .post(demo.url("/demo/connect"))
        .header(HOST, format!("localhost:{port}"))
        .header(ORIGIN, format!("http://localhost:{port}"))
        .form(&[("identifier", "user_localhost")])
        .send()
        .await
        .expect("POST /demo/connect");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
}

#[test]
fn the_demo_command_starts_and_says_where_to_go() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let env = Env::minimal().set("TMPDIR", scratch.path().to_str().expect("utf-8 path"));
    let mut command = common::command(&["demo", "--port", "0"], scratch.path(), &env);
    let stderr_path = scratch.path().join("demo.stderr");
    command.stdout(Stdio::piped()).stderr(std::fs::File::create(&stderr_path).expect("stderr file"));
    let mut child = ChildGuard::new(command.spawn().expect("spawn callback-gate demo"));
    let stdout = child.child().stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut printed = Vec::new();
    let (mut url, mut api_key) = (None, None);
    while url.is_none() || api_key.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            panic!(
                "within 10 s the demo must print its URL and API key; it printed:\n{}\n--- stderr ---\n{}",
                printed.join("\n"),
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        };
        if let Some(at) = line.find("http://127.0.0.1:") {
            url.get_or_insert_with(|| {
                line[at..].split_whitespace().next().unwrap_or_default().trim_end_matches('/').to_owned()
            });
        }
        if line.contains("API key") {
            api_key = line.split_whitespace().last().map(str::to_owned);
        }
        printed.push(line);
    }
    let (url, api_key) = (url.expect("url"), api_key.expect("api key"));

    // What it printed works: the demo app answers, and the API accepts the key.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let client = browser();
        let page = client.get(format!("{url}/")).send().await.expect("GET /");
        assert_eq!(page.status(), StatusCode::OK);
        let listed =
            client.get(format!("{url}/v1/connected-accounts")).bearer_auth(&api_key).send().await.expect("API");
        assert_eq!(listed.status(), StatusCode::OK, "the printed API key works");
    });

    // Ctrl+C or SIGTERM stops it cleanly.
    child.terminate();
    let status = child.wait_timeout(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "the demo stops with exit 0 on SIGTERM: {status:?}");
}

/// Every failure button on the demo provider's consent page ends on the page of its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_simulated_failure_shows_its_page() {
    let built: Demo = callback_gate::demo::build(0, None).await.expect("the demo builds");
    tokio::spawn(built.app.run_until(std::future::pending()));
    let demo = Running { url: built.url.clone(), api_key: built.api_key.clone(), client: browser() };
    let expected = [
        ("invalid_scope", "invalid_scope", StatusCode::BAD_GATEWAY),
        ("server_error", "server_error", StatusCode::BAD_GATEWAY),
        ("temporarily_unavailable", "temporarily_unavailable", StatusCode::SERVICE_UNAVAILABLE),
        ("admin_consent", "admin_consent_required", StatusCode::FORBIDDEN),
        ("wrong_iss", "issuer_mismatch", StatusCode::BAD_REQUEST),
        ("token_invalid_grant", "failed_to_exchange_token", StatusCode::BAD_REQUEST),
        ("token_invalid_client", "failed_to_exchange_token", StatusCode::BAD_GATEWAY),
        ("token_500", "failed_to_exchange_token", StatusCode::BAD_GATEWAY),
        ("token_slow", "failed_to_exchange_token", StatusCode::GATEWAY_TIMEOUT),
        ("token_malformed", "failed_to_exchange_token", StatusCode::BAD_GATEWAY),
    ];
    for (index, (button, code, status)) in expected.into_iter().enumerate() {
        let identifier = format!("user_{index}");
        let consent = demo.to_consent(&identifier).await;
        assert!(consent.contains(&format!("value=\"{button}\"")), "the consent page offers {button}");
        let (shown_status, page) = demo.decide(&consent, button).await;
        assert_eq!(code_on(&page).as_deref(), Some(code), "{button}");
        assert_eq!(shown_status, status, "{button}");
        assert!(reference_on(&page).is_some(), "{button}: a reference is shown");
        assert_eq!(demo.account(&identifier).await["last_error"]["code"], code, "{button}");
    }
}

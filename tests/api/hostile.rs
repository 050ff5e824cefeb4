//! Hostile provider text on the callback: markup and script, CRLF, ANSI escapes, text outside RFC 6749's character
//! set, and very long values. Nothing is echoed in production mode, everything is escaped in development mode, and
//! what is stored is bounded.

use callback_gate::store::Table;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

use crate::helpers::{CONNECTION, Options, TestApp, code_on, query_param, reference_on, spawn_with};

/// Values an attacker (or a broken provider) can put in `error` and `error_description`.
fn hostile_values() -> Vec<(&'static str, String)> {
    vec![
        ("script", "<script>alert('x')</script>".into()),
        ("attribute break-out", "\"><img src=x onerror=alert(1)>".into()),
        ("CRLF", "line one\r\nSet-Cookie: stolen=1\r\n\r\n<h1>injected</h1>".into()),
        ("ANSI", "\u{1b}[31mred\u{1b}[0m\u{1b}]0;title\u{7}".into()),
        ("outside RFC 6749", "\u{0}\u{7f}\u{85}\u{2028}\u{202e}é漢字\"\\".into()),
        ("3 KiB", format!("<b>{}</b>", "A".repeat(3 * 1024))),
    ]
}

fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Markup that must never appear unescaped on a page.
const MARKUP: [&str; 5] = ["<script", "<img", "<h1>injected", "\u{1b}", "<b>AAAA"];

async fn hostile_callback(
    app: &TestApp,
    browser_cookie: &dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    state: &str,
    error: &str,
    description: &str,
) -> reqwest::Response {
    let url = app.url(&format!(
        "/connect/callback/{CONNECTION}?error={}&error_description={}&state={state}",
        encode(error),
        encode(description)
    ));
    browser_cookie(app.api.get(url)).send().await.unwrap()
}

#[tokio::test]
async fn production_pages_echo_nothing_the_provider_sent() {
    let app = spawn_with(Options::production()).await;
    for (index, (name, value)) in hostile_values().into_iter().enumerate() {
        // The browser cookie is Secure behind https; the test carries it by hand over plain http.
        let link = app.mint_link(&format!("user_{index}")).await.replace("https://app.example.com", &app.address);
        let start = app.api.get(&link).send().await.unwrap();
        let cookie = start.headers()[SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned();
        let state = query_param(start.headers()[LOCATION].to_str().unwrap(), "state");
        let with_cookie = |request: reqwest::RequestBuilder| request.header(COOKIE, cookie.clone());
        for error in [value.as_str(), "access_denied"] {
            let response = hostile_callback(&app, &with_cookie, &state, error, &value).await;
            let page = if response.status() == StatusCode::SEE_OTHER {
                let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
                with_cookie(app.api.get(app.url(&location))).send().await.unwrap().text().await.unwrap()
            } else {
                response.text().await.unwrap()
            };
            assert!(page.contains("data-reference"), "{name}: a failure page with a reference");
            for markup in MARKUP {
                assert!(!page.contains(markup), "{name}: {markup:?} on the page");
            }
            for echo in ["alert(", "AAAAAAAA", "line one", "red", "漢字", "stolen"] {
                assert!(!page.contains(echo), "{name}: provider text {echo:?} echoed, even if escaped");
            }
            let event = app.reference(&reference_on(&page)).await;
            let stored = event["error_description"].as_str().unwrap_or_default();
            assert!(
                stored.chars().count() <= 2048 + 32,
                "{name}: stored description is bounded ({} chars)",
                stored.len()
            );
        }
    }
    assert!(app.provider.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn development_pages_show_the_raw_values_escaped() {
    let app = spawn_with(Options::default()).await;
    for (name, value) in hostile_values() {
        let (browser, started) = app.begin(name).await;
        let response = app
            .callback(
                &browser,
                &format!("error=access_denied&error_description={}&state={}", encode(&value), started.state),
            )
            .await;
        let (_, page) = app.follow(&browser, response).await;
        assert_eq!(code_on(&page), "access_denied", "{name}");
        for markup in MARKUP {
            assert!(!page.contains(markup), "{name}: {markup:?} unescaped on the page");
        }
        assert!(page.contains("For developers"), "{name}: the developer section is shown");
        if name == "script" {
            let shown =
                page.split("error_description</dt><dd><code>").nth(1).and_then(|rest| rest.split("</code>").next());
            assert_eq!(shown, Some("&#60;script&#62;alert(&#39;x&#39;)&#60;/script&#62;"), "escaped form shown");
        }
        let event = app.reference(&reference_on(&page)).await;
        assert!(event["error_description"].as_str().unwrap().chars().count() <= 2048 + 32, "{name}: bounded");
    }
}

/// Sends one GET with a target too long for ordinary clients and returns the status line and body.
async fn raw_get(app: &TestApp, target: &str, cookie: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n");
    // The server may answer and close before reading everything; a failed write is part of the answer.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    (status, text)
}

#[tokio::test]
async fn a_megabyte_of_text_is_refused_without_storing_anything() {
    let app = spawn_with(Options::default()).await;
    let (browser, started) = app.begin("user_1").await;
    let huge = "A".repeat(1024 * 1024);
    let (status, response) = raw_get(
        &app,
        &format!("/connect/callback/{CONNECTION}?error=access_denied&error_description={huge}&state={}", started.state),
        "",
    )
    .await;
    assert!(status.is_empty() || status.contains(" 4"), "refused: {status:?}");
    assert!(!response.contains("AAAAAAAA"), "nothing echoed");
    assert_eq!(app.count(Table::OutcomeEvents).await, 0, "nothing stored for a refused request");
    // The flow is untouched and can still finish.
    app.mock_token_success(1).await;
    let callback = app.callback(&browser, &format!("code=c&state={}", started.state)).await;
    let (status, _) = app.follow(&browser, callback).await;
    assert_eq!(status, StatusCode::OK);
}

/// Bytes stored under one reference for the values a request can choose.
async fn stored_bytes(app: &TestApp, reference: &str) -> i64 {
    assert!(callback_gate::telemetry::is_reference(reference));
    let unauthenticated = if app.database_url.starts_with("postgres") {
        "SELECT reference, error, error_description, error_uri, iss, detail, connection FROM unauthenticated_events"
            .to_owned()
    } else {
        // On SQLite they are lines of JSON in batches, each line starting with its reference.
        let start = format!(r#"{{"reference":"{reference}""#);
        format!(
            "SELECT json_extract(line, '$.reference') AS reference, json_extract(line, '$.error') AS error,
                    json_extract(line, '$.error_description') AS error_description,
                    json_extract(line, '$.error_uri') AS error_uri, json_extract(line, '$.iss') AS iss,
                    json_extract(line, '$.detail') AS detail, json_extract(line, '$.connection') AS connection
             FROM (SELECT CASE instr(rest, char(10)) WHEN 0 THEN rest
                          ELSE substr(rest, 1, instr(rest, char(10)) - 1) END AS line
                   FROM (SELECT substr(events, instr(events, '{start}')) AS rest
                         FROM unauthenticated_event_batches WHERE instr(events, '{start}') > 0))"
        )
    };
    let rows = app
        .sql_rows(&format!(
            "SELECT COALESCE(length(error), 0) + COALESCE(length(error_description), 0) + COALESCE(length(error_uri), 0)
                  + COALESCE(length(iss), 0) + length(detail) + COALESCE(length(connection), 0)
             FROM (SELECT reference, error, error_description, error_uri, iss, detail, connection FROM outcome_events
                   UNION ALL
                   {unauthenticated}) AS events
             WHERE reference = '{reference}'"
        ))
        .await;
    rows[0][0].as_deref().expect("a length").parse().expect("a number")
}

/// A callback that matches no flow can be sent by anyone: what it leaves behind for 30 days is a short digest of
/// what it sent (enough to match the log line), not kilobytes of the sender's text.
#[tokio::test]
async fn a_callback_matching_no_flow_stores_a_bounded_digest() {
    let app = spawn_with(Options::default()).await;
    let description = "D".repeat(4 * 1024);
    let uri = format!("https://evil.example/{}", "u".repeat(1024));
    let iss = format!("https://issuer.example/{}", "i".repeat(1024));
    let browser = crate::helpers::Browser::new();
    let forged = [
        // No state at all.
        format!("error=access_denied&error_description={description}&error_uri={}&iss={}", encode(&uri), encode(&iss)),
        // A state this deployment never signed.
        format!("state={}&error=access_denied&error_description={description}", "S".repeat(3 * 1024)),
    ];
    for query in forged {
        let response = app.callback(&browser, &query).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let page = response.text().await.unwrap();
        assert!(matches!(code_on(&page).as_str(), "state_missing" | "state_invalid"));
        let reference = reference_on(&page);
        let event = app.reference(&reference).await;
        app.count(Table::OutcomeEvents).await;
        let bytes = stored_bytes(&app, &reference).await;
        assert!(bytes < 1800, "{bytes} bytes stored for a request that matched no flow: {event}");
        if let Some(kept) = event["error_description"].as_str() {
            assert!(kept.starts_with("DDDD") && kept.contains("4096 bytes, sha256 "), "{kept}");
        }
    }
    // A connection name of kilobytes in the path is cut the same way.
    let response = browser.get(&app.url(&format!("/connect/callback/{}?state=x", "c".repeat(4 * 1024)))).await;
    let reference = reference_on(&response.text().await.unwrap());
    app.count(Table::OutcomeEvents).await;
    assert!(stored_bytes(&app, &reference).await < 1200);
}

/// However many forged callbacks arrive, only the newest `limits.unmatched_references` of their references are
/// kept, and the references of real flows are never the ones that go.
#[tokio::test]
async fn references_of_requests_matching_no_flow_are_capped() {
    let limits = format!("{}\nunmatched_references = 5", Options::default().limits);
    let app = spawn_with(Options { limits, ..Options::default() }).await;
    let (browser, started) = app.begin("user_1").await;
    let response = app.callback(&browser, &format!("error=access_denied&state={}", started.state)).await;
    let (_, page) = app.follow(&browser, response).await;
    let flow_reference = reference_on(&page);

    let stranger = crate::helpers::Browser::new();
    let mut references = Vec::new();
    for n in 0..12 {
        let response = app.callback(&stranger, &format!("error=access_denied&error_description=forged-{n}")).await;
        references.push(reference_on(&response.text().await.unwrap()));
        // Separate batches, as from requests spread over time.
        if n % 4 == 3 {
            app.count(Table::OutcomeEvents).await;
        }
    }
    assert_eq!(app.count(Table::OutcomeEvents).await, 6, "five unmatched references and the flow's");
    assert_eq!(app.reference(&flow_reference).await["code"], "access_denied");
    let newest = references.last().unwrap();
    assert_eq!(app.reference(newest).await["code"], "state_missing");
    let oldest = app.api.get(app.url(&format!("/v1/references/{}", references[0]))).bearer_auth(&app.api_key);
    assert_eq!(oldest.send().await.unwrap().status(), StatusCode::NOT_FOUND);
}

/// References are kept for 30 days, the unmatched ones as well as a flow's; a sweep within that time keeps both.
#[tokio::test]
async fn references_are_swept_after_their_retention() {
    let app = spawn_with(Options::default()).await;
    let (browser, started) = app.begin("user_1").await;
    let response = app.callback(&browser, &format!("error=access_denied&state={}", started.state)).await;
    let (_, page) = app.follow(&browser, response).await;
    let flow_reference = reference_on(&page);
    let stranger = crate::helpers::Browser::new();
    let unmatched = reference_on(&app.callback(&stranger, "error=access_denied").await.text().await.unwrap());
    assert_eq!(app.count(Table::OutcomeEvents).await, 2);

    let now = time::OffsetDateTime::now_utc();
    app.store.sweep(now + time::Duration::days(29)).await.expect("sweep");
    assert_eq!(app.count(Table::OutcomeEvents).await, 2, "within 30 days both are kept");
    assert_eq!(app.reference(&unmatched).await["code"], "state_missing");

    app.store.sweep(now + time::Duration::days(31)).await.expect("sweep");
    assert_eq!(app.count(Table::OutcomeEvents).await, 0, "after 30 days neither is");
    for reference in [&flow_reference, &unmatched] {
        let lookup = app.api.get(app.url(&format!("/v1/references/{reference}"))).bearer_auth(&app.api_key);
        assert_eq!(lookup.send().await.unwrap().status(), StatusCode::NOT_FOUND);
    }
}

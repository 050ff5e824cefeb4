//! Abuse: oversized requests, floods of starts and callbacks, and hostile redirect targets. Each is refused with a
//! clear answer, and the store stays bounded.

use std::time::Duration;

use callback_gate::store::Table;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Browser, CONNECTION, Options, TestApp, spawn_app, spawn_with};

fn strict_limits() -> Options {
    Options { limits: "starts_per_minute = 5\ncallbacks_per_minute = 5\nburst = 5".into(), ..Options::default() }
}

#[tokio::test]
async fn oversized_requests_get_the_safe_page_or_json() {
    let app = spawn_app().await;
    let long = "A".repeat(10 * 1024);
    let response = app.api.get(app.url(&format!("/connect/callback/{CONNECTION}?state={long}"))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::URI_TOO_LONG);
    assert!(response.headers()["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    let page = response.text().await.unwrap();
    assert!(page.contains("This address is too long") && !page.contains("AAAAAAAA"));

    let mut request = app.api.get(app.url("/connect/callback/mock"));
    for i in 0..80 {
        request = request.header(format!("x-filler-{i}"), "x");
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(response.text().await.unwrap().contains("This request contains too much information"));
    let response = app.api.get(app.url("/healthz")).header("x-big", "B".repeat(20 * 1024)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    let body = json!({ "connection": CONNECTION, "identifier": "u", "padding": "C".repeat(100 * 1024) });
    let response =
        app.api.post(app.url("/v1/authorization-links")).bearer_auth(&app.api_key).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "payload_too_large");
    assert_eq!(app.count(Table::Links).await, 0);
    assert_eq!(app.count(Table::OutcomeEvents).await, 0, "refused requests store nothing");
}

#[tokio::test]
async fn a_flood_of_callbacks_from_one_client_is_rate_limited() {
    let app = spawn_with(strict_limits()).await;
    let browser = Browser::new();
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(browser.get(&app.url(&format!("/connect/callback/{CONNECTION}?code=c&state=nope"))).await);
    }
    let limited: Vec<_> = statuses.iter().filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS).collect();
    assert!(limited.len() >= 6, "at most the burst passes: {} limited", limited.len());
    assert_eq!(limited[0].headers()["retry-after"], "60");
    assert!(limited[0].headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let last = statuses.pop().unwrap();
    assert!(last.text().await.unwrap().contains("Too many attempts"));
    assert!(app.count(Table::OutcomeEvents).await <= 5, "refused callbacks store nothing");
    // Other routes are not limited.
    assert_eq!(app.api.get(app.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
}

/// `strict_limits` with `trusted_proxies` set to `ranges`.
fn strict_behind(ranges: &str) -> Options {
    Options {
        limits: format!("starts_per_minute = 5\ncallbacks_per_minute = 5\nburst = 5\ntrusted_proxies = {ranges}"),
        ..Options::default()
    }
}

/// How many of the starts of `link`, each sent with one `X-Forwarded-For` value from `forwarded`, were refused.
async fn limited_starts(app: &TestApp, link: &str, forwarded: impl IntoIterator<Item = String>) -> usize {
    let mut limited = 0;
    for value in forwarded {
        let response = app.api.get(link).header("x-forwarded-for", value).send().await.unwrap();
        assert!(matches!(response.status(), StatusCode::SEE_OTHER | StatusCode::TOO_MANY_REQUESTS));
        limited += usize::from(response.status() == StatusCode::TOO_MANY_REQUESTS);
    }
    limited
}

#[tokio::test]
async fn forwarded_addresses_are_ignored_unless_the_peer_is_a_trusted_proxy() {
    let app = spawn_with(strict_limits()).await;
    let link = app.mint_link("user_1").await;
    let limited = limited_starts(&app, &link, (0..10).map(|i| format!("203.0.113.{i}"))).await;
    assert!(limited >= 5, "a spoofed X-Forwarded-For does not buy a new allowance ({limited} limited)");

    // The test's peer is 127.0.0.1: a list that does not hold it changes nothing.
    let elsewhere = spawn_with(strict_behind(r#"["10.0.0.0/8", "::1"]"#)).await;
    let link = elsewhere.mint_link("user_1").await;
    let limited = limited_starts(&elsewhere, &link, (0..10).map(|i| format!("203.0.113.{i}"))).await;
    assert!(limited >= 5, "only a trusted peer's X-Forwarded-For is believed ({limited} limited)");

    let trusting = spawn_with(strict_behind(r#"["127.0.0.1"]"#)).await;
    let link = trusting.mint_link("user_1").await;
    let limited = limited_starts(&trusting, &link, (0..10).map(|i| format!("203.0.113.{i}"))).await;
    assert_eq!(limited, 0, "each client the trusted proxy reports has its own allowance");
}

#[tokio::test]
async fn the_client_is_the_right_most_address_that_is_not_a_trusted_proxy() {
    let app = spawn_with(strict_behind(r#"["127.0.0.1", "10.0.0.0/8"]"#)).await;
    let link = app.mint_link("user_1").await;
    // Behind two proxies (10.x, then the peer): the entry left of the inner proxy's is the client.
    let limited = limited_starts(&app, &link, (0..10).map(|i| format!("198.51.100.{i}, 10.0.0.{i}"))).await;
    assert_eq!(limited, 0, "each client counts on its own, whichever inner proxy it came through");
    let limited = limited_starts(&app, &link, (0..10).map(|i| format!("198.51.100.200, 10.0.0.{i}"))).await;
    assert!(limited >= 5, "one client through several inner proxies is one client ({limited} limited)");
}

#[tokio::test]
async fn spoofed_left_most_entries_cannot_dodge_the_limit() {
    let app = spawn_with(strict_behind(r#"["127.0.0.1"]"#)).await;
    let link = app.mint_link("user_1").await;
    // The client writes anything it likes; the trusted proxy appends the address it saw.
    let forged = (0..10).map(|i| format!("203.0.113.{i}, 10.9.9.{i}, 198.51.100.7"));
    let limited = limited_starts(&app, &link, forged).await;
    assert!(limited >= 5, "forged entries left of the proxy's do not buy an allowance ({limited} limited)");
    // Nor does a forged header of its own in front of the proxy's, or garbage.
    let app = spawn_with(strict_behind(r#"["127.0.0.1"]"#)).await;
    let link = app.mint_link("user_1").await;
    let mut limited = 0;
    for i in 0..10 {
        let response = app
            .api
            .get(&link)
            .header("x-forwarded-for", format!("garbage-{i}, 203.0.113.{i}"))
            .header("x-forwarded-for", "198.51.100.7")
            .send()
            .await
            .unwrap();
        limited += usize::from(response.status() == StatusCode::TOO_MANY_REQUESTS);
    }
    assert!(limited >= 5, "only the proxy's own entry counts ({limited} limited)");
}

#[tokio::test]
async fn ipv6_clients_share_an_allowance_per_64() {
    let app = spawn_with(strict_behind(r#"["127.0.0.1"]"#)).await;
    let link = app.mint_link("user_1").await;
    let same_64 = (0..10).map(|i| format!("2001:db8:7:7:{i:x}::{i:x}"));
    let limited = limited_starts(&app, &link, same_64).await;
    assert!(limited >= 5, "rotating addresses inside one /64 buys nothing ({limited} limited)");
    let other_64s = (0..10).map(|i| format!("2001:db8:7:{:x}::1", i + 100));
    assert_eq!(limited_starts(&app, &link, other_64s).await, 0, "each /64 has its own allowance");
}

#[tokio::test]
async fn the_default_limits_serve_150_starts_and_callbacks_in_a_minute_from_one_address() {
    let app = spawn_with(Options { limits: String::new(), ..Options::default() }).await;
    let link = app.mint_link("user_1").await;
    let started = std::time::Instant::now();
    for i in 0..150 {
        let status = app.api.get(&link).send().await.unwrap().status();
        assert_eq!(status, StatusCode::SEE_OTHER, "start {i} of 150 is served");
    }
    for i in 0..150 {
        let status = app.api.get(app.url(&format!("/connect/callback/{CONNECTION}?code=c&state=s{i}"))).send().await;
        assert_eq!(status.unwrap().status(), StatusCode::BAD_REQUEST, "callback {i} of 150 is answered, not refused");
    }
    assert!(started.elapsed() < Duration::from_secs(60), "the burst fits in a minute");
}

#[tokio::test]
async fn tight_configured_limits_still_refuse_starts() {
    let app = spawn_with(strict_limits()).await;
    let link = app.mint_link("user_1").await;
    let limited = limited_starts(&app, &link, (0..10).map(|_| "198.51.100.7".to_owned())).await;
    assert!(limited >= 5, "{limited} limited");
}

#[tokio::test]
async fn a_flood_of_starts_leaves_the_store_bounded() {
    let app = spawn_with(Options {
        limits: "starts_per_minute = 100000\ncallbacks_per_minute = 100000\nburst = 100000\nflows_per_identifier = 5\nlinks_per_identifier = 3".into(),
        ..Options::default()
    })
    .await;
    let link = app.mint_link("victim").await;
    let flood = futures::future::join_all((0..200).map(|_| {
        let link = link.clone();
        let client = app.api.clone();
        async move { client.get(&link).send().await.unwrap().status() }
    }))
    .await;
    assert!(flood.iter().all(|s| *s == StatusCode::SEE_OTHER));
    assert_eq!(app.count(Table::Flows).await, 5, "only the newest started flows are kept");

    // The newest flow still finishes.
    app.mock_token_success(1).await;
    let (browser, started) = {
        let browser = Browser::new();
        let started = app.start(&browser, &link).await;
        (browser, started)
    };
    let callback = app.callback(&browser, &format!("code=c&state={}", started.state)).await;
    let (status, _) = app.follow(&browser, callback).await;
    assert_eq!(status, StatusCode::OK);

    for _ in 0..10 {
        app.mint_link("victim").await;
    }
    assert_eq!(app.count(Table::Links).await, 3, "only the newest links are kept");
    assert_eq!(app.count(Table::Accounts).await, 1);
}

#[tokio::test]
async fn the_sweeper_removes_expired_links_and_old_flows() {
    let app = spawn_app().await;
    for i in 0..3 {
        let (_, _) = app.begin(&format!("user_{i}")).await;
    }
    assert_eq!(app.count(Table::Links).await, 3);
    assert_eq!(app.count(Table::Flows).await, 3);
    let later = time::OffsetDateTime::now_utc() + Duration::from_secs(2 * 24 * 60 * 60);
    let removed = app.store.sweep(later).await.unwrap();
    assert_eq!(removed, 6);
    assert_eq!(app.count(Table::Links).await, 0);
    assert_eq!(app.count(Table::Flows).await, 0);
    assert_eq!(app.count(Table::Accounts).await, 3, "accounts are never swept");
}

#[tokio::test]
async fn redirect_targets_of_every_class_are_refused() {
    let app = spawn_app().await;
    let refused = [
        "https://evil.example.com/",
        "//evil.example.com/",
        "https:evil.example.com",
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)",
        "https://app.example.com@evil.example.com/",
        "https://user:pw@app.example.com/",
        "https://app.example.com\\@evil.example.com/",
        "https:\\\\evil.example.com/",
        "https://app.example.com\t.evil.example.com/",
        "https://app.example.com\n.evil.example.com/",
        "https://app.example.com%2F%2Fevil.example.com/",
        "https://app.example.com%2f@evil.example.com/",
        "https://app.example.com\u{ff0f}evil.example.com/",
        "https://app\u{ff0e}example\u{ff0e}com/",
        "https://app.example.com.evil.example.com/",
        "https://app.example.com:8443/",
        "http://app.example.com/",
        "ftp://app.example.com/",
        " https://app.example.com/",
        "https://app.example.com/\u{0}",
    ];
    for return_to in refused {
        let response =
            app.post_link(json!({ "connection": CONNECTION, "identifier": "u", "return_to": return_to })).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{return_to:?} must be refused");
    }
    assert_eq!(app.count(Table::Links).await, 0);
    for accepted in
        ["https://app.example.com/", "https://app.example.com/settings?tab=integrations#x", &app.url("/back")]
    {
        let response =
            app.post_link(json!({ "connection": CONNECTION, "identifier": "u", "return_to": accepted })).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{accepted} is allowed");
    }
}

#[tokio::test]
async fn plain_http_loopback_returns_are_for_development_only() {
    let app = spawn_with(Options::production()).await;
    let response =
        app.post_link(json!({ "connection": CONNECTION, "identifier": "u", "return_to": app.url("/back") })).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn urls_come_from_public_url_never_from_host_or_forwarded_headers() {
    let app = spawn_with(Options { public_url: Some("https://app.example.com".into()), ..Options::default() }).await;
    let link = app.mint_link("user_1").await.replace("https://app.example.com", &app.address);
    let response = app
        .api
        .get(&link)
        .header("host", "evil.example.com")
        .header("x-forwarded-host", "evil.example.com")
        .header("x-forwarded-proto", "http")
        .header("forwarded", "host=evil.example.com;proto=http")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()["location"].to_str().unwrap();
    assert_eq!(crate::helpers::query_param(location, "redirect_uri"), "https://app.example.com/connect/callback/mock");
    assert!(!location.contains("evil"));
    let minted = app
        .api
        .post(app.url("/v1/authorization-links"))
        .bearer_auth(&app.api_key)
        .header("x-forwarded-host", "evil.example.com")
        .json(&json!({ "connection": CONNECTION, "identifier": "u" }))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert!(minted["link"].as_str().unwrap().starts_with("https://app.example.com/connect/start/"));
}

#[tokio::test]
async fn pages_load_nothing_from_other_origins_and_run_no_script() {
    let app = spawn_app().await;
    app.mock_token_success(1).await;
    let (browser, started) = app.begin("user_1").await;
    let callback = app.callback(&browser, &format!("code=c&state={}", started.state)).await;
    let (_, success) = app.follow(&browser, callback).await;
    let failure = browser.get(&app.url("/connect/callback/mock?code=c&state=unknown")).await.text().await.unwrap();
    let notice = browser.get(&app.url("/nothing/here")).await.text().await.unwrap();
    for page in [success, failure, notice] {
        assert!(
            !page.contains("<script") && !page.contains("<iframe") && !has_event_handler(&page),
            "no script: {page}"
        );
        // Loaded resources: every src attribute and every <link> element's href.
        let sources = page.split(" src=\"").skip(1).map(|rest| rest.split('"').next().unwrap());
        let links = page.split("<link ").skip(1).filter_map(|rest| {
            let element = rest.split('>').next().unwrap();
            element.split("href=\"").nth(1).map(|href| href.split('"').next().unwrap())
        });
        for target in sources.chain(links) {
            assert!(target.starts_with('/') && !target.starts_with("//"), "only same-origin resources: {target}");
        }
    }
}

/// Whether markup carries an inline event handler attribute such as `onclick=`.
fn has_event_handler(page: &str) -> bool {
    page.match_indices(" on").any(|(at, _)| {
        let name: String = page[at + 3..].chars().take_while(char::is_ascii_alphabetic).collect();
        !name.is_empty() && page[at + 3 + name.len()..].starts_with('=')
    })
}

//! The callback and the links that lead to it: every way a flow can be refused, and what each refusal leaves
//! behind.
//!
//! Each test reads as one rule: the request, the page the browser gets (its status, its `data-code`, the next
//! steps it offers, a reference that resolves to the raw details), the account's status, and what was stored or
//! sent to the provider's token endpoint.

use std::time::Duration;

use callback_gate::store::Table;
use futures::future::join_all;
use reqwest::StatusCode;
use reqwest::header::{LOCATION, SET_COOKIE};
use serde_json::Value;

use crate::helpers::{
    Browser, CONNECTION, Options, Started, TestApp, code_on, new_secret_key, reference_on, spawn_app, spawn_with,
};

// ---------------------------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------------------------

/// A failure page as the browser saw it, with the record its reference resolves to.
struct Failed {
    status: StatusCode,
    page: String,
    code: String,
    reference: String,
    record: Value,
}

impl Failed {
    async fn read(app: &TestApp, status: StatusCode, page: String) -> Self {
        assert!(page.contains("data-outcome=\"failed\""), "expected a failure page, got:\n{page}");
        let code = code_on(&page);
        let reference = reference_on(&page);
        let record = app.reference(&reference).await;
        assert_eq!(record["code"], code, "the reference records the code the page shows");
        Self { status, page, code, reference, record }
    }

    /// The href of the link offered as `data-action="{name}"`, unescaped.
    fn action(&self, name: &str) -> Option<String> {
        action_on(&self.page, name)
    }

    /// The part of the page every mode shows: everything before the development-only details.
    fn public_part(&self) -> &str {
        let end = self.page.find("class=\"developer\"").unwrap_or(self.page.len());
        &self.page[..end]
    }
}

/// A failure page rendered in answer to the request itself, without a redirect.
async fn refused(app: &TestApp, response: reqwest::Response) -> Failed {
    assert!(response.headers().get(LOCATION).is_none(), "a refusal is rendered in place, not redirected");
    let status = response.status();
    let page = response.text().await.expect("body");
    Failed::read(app, status, page).await
}

/// The failure on the result page that a callback redirected the browser to.
async fn on_result_page(app: &TestApp, browser: &Browser, response: reqwest::Response) -> Failed {
    let (status, page) = app.follow(browser, response).await;
    Failed::read(app, status, page).await
}

fn action_on(page: &str, name: &str) -> Option<String> {
    let at = page.find(&format!("data-action=\"{name}\""))?;
    let tag = &page[page[..at].rfind("<a ")?..at];
    let start = tag.find("href=\"")? + "href=\"".len();
    let end = tag[start..].find('"')?;
    Some(html_unescape(&tag[start..start + end]))
}

fn html_unescape(text: &str) -> String {
    text.replace("&#60;", "<").replace("&#62;", ">").replace("&#34;", "\"").replace("&#39;", "'").replace("&#38;", "&")
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&#38;").replace('<', "&#60;").replace('>', "&#62;").replace('"', "&#34;").replace('\'', "&#39;")
}

fn percent_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// POST requests received by the provider's token endpoints (of every connection).
async fn token_requests(app: &TestApp) -> usize {
    app.provider
        .received_requests()
        .await
        .expect("request recording is on")
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/token"))
        .count()
}

/// The callback query a provider sends back after consent.
fn granted(started: &Started) -> String {
    format!("code=the-code&state={}", started.state)
}

/// `state` with its last character replaced by another valid one.
fn altered(state: &str) -> String {
    let (head, last) = state.split_at(state.len() - 1);
    format!("{head}{}", if last == "A" { "B" } else { "A" })
}

async fn status_of(app: &TestApp, identifier: &str) -> Value {
    app.account(identifier).await["status"].clone()
}

/// Asserts the account's last error is the failure on `failed`'s page.
async fn assert_last_error_is(app: &TestApp, identifier: &str, failed: &Failed) {
    let account = app.account(identifier).await;
    assert_eq!(account["last_error"]["code"], failed.code, "last_error: {account}");
    assert_eq!(account["last_error"]["reference"], failed.reference, "last_error: {account}");
}

// ---------------------------------------------------------------------------------------------------------------
// Links
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_link_that_is_not_ours_is_404_link_invalid_and_starts_nothing() {
    let app = spawn_app().await;
    let real = app.mint_link("user_1").await;
    let (id, signature) = real.rsplit('/').next().unwrap().split_once('.').expect("links are {id}.{signature}");
    let signed_but_unknown = callback_gate::flow::link_token(&app.state.settings, "no-such-link-id");
    for link in [
        app.url("/connect/start/nope"),
        app.url(&format!("/connect/start/{id}.{}", altered(signature))),
        app.url(&format!("/connect/start/{id}.")),
        real[..real.len() - 5].to_owned(),
        app.url(&format!("/connect/start/{id}")),
        app.url(&format!("/connect/start/{signed_but_unknown}")),
    ] {
        let browser = Browser::new();
        let response = browser.get(&link).await;
        assert!(response.headers().get(SET_COOKIE).is_none(), "{link}: no browser binding");
        let failed = refused(&app, response).await;
        assert_eq!(failed.status, StatusCode::NOT_FOUND, "{link}");
        assert_eq!(failed.code, "link_invalid", "{link}");
        assert!(failed.action("return").is_some(), "{link}: the way back");
        assert!(failed.action("restart").is_none(), "{link}: nothing to restart");
    }
    assert_eq!(app.count(Table::Flows).await, 0);
    assert_eq!(app.count(Table::OutcomeEvents).await, 6);
    let account = app.account("user_1").await;
    assert_eq!(account["status"], "PENDING_AUTH");
    assert_eq!(account["last_error"], Value::Null, "a foreign link does not speak for the account");
}

#[tokio::test]
async fn an_expired_link_is_410_link_expired_and_offers_only_the_way_back() {
    let app = spawn_with(Options { link_ttl_seconds: 1, ..Options::default() }).await;
    let link = app.mint_link("user_1").await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let failed = refused(&app, Browser::new().get(&link).await).await;
    assert_eq!(failed.status, StatusCode::GONE);
    assert_eq!(failed.code, "link_expired");
    assert_eq!(failed.record["connection"], CONNECTION);
    assert_eq!(failed.action("return").as_deref(), Some(&*app.url("/settings")));
    assert!(failed.action("restart").is_none(), "an expired link cannot be restarted");
    assert_eq!(app.count(Table::Flows).await, 0);
    assert_eq!(status_of(&app, "user_1").await, "PENDING_AUTH");
}

// ---------------------------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_callback_without_state_is_400_state_missing_rendered_in_place() {
    let app = spawn_app().await;
    app.mock_token_success(0).await;
    let (browser, _started) = app.begin("user_1").await;
    for query in ["code=the-code", "code=the-code&state=", "error=access_denied"] {
        let failed = refused(&app, app.callback(&browser, query).await).await;
        assert_eq!(failed.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(failed.code, "state_missing", "{query}");
        assert_eq!(failed.record["connection"], CONNECTION);
        assert_eq!(failed.record["flow_id"], Value::Null);
        assert!(failed.action("return").is_some());
        assert!(failed.action("restart").is_none());
    }
    let no_query = browser.get(&app.url("/connect/callback/mock")).await;
    let failed = refused(&app, no_query).await;
    assert_eq!((failed.status, &*failed.code), (StatusCode::BAD_REQUEST, "state_missing"));

    assert_eq!(token_requests(&app).await, 0);
    let account = app.account("user_1").await;
    assert_eq!(account["status"], "PENDING_AUTH");
    assert_eq!(account["last_error"], Value::Null);
}

#[tokio::test]
async fn an_unknown_or_altered_state_is_400_state_invalid_and_leaves_the_flow_usable() {
    let app = spawn_app().await;
    app.mock_token_success(1).await;
    let (browser, started) = app.begin("user_1").await;
    let unknown = callback_gate::crypto::random_token::<32>();
    let truncated = &started.state[..started.state.len() - 1];
    for state in [unknown.as_str(), &altered(&started.state), truncated] {
        let query = format!("code=the-code&state={state}");
        let failed = refused(&app, app.callback(&browser, &query).await).await;
        assert_eq!(failed.status, StatusCode::BAD_REQUEST, "{state}");
        assert_eq!(failed.code, "state_invalid", "{state}");
        assert!(
            failed.record["detail"].as_str().unwrap().starts_with("the state's signature does not verify"),
            "refused before any lookup: {}",
            failed.record["detail"]
        );
        assert_eq!(failed.record["flow_id"], Value::Null);
        assert!(failed.action("return").is_some());
    }
    assert_eq!(token_requests(&app).await, 0, "no state, no token request");
    assert_eq!(app.account("user_1").await["last_error"], Value::Null);

    let (status, page) = app.follow(&browser, app.callback(&browser, &granted(&started)).await).await;
    assert_eq!(status, StatusCode::OK, "the real callback still connects:\n{page}");
    assert_eq!(status_of(&app, "user_1").await, "ACTIVE");
}

#[tokio::test]
async fn a_signed_state_whose_flow_is_gone_is_state_invalid() {
    let app = spawn_app().await;
    let (browser, started) = app.begin("user_1").await;
    // The sweeper deletes old flows; their states still carry a valid signature.
    app.sql("DELETE FROM flows").await;
    let failed = refused(&app, app.callback(&browser, &granted(&started)).await).await;
    assert_eq!((failed.status, &*failed.code), (StatusCode::BAD_REQUEST, "state_invalid"));
    assert_eq!(failed.record["detail"], "the state matches no flow");
    assert_eq!(token_requests(&app).await, 0);
}

#[tokio::test]
async fn a_flow_started_before_a_key_rotation_finishes_while_the_old_key_is_previous() {
    let old_key = new_secret_key();
    let before = spawn_with(Options { secret_key: Some(old_key.clone()), ..Options::default() }).await;
    let (browser_1, started_1) = before.begin("user_1").await;
    let (browser_2, started_2) = before.begin("user_2").await;
    let database = Some(before.database_url.clone());

    // The old key as previous: a flow in progress across the rotation still finishes.
    let options = Options { previous_keys: Some(old_key), database: database.clone(), ..Options::default() };
    let rotated = spawn_with(Options { secret_key: Some(new_secret_key()), ..options }).await;
    rotated.mock_token_success(1).await;
    let (status, page) = rotated.follow(&browser_1, rotated.callback(&browser_1, &granted(&started_1)).await).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(status_of(&rotated, "user_1").await, "ACTIVE");

    // Without it, the state no longer verifies: refused before the store is asked, and the user starts again.
    let dropped = spawn_with(Options { secret_key: Some(new_secret_key()), database, ..Options::default() }).await;
    let failed = refused(&dropped, dropped.callback(&browser_2, &granted(&started_2)).await).await;
    assert_eq!((failed.status, &*failed.code), (StatusCode::BAD_REQUEST, "state_invalid"));
    assert!(
        failed.record["detail"].as_str().unwrap().contains("signed with a secret key this deployment no longer holds")
    );
    assert!(failed.action("return").is_some());
    assert_eq!(token_requests(&dropped).await, 0);
}

#[tokio::test]
async fn an_expired_flow_ends_on_session_expired_and_restarting_gets_a_new_state() {
    let app = spawn_with(Options { flow_ttl_seconds: 1, ..Options::default() }).await;
    app.mock_token_success(0).await;
    let (browser, started) = app.begin("user_1").await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let response = app.callback(&browser, &granted(&started)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let failed = on_result_page(&app, &browser, response).await;
    assert_eq!(failed.status, StatusCode::BAD_REQUEST);
    assert_eq!(failed.code, "session_expired");
    assert_eq!(failed.record["identifier"], "user_1");
    assert!(failed.action("return").is_some());
    let restart = failed.action("restart").expect("the link is still valid, so the page offers a restart");
    assert!(restart.starts_with("/connect/start/"), "{restart}");
    assert_eq!(token_requests(&app).await, 0);
    let account = app.account("user_1").await;
    assert_eq!(account["status"], "PENDING_AUTH");
    assert_last_error_is(&app, "user_1", &failed).await;

    let again = app.start(&browser, &app.url(&restart)).await;
    assert_eq!(again.authorize_url.path(), "/authorize");
    assert_ne!(again.state, started.state, "a restart is a new flow with a new state");
    assert_eq!(app.count(Table::Flows).await, 2);
    assert_eq!(token_requests(&app).await, 0);
}

// ---------------------------------------------------------------------------------------------------------------
// Browser binding and single use
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_callback_from_another_browser_is_403_browser_mismatch_and_does_not_burn_the_flow() {
    let app = spawn_app().await;
    app.mock_token_success(1).await;
    let (browser, started) = app.begin("user_1").await;
    let (other_browser, _other_flow) = app.begin("user_2").await;

    for (who, stranger) in [("no cookie", &Browser::new()), ("another browser's cookie", &other_browser)] {
        let failed = refused(&app, app.callback(stranger, &granted(&started)).await).await;
        assert_eq!(failed.status, StatusCode::FORBIDDEN, "{who}");
        assert_eq!(failed.code, "browser_mismatch", "{who}");
        assert!(failed.record["flow_id"].is_string(), "{who}");
        assert_eq!(failed.record["identifier"], Value::Null, "{who}: a stranger does not speak for the account");
        assert!(failed.action("return").is_some(), "{who}");
    }
    assert_eq!(token_requests(&app).await, 0, "a mismatched browser never reaches the token endpoint");
    assert_eq!(app.account("user_1").await["last_error"], Value::Null);
    assert_eq!(app.account("user_2").await["last_error"], Value::Null);

    let (status, page) = app.follow(&browser, app.callback(&browser, &granted(&started)).await).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("data-outcome=\"connected\""));
    assert_eq!(status_of(&app, "user_1").await, "ACTIVE");
    assert_eq!(status_of(&app, "user_2").await, "PENDING_AUTH");
    app.provider.verify().await;
}

#[tokio::test]
async fn replaying_a_used_callback_is_409_flow_already_used_and_exchanges_once() {
    let app = spawn_app().await;
    app.mock_token_success(1).await;
    let (browser, started) = app.begin("user_1").await;
    let (status, _) = app.follow(&browser, app.callback(&browser, &granted(&started)).await).await;
    assert_eq!(status, StatusCode::OK);

    let failed = refused(&app, app.callback(&browser, &granted(&started)).await).await;
    assert_eq!(failed.status, StatusCode::CONFLICT);
    assert_eq!(failed.code, "flow_already_used");
    assert!(failed.action("return").is_some());
    assert!(failed.action("restart").is_none());

    assert_eq!(token_requests(&app).await, 1, "the code is exchanged exactly once");
    let account = app.account("user_1").await;
    assert_eq!(account["status"], "ACTIVE");
    assert_eq!(account["last_error"], Value::Null, "a replay does not speak for the account");
    assert!(app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.is_some());
    app.provider.verify().await;
}

#[tokio::test]
async fn twenty_concurrent_callbacks_exchange_the_code_exactly_once() {
    let app = spawn_app().await;
    app.mock_token_success(1).await;
    let (browser, started) = app.begin("user_1").await;
    let query = granted(&started);

    let responses = join_all((0..20).map(|_| app.callback(&browser, &query))).await;
    let redirected = responses.iter().filter(|r| r.status() == StatusCode::SEE_OTHER).count();
    assert_eq!(redirected, 1, "exactly one callback wins the flow");
    let mut refusals = 0;
    for response in responses {
        if response.status() == StatusCode::SEE_OTHER {
            let (status, _) = app.follow(&browser, response).await;
            assert_eq!(status, StatusCode::OK);
        } else {
            let failed = refused(&app, response).await;
            assert_eq!((failed.status, &*failed.code), (StatusCode::CONFLICT, "flow_already_used"));
            refusals += 1;
        }
    }
    assert_eq!(refusals, 19);

    assert_eq!(token_requests(&app).await, 1);
    let account = app.account("user_1").await;
    assert_eq!(account["status"], "ACTIVE");
    assert_eq!(account["last_error"], Value::Null);
    assert_eq!(app.count(Table::Accounts).await, 1);
    app.provider.verify().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Issuer and connection
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_wrong_iss_is_issuer_mismatch_and_the_right_one_connects() {
    let app =
        spawn_with(Options { connection_extra: "issuer = \"https://login.example.com\"".into(), ..Options::default() })
            .await;
    app.mock_token_success(1).await;

    let (browser, started) = app.begin("user_1").await;
    let query = format!("{}&iss={}", granted(&started), percent_encode("https://evil.example.com"));
    let response = app.callback(&browser, &query).await;
    let failed = on_result_page(&app, &browser, response).await;
    assert_eq!(failed.status, StatusCode::BAD_REQUEST);
    assert_eq!(failed.code, "issuer_mismatch");
    assert_eq!(failed.record["iss"], "https://evil.example.com");
    assert!(failed.action("return").is_some());
    assert_eq!(token_requests(&app).await, 0, "a mixed-up response never reaches the token endpoint");
    assert_eq!(status_of(&app, "user_1").await, "PENDING_AUTH");
    assert_last_error_is(&app, "user_1", &failed).await;

    let (browser, started) = app.begin("user_1").await;
    let query = format!("{}&iss={}", granted(&started), percent_encode("https://login.example.com/"));
    let (status, page) = app.follow(&browser, app.callback(&browser, &query).await).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(status_of(&app, "user_1").await, "ACTIVE");
    app.provider.verify().await;
}

#[tokio::test]
async fn a_callback_on_another_connections_path_is_state_invalid_and_burns_the_flow() {
    let app = spawn_app().await;
    app.mock_token_success(0).await;
    let (browser, started) = app.begin("user_1").await;

    // The flow is claimed before the path is compared with it, so the attempt ends it: the result page says why.
    let response = app.callback_on(&browser, "other", &granted(&started)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let failed = on_result_page(&app, &browser, response).await;
    assert_eq!(failed.status, StatusCode::BAD_REQUEST);
    assert_eq!(failed.code, "state_invalid");
    assert_eq!(failed.record["connection"], CONNECTION);
    assert_eq!(token_requests(&app).await, 0, "neither connection's token endpoint is called");
    assert_last_error_is(&app, "user_1", &failed).await;

    let replay = refused(&app, app.callback(&browser, &granted(&started)).await).await;
    assert_eq!((replay.status, &*replay.code), (StatusCode::CONFLICT, "flow_already_used"));
    assert_eq!(token_requests(&app).await, 0);
    assert_eq!(status_of(&app, "user_1").await, "PENDING_AUTH");
}

#[tokio::test]
async fn a_callback_on_an_unknown_connection_is_404_connection_unknown() {
    let app = spawn_app().await;
    app.mock_token_success(0).await;
    let (browser, started) = app.begin("user_1").await;

    let failed = refused(&app, app.callback_on(&browser, "nope", &granted(&started)).await).await;
    assert_eq!(failed.status, StatusCode::NOT_FOUND);
    assert_eq!(failed.code, "connection_unknown");
    assert_eq!(failed.record["flow_id"], Value::Null);
    assert!(failed.action("return").is_some());
    assert!(failed.action("support").is_some());
    assert_eq!(token_requests(&app).await, 0);
    assert_eq!(app.account("user_1").await["last_error"], Value::Null);
}

// ---------------------------------------------------------------------------------------------------------------
// What the provider sends back
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_provider_error_is_shown_by_code_with_the_raw_text_behind_the_reference() {
    let app = spawn_app().await;
    app.mock_token_success(0).await;
    let (browser, started) = app.begin("user_1").await;
    let description = "The user <script>alert(\"denied\")</script> & left";
    let query = format!(
        "error=access_denied&error_description={}&error_uri={}&state={}",
        percent_encode(description),
        percent_encode("https://provider.example.com/errors?id=1"),
        started.state
    );

    let failed = on_result_page(&app, &browser, app.callback(&browser, &query).await).await;
    assert_eq!(failed.status, StatusCode::FORBIDDEN);
    assert_eq!(failed.code, "access_denied");
    let restart = failed.action("restart").expect("cancelling can be undone by starting again");
    assert!(restart.starts_with("/connect/start/"));
    assert!(failed.action("return").is_some());
    assert_eq!(failed.record["error"], "access_denied");
    assert_eq!(failed.record["error_description"], description);
    assert_eq!(failed.record["error_uri"], "https://provider.example.com/errors?id=1");
    assert_eq!(failed.record["identifier"], "user_1");

    // The provider's text is never markup, and only the development details show it at all.
    assert!(!failed.page.contains("<script"), "{}", failed.page);
    assert!(failed.page.contains(&html_escape(description)), "development mode shows the text, escaped");
    assert!(!failed.public_part().contains(&html_escape(description)));
    assert!(!failed.public_part().contains("alert"));

    assert_eq!(token_requests(&app).await, 0);
    assert_eq!(status_of(&app, "user_1").await, "PENDING_AUTH");
    assert_last_error_is(&app, "user_1", &failed).await;
    assert!(app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.is_none());
}

#[tokio::test]
async fn code_and_error_together_or_neither_is_invalid_request_and_an_empty_code_is_code_missing() {
    let app = spawn_app().await;
    app.mock_token_success(0).await;
    for (query, code) in [
        ("code=the-code&error=access_denied", "invalid_request"),
        ("code=&error_description=nothing", "code_missing"),
        ("iss=x", "invalid_request"),
        ("error_description=nothing+else", "invalid_request"),
        ("error=bad%22quote", "invalid_request"),
        ("error=caf%C3%A9", "invalid_request"),
    ] {
        let (browser, started) = app.begin("user_1").await;
        let response = app.callback(&browser, &format!("{query}&state={}", started.state)).await;
        let failed = on_result_page(&app, &browser, response).await;
        assert_eq!(failed.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(failed.code, code, "{query}");
        assert!(failed.action("return").is_some(), "{query}");
        assert_last_error_is(&app, "user_1", &failed).await;
    }
    assert_eq!(token_requests(&app).await, 0);
    assert_eq!(status_of(&app, "user_1").await, "PENDING_AUTH");
}

#[tokio::test]
async fn repeated_parameters_and_bad_encoding_are_400_invalid_request() {
    let app = spawn_app().await;
    app.mock_token_success(1).await;
    let (browser, started) = app.begin("user_1").await;
    let state = &started.state;
    for query in [
        format!("code=the-code&state={state}&state={state}"),
        format!("code=the-code&state={state}&state=other"),
        format!("code=a&code=b&state={state}"),
        format!("code=the-code&state={state}&error=x&error=y"),
        "code=the-code&state=%zz".to_owned(),
        "code=the-code&state=%4".to_owned(),
        "code=the-code&state=%ff".to_owned(),
        format!("code=%ff%fe&state={state}"),
    ] {
        let failed = refused(&app, app.callback(&browser, &query).await).await;
        assert_eq!(failed.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(failed.code, "invalid_request", "{query}");
        assert_eq!(failed.record["flow_id"], Value::Null, "{query}: no flow is looked up");
    }
    assert_eq!(token_requests(&app).await, 0);
    assert_eq!(app.account("user_1").await["last_error"], Value::Null);

    // Unknown parameters are ignored, even repeated, and the refused attempts did not end the flow.
    let query = format!("{}&extra=1&extra=2", granted(&started));
    let (status, _) = app.follow(&browser, app.callback(&browser, &query).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(status_of(&app, "user_1").await, "ACTIVE");
    app.provider.verify().await;
}

#[tokio::test]
async fn a_failed_reauthentication_keeps_an_active_account_and_its_tokens() {
    let app = spawn_app().await;
    app.mock_token_success(1).await;
    let (browser, started) = app.begin("user_1").await;
    let (status, _) = app.follow(&browser, app.callback(&browser, &granted(&started)).await).await;
    assert_eq!(status, StatusCode::OK);
    let before = app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.expect("tokens");

    let (browser, started) = app.begin("user_1").await;
    let response = app.callback(&browser, &format!("error=access_denied&state={}", started.state)).await;
    let failed = on_result_page(&app, &browser, response).await;
    assert_eq!(failed.code, "access_denied");

    let account = app.account("user_1").await;
    assert_eq!(account["status"], "ACTIVE", "a declined re-authentication does not disconnect");
    assert_last_error_is(&app, "user_1", &failed).await;
    let after = app.open_tokens(CONNECTION, "user_1", CONNECTION, "user_1").await.expect("tokens still open");
    assert_eq!(after["access_token"], before["access_token"]);
    assert_eq!(token_requests(&app).await, 1);
    app.provider.verify().await;
}

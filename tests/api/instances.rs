//! Several instances on one PostgreSQL database, and a database that goes away while the service runs. These run
//! on PostgreSQL whatever backend the rest of the suite uses (`TEST_POSTGRES_URL` names the server).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::helpers::{
    Browser, CONNECTION, Options, TestApp, code_on, new_secret_key, postgres_client, postgres_database, reference_on,
    spawn_with,
};
use callback_gate::store::Table;

/// Two instances of the service on one new PostgreSQL database, sharing their secret key and provider, as a
/// deployment behind a load balancer would.
async fn two_instances() -> (TestApp, TestApp) {
    two_instances_with(Options::default()).await
}

async fn two_instances_with(options: Options) -> (TestApp, TestApp) {
    let database = postgres_database().await;
    let secret_key = new_secret_key();
    let first = spawn_with(Options {
        database: Some(database.url.clone()),
        secret_key: Some(secret_key.clone()),
        ..options.clone()
    })
    .await;
    let second = spawn_with(Options {
        database: Some(database.url.clone()),
        secret_key: Some(secret_key),
        provider_base: Some(first.provider.uri()),
        ..options
    })
    .await;
    (first.keeping(database), second)
}

/// How many token requests the shared provider received.
async fn token_requests(app: &TestApp) -> usize {
    app.provider.received_requests().await.unwrap_or_default().iter().filter(|r| r.url.path() == "/token").count()
}

#[tokio::test]
async fn a_link_minted_on_one_instance_starts_on_the_other_and_finishes_on_the_first() {
    let (first, second) = two_instances().await;
    first.mock_token_success(1).await;
    let link = first.mint_link("user_1").await;
    // The load balancer sends the browser to the second instance for the start...
    let browser = Browser::new();
    let on_second = link.replace(&first.address, &second.address);
    let started = second.start(&browser, &on_second).await;
    // ...and to the first for the provider's callback.
    let response = first.callback(&browser, &format!("code=the-code&state={}", started.state)).await;
    let (status, page) = first.follow(&browser, response).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(second.account("user_1").await["status"], "ACTIVE");
    assert_eq!(token_requests(&first).await, 1);
    // Either instance shows the same result page to the browser that ran the flow.
    let flow_id = first.only_flow_id().await;
    let page = browser.get(&second.url(&format!("/connect/result/{flow_id}"))).await;
    assert_eq!(page.status(), StatusCode::OK);
}

#[tokio::test]
async fn twenty_replays_split_across_two_instances_redeem_the_code_once() {
    let (first, second) = two_instances().await;
    first.mock_token_success(1).await;
    let (browser, started) = first.begin("user_1").await;
    let query = format!("code=the-code&state={}", started.state);

    let replays = join_all((0..20).map(|n| {
        let app = if n % 2 == 0 { &first } else { &second };
        app.callback(&browser, &query)
    }))
    .await;
    let mut won = 0;
    for response in replays {
        let status = response.status();
        assert!(!status.is_server_error(), "a replay is never answered 5xx");
        if status == StatusCode::SEE_OTHER {
            won += 1;
            let location = response.headers().get(LOCATION).expect("location").to_str().expect("ascii").to_owned();
            let page = browser.get(&first.url(&location)).await;
            assert_eq!(page.status(), StatusCode::OK);
        } else {
            assert_eq!(status, StatusCode::CONFLICT);
            assert_eq!(code_on(&response.text().await.expect("page")), "flow_already_used");
        }
    }
    assert_eq!(won, 1, "exactly one replay, on either instance, wins the flow");
    assert_eq!(token_requests(&first).await, 1, "the code is redeemed once");
    assert_eq!(first.account("user_1").await["status"], "ACTIVE");
}

#[tokio::test]
async fn both_instances_sweeping_at_once_end_each_abandoned_flow_once() {
    let (first, second) = two_instances().await;
    for identifier in ["user_1", "user_2", "user_3", "user_4"] {
        first.begin(identifier).await;
    }
    let an_hour_ago = (time::OffsetDateTime::now_utc().unix_timestamp() - 3600) * 1000;
    first.sql(&format!("UPDATE flows SET status = 'exchanging', claimed_at = {an_hour_ago}")).await;
    let (a, b, c, d) = tokio::join!(
        callback_gate::flow::end_abandoned(&first.state, None),
        callback_gate::flow::end_abandoned(&second.state, None),
        callback_gate::flow::end_abandoned(&first.state, None),
        callback_gate::flow::end_abandoned(&second.state, None),
    );
    let ended = a.expect("sweep") + b.expect("sweep") + c.expect("sweep") + d.expect("sweep");
    assert_eq!(ended, 4, "each abandoned flow is ended by exactly one sweeper");
    assert_eq!(first.count(Table::OutcomeEvents).await + second.count(Table::OutcomeEvents).await, 8);
    let rows = first.sql_rows("SELECT COUNT(*) FROM outcome_events").await;
    assert_eq!(rows[0][0].as_deref(), Some("4"), "one reference per ended flow");

    // Expired links swept by both at once are deleted once, and neither sweep fails.
    first.sql("UPDATE authorization_links SET expires_at = 0").await;
    let now = time::OffsetDateTime::now_utc();
    let (a, b) = tokio::join!(first.store.sweep(now), second.store.sweep(now));
    assert_eq!(a.expect("sweep") + b.expect("sweep"), 4, "four links swept, once");
    assert_eq!(first.count(Table::Links).await, 0);
}

/// A TCP relay in front of PostgreSQL that the test can cut, as a network partition or a database restart would.
struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
    links: Arc<tokio::sync::Mutex<JoinSet<()>>>,
}

impl Relay {
    async fn to(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let up = Arc::new(AtomicBool::new(true));
        let links = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
        let (accepting, relayed) = (up.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused once open
                }
                let target = target.clone();
                relayed.lock().await.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self { port, up, links }
    }

    /// Cuts every open connection and refuses new ones.
    async fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.links.lock().await.abort_all();
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_database_that_goes_away_is_answered_with_a_reference_and_recovered_from_without_a_restart() {
    let database = postgres_database().await;
    let mut url = url::Url::parse(&database.url).expect("url");
    let target = format!("{}:{}", url.host_str().expect("host"), url.port().expect("port"));
    let relay = Relay::to(target).await;
    url.set_port(Some(relay.port)).expect("port");
    let app = spawn_with(Options { database: Some(url.to_string()), ..Options::default() }).await;
    app.mock_token_success(1).await;
    let (browser, started) = app.begin("user_1").await;
    let link = app.mint_link("user_2").await;
    let ready = app.api.get(app.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);

    relay.cut().await;
    let ready = app.api.get(app.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The API answers 503 in JSON, saying to try again.
    let response = app
        .api
        .get(app.url(&format!("/v1/connected-accounts/{CONNECTION}/user_1")))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "store_unavailable");
    // The provider's callback gets the failure page with a reference, and nothing is exchanged or half-written.
    let response = app.callback(&browser, &format!("code=the-code&state={}", started.state)).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let page = response.text().await.expect("page");
    assert_eq!(code_on(&page), "internal_error");
    let reference = reference_on(&page);
    assert_eq!(app.provider.received_requests().await.unwrap_or_default().len(), 0, "no code was redeemed");
    // Opening a link meanwhile gets the same kind of page.
    let response = Browser::new().get(&link).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let page = response.text().await.expect("page");
    assert_eq!(code_on(&page), "internal_error");
    assert!(
        !page.contains(&database.url) && !page.contains("callback-gate-test"),
        "nothing of the database on the page"
    );

    // The database stays away long enough for the background write of that reference to fail at least once.
    tokio::time::sleep(Duration::from_millis(800)).await;

    // The database returns: the service answers again without a restart, and the same flow still finishes.
    relay.restore();
    let mut ready = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..100 {
        ready = app.api.get(app.url("/readyz")).send().await.expect("readyz").status();
        if ready == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, StatusCode::OK, "ready again once the database returns");
    assert_eq!(app.account("user_1").await["status"], "PENDING_AUTH", "nothing was half-written");
    let response = app.callback(&browser, &format!("code=the-code&state={}", started.state)).await;
    let (status, page) = app.follow(&browser, response).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");
    // The failure's reference was kept while the database was away and is stored once it returned.
    let mut stored = Value::Null;
    for _ in 0..100 {
        let response = app
            .api
            .get(app.url(&format!("/v1/references/{reference}")))
            .bearer_auth(&app.api_key)
            .send()
            .await
            .expect("request");
        if response.status() == StatusCode::OK {
            stored = response.json().await.expect("json");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored["code"], "internal_error", "{stored}");
}

#[tokio::test]
async fn concurrent_refreshes_split_across_two_instances_make_one_provider_call() {
    use crate::lifecycle::{RotatingProvider, connect, exposing, refresh, token};
    let (first, second) = two_instances_with(exposing()).await;
    let provider = RotatingProvider::new(3600, 3600).slow(Duration::from_millis(1500));
    provider.mount(&first).await;
    connect(&first, "user_1").await;

    let answers = join_all((0..8).map(|n| refresh(if n % 2 == 0 { &first } else { &second }, "user_1"))).await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "ACTIVE");
    }
    assert_eq!(provider.refreshes(), 1, "one refresh for both instances");
    assert_eq!(provider.refused(), 0);
    for app in [&first, &second] {
        let (status, body) = token(app, "user_1").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["access_token"], provider.last_access_token());
    }
}

#[tokio::test]
async fn the_token_route_on_two_instances_refreshes_an_expiring_token_once() {
    use crate::lifecycle::{RotatingProvider, connect, exposing, token};
    let (first, second) = two_instances_with(exposing()).await;
    let provider = RotatingProvider::new(30, 3600).slow(Duration::from_millis(1500));
    provider.mount(&first).await;
    connect(&first, "user_1").await;

    let answers = join_all((0..8).map(|n| token(if n % 2 == 0 { &first } else { &second }, "user_1"))).await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["access_token"], provider.last_access_token());
    }
    assert_eq!(provider.refreshes(), 1);
    assert_eq!(provider.refused(), 0);
}

#[tokio::test]
async fn two_instances_refreshing_in_the_background_renew_each_token_once() {
    use crate::lifecycle::{RotatingProvider, connect, eventually, exposing};
    let (first, second) = two_instances_with(exposing()).await;
    // Three-second tokens from every answer: both background refreshers find them due every second or so.
    let provider = RotatingProvider::new(3, 3);
    provider.mount(&first).await;
    for n in 0..4 {
        connect(&first, &format!("user_{n}")).await;
    }
    // Each account's three-second token is due every second or two: at least two refreshes each.
    let renewed = eventually(Duration::from_secs(10), async || provider.refreshes() >= 8).await;
    assert!(renewed, "refreshed repeatedly: {} refreshes, {} refused", provider.refreshes(), provider.refused());
    // Whichever instance got there first, no refresh token was ever presented twice, and every account is fine.
    assert_eq!(provider.refused(), 0, "no account was refreshed twice with one refresh token");
    for n in 0..4 {
        assert_eq!(second.account(&format!("user_{n}")).await["status"], "ACTIVE");
    }
}

#[tokio::test]
async fn a_refusal_worth_retrying_is_reported_as_such_from_among_statements_sent_together() {
    // A link's statements go to PostgreSQL in one round trip: the identifier's lock, the link, the account, the
    // trim. When the link's insert is refused as a serialization failure, the account's insert and the trim after
    // it only say that the transaction was aborted; the answer must be the insert's own error, which is worth
    // trying again (503), not theirs, which is not (500).
    let database = postgres_database().await;
    let app =
        spawn_with(Options { database: Some(database.url.clone()), ..Options::default() }).await.keeping(database);
    app.sql(
        "CREATE FUNCTION refuse_link() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'simulated conflict' USING ERRCODE = 'serialization_failure'; END $$;
         CREATE TRIGGER refuse_links BEFORE INSERT ON authorization_links
            FOR EACH ROW EXECUTE FUNCTION refuse_link();",
    )
    .await;
    for _ in 0..20 {
        let response = app.post_link(serde_json::json!({ "connection": CONNECTION, "identifier": "user_1" })).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key("retry-after"));
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    }
    // Nothing of the transaction is kept: no link, and no account made pending for it.
    assert_eq!(app.count(Table::Links).await, 0);
    let path = format!("/v1/connected-accounts/{CONNECTION}/user_1");
    let (status, _) = crate::lifecycle::call(&app, reqwest::Method::GET, &path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The service's sessions on its database for which `condition`, an SQL condition on `pg_stat_activity`, holds.
async fn service_sessions_where(app: &TestApp, condition: &str) -> usize {
    let query = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
           AND application_name = 'callback-gate' AND {condition}"
    );
    let rows = app.sql_rows(&query).await;
    rows[0][0].as_deref().and_then(|count| count.parse().ok()).expect("a count")
}

/// The service's sessions on its database that are in `state` (`idle in transaction`, `active`, ...) and, when
/// given, waiting for a `wait_event_type` (`Lock`).
async fn service_sessions(app: &TestApp, state: &str, waiting_for: Option<&str>) -> usize {
    let waiting = waiting_for.map(|event| format!("AND wait_event_type = '{event}'")).unwrap_or_default();
    service_sessions_where(app, &format!("state = '{state}' {waiting}")).await
}

/// The service's sessions inside a transaction whose last statement was one of a claim's: its lookup of the flow
/// by state, or its share lock on the flow's link.
async fn claims_inside_a_transaction(app: &TestApp) -> usize {
    service_sessions_where(
        app,
        "state LIKE 'idle in transaction%'
           AND (query LIKE '%FROM flows WHERE state_hash = $1%' OR query LIKE '%authorization_links%FOR SHARE%')",
    )
    .await
}

/// Waits up to 5 s for no session of the service to be inside a transaction.
async fn no_session_left_in_a_transaction(app: &TestApp) {
    let in_one = async || {
        service_sessions(app, "idle in transaction", None).await
            + service_sessions(app, "idle in transaction (aborted)", None).await
    };
    until(Duration::from_secs(5), "no session of the service is left inside a transaction", async || {
        in_one().await == 0
    })
    .await;
}

/// Waits up to `limit` for `ready` to hold.
async fn until<F: AsyncFn() -> bool>(limit: Duration, what: &str, ready: F) {
    let deadline = tokio::time::Instant::now() + limit;
    while !ready().await {
        assert!(tokio::time::Instant::now() < deadline, "still not so after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_callback_given_up_while_its_claim_waits_keeps_nothing_and_leaves_no_transaction_open() {
    // A claim's `BEGIN` goes out with its lookup, and its `COMMIT` only once the claim is decided. A browser that gives
    // up while the claim waits for a lock takes the request, and the transaction, with it: the connection must not
    // go back to the pool inside that transaction, or the next operation to get it would run inside it, and commit
    // or lose what the abandoned claim wrote.
    let database = postgres_database().await;
    // The server looks every 50 ms for sessions whose client has gone, even while they wait for a lock; without
    // this, the abandoned claim would wait until its statement timed out (10 s).
    crate::helpers::sql(
        &database.url,
        "DO $$ BEGIN
            EXECUTE format('ALTER DATABASE %I SET client_connection_check_interval = 50', current_database());
         END $$",
    )
    .await;
    let app =
        spawn_with(Options { database: Some(database.url.clone()), ..Options::default() }).await.keeping(database);
    app.mock_token_success(1).await;
    let link = app.mint_link("user_1").await;
    let browser = Browser::new();
    let started = app.start(&browser, &link).await;
    let holder = postgres_client(&app.database_url).await;
    holder.batch_execute("BEGIN; SELECT id FROM flows FOR UPDATE").await.expect("the flow's row is held");

    let query = format!("code=the-code&state={}", started.state);
    let waiting = tokio::spawn({
        let (url, client) = (app.url(&format!("/connect/callback/{CONNECTION}?{query}")), browser.client.clone());
        async move { client.get(url).send().await }
    });
    let claim_waits = async || service_sessions(&app, "active", Some("Lock")).await;
    until(Duration::from_secs(10), "the claim waits for the flow's row", async || claim_waits().await == 1).await;
    waiting.abort();
    // The service drops the request, and with it the connection the claim had: the server ends that session, well
    // before the statement would have timed out.
    until(Duration::from_secs(5), "the abandoned claim's session is gone", async || claim_waits().await == 0).await;
    holder.batch_execute("ROLLBACK").await.expect("the flow's row is let go");

    // Nothing of the claim was kept, no session of the service is left inside a transaction, and the same callback,
    // sent again, connects the account.
    let status = app.sql_rows("SELECT status FROM flows").await;
    assert_eq!(status, vec![vec![Some("started".to_owned())]]);
    // Background writes (the outcome events, the refresher) pass through `idle in transaction` for moments between
    // their statements; a connection left inside a transaction stays there.
    no_session_left_in_a_transaction(&app).await;
    let response = app.callback(&browser, &query).await;
    let (status, page) = app.follow(&browser, response).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");
    assert_eq!(token_requests(&app).await, 1);
}

#[tokio::test]
async fn callbacks_refused_at_their_claim_end_their_transactions() {
    // A claim that claims nothing (another browser's callback, a replay, a state whose flow is gone) rolls its
    // transaction back before its connection goes back to the pool, so no later operation runs inside it.
    let database = postgres_database().await;
    let app =
        spawn_with(Options { database: Some(database.url.clone()), ..Options::default() }).await.keeping(database);
    app.mock_token_success(1).await;
    let (browser, started) = app.begin("user_1").await;
    let query = format!("code=the-code&state={}", started.state);
    let page = app.callback(&Browser::new(), &query).await.text().await.expect("page");
    assert_eq!(code_on(&page), "browser_mismatch");
    let (status, page) = app.follow(&browser, app.callback(&browser, &query).await).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let page = app.callback(&browser, &query).await.text().await.expect("page");
    assert_eq!(code_on(&page), "flow_already_used");
    let (browser, started) = app.begin("user_2").await;
    app.sql("DELETE FROM flows WHERE identifier = 'user_2'").await;
    let page = app.callback(&browser, &format!("code=the-code&state={}", started.state)).await.text().await;
    assert_eq!(code_on(&page.expect("page")), "state_invalid");

    // Counted at once: waiting would let a later operation reuse a connection left inside a transaction, and its
    // `COMMIT` would end that transaction and hide it. Only sessions whose last statement was one of a claim's count,
    // so that a background write caught between two of its own statements is not taken for a leak.
    assert_eq!(claims_inside_a_transaction(&app).await, 0);
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");
    assert_eq!(token_requests(&app).await, 1);
}

#[tokio::test]
async fn the_options_a_database_url_names_apply_to_the_services_sessions() {
    // An operator keeps callback-gate's tables in a schema of their own with `options=-c search_path=...` in the URL;
    // the service's own session settings (its statement timeout) must not replace them.
    let database = postgres_database().await;
    crate::helpers::sql(&database.url, "CREATE SCHEMA gate").await;
    let url = format!("{}?options=-c%20search_path%3Dgate", database.url);
    let app = spawn_with(Options { database: Some(url), ..Options::default() }).await.keeping(database);
    app.mock_token_success(1).await;
    let (browser, started) = app.begin("user_1").await;
    let response = app.callback(&browser, &format!("code=the-code&state={}", started.state)).await;
    let (status, page) = app.follow(&browser, response).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(app.account("user_1").await["status"], "ACTIVE");

    let tables = app
        .sql_rows(
            "SELECT table_schema, count(*) FROM information_schema.tables
             WHERE table_name IN ('flows', 'authorization_links', 'connected_accounts') GROUP BY table_schema",
        )
        .await;
    assert_eq!(tables, vec![vec![Some("gate".to_owned()), Some("3".to_owned())]]);
    let flows = app.sql_rows("SELECT status FROM gate.flows").await;
    assert_eq!(flows, vec![vec![Some("succeeded".to_owned())]]);
}

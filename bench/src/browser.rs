//! Simulated browsers running complete connection flows, each browser with its own cookie jar and its own
//! connections, redirects followed by hand so that every step is timed on its own:
//!
//! 1. the app's backend mints an authorization link (`POST /v1/authorization-links`, the API client);
//! 2. the browser opens it (`GET /connect/start/...`, 303 to the provider, browser cookie set);
//! 3. the provider's authorization endpoint answers at once (303 back to the callback with a code);
//! 4. the callback (`GET /connect/callback/bench`: flow checked, code exchanged at the token endpoint, tokens
//!    sealed and stored, 303 to the result page);
//! 5. the result page (`GET /connect/result/...`, 200).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, LOCATION};

/// The connection name in the generated config.
pub const CONNECTION: &str = "bench";

/// Where the flows go.
/// Idle keep-alive connections the app's backend keeps to callback-gate, at most.
const API_IDLE_CONNECTIONS: usize = 32;

#[derive(Clone)]
pub struct Target {
    pub gate: String,
    pub api_key: String,
    /// The app's backend: one shared client with a keep-alive pool of a backend's size.
    pub api: reqwest::Client,
}

impl Target {
    pub fn new(gate: String, api_key: String) -> Self {
        // An app's backend keeps a few connections open, not one per link it ever minted at once: without this
        // bound, preparing 1,000 flows together would leave 1,000 idle API connections on callback-gate for the
        // rest of the scenario, and its memory would count them.
        let api = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .pool_max_idle_per_host(API_IDLE_CONNECTIONS)
            .build()
            .unwrap_or_else(|err| panic!("API client: {err}"));
        Self { gate, api_key, api }
    }
}

/// A browser: its own cookie jar and connection pool; redirects are followed by the flow, step by step.
#[derive(Clone)]
pub struct Browser {
    client: reqwest::Client,
}

impl Browser {
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .build()
            .unwrap_or_else(|err| panic!("browser client: {err}"));
        Self { client }
    }
}

/// How long each step of one flow took.
#[derive(Debug, Clone)]
pub struct FlowTimes {
    pub link: Duration,
    pub start: Duration,
    pub authorize: Duration,
    pub callback: Duration,
    pub result: Duration,
    /// The provider's code, to look up how long its token endpoint took.
    pub code: String,
}

/// A flow that did not end on the success page: which step, and what it saw.
#[derive(Debug)]
pub struct FlowError {
    pub step: &'static str,
    pub detail: String,
}

impl std::fmt::Display for FlowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.detail)
    }
}

fn failed(step: &'static str, detail: impl std::fmt::Display) -> FlowError {
    FlowError { step, detail: detail.to_string() }
}

/// A flow prepared up to the provider's answer: the callback URL the provider sent the browser to.
pub struct Prepared {
    pub callback_url: String,
    pub code: String,
    pub link: Duration,
    pub start: Duration,
    pub authorize: Duration,
}

/// Steps 1 to 3: mint a link, open it, let the provider answer.
pub async fn prepare(target: &Target, browser: &Browser, identifier: &str) -> Result<Prepared, FlowError> {
    let began = Instant::now();
    let link = mint(target, identifier).await?;
    let link_took = began.elapsed();

    let began = Instant::now();
    let authorize_url = follow(browser, &link, "start").await?;
    let start_took = began.elapsed();

    let began = Instant::now();
    let callback_url = follow(browser, &authorize_url, "authorize").await?;
    let authorize_took = began.elapsed();
    let code = url::Url::parse(&callback_url)
        .ok()
        .and_then(|url| url.query_pairs().find(|(key, _)| key == "code").map(|(_, value)| value.into_owned()))
        .ok_or_else(|| failed("authorize", format!("no code in {callback_url}")))?;
    Ok(Prepared { callback_url, code, link: link_took, start: start_took, authorize: authorize_took })
}

/// Step 1: the app's backend mints an authorization link; returns the link.
pub async fn mint(target: &Target, identifier: &str) -> Result<String, FlowError> {
    let body = serde_json::json!({ "connection": CONNECTION, "identifier": identifier }).to_string();
    let response = target
        .api
        .post(format!("{}/v1/authorization-links", target.gate))
        .bearer_auth(&target.api_key)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|err| failed("link", err))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|err| failed("link", err))?;
    if status != StatusCode::CREATED {
        return Err(failed("link", format!("HTTP {}: {}", status.as_u16(), String::from_utf8_lossy(&bytes))));
    }
    let minted: serde_json::Value = serde_json::from_slice(&bytes).map_err(|err| failed("link", err))?;
    Ok(minted["link"].as_str().ok_or_else(|| failed("link", "no link in the answer"))?.to_owned())
}

/// Steps 4 and 5: the callback, then the result page.
pub async fn finish(target: &Target, browser: &Browser, prepared: Prepared) -> Result<FlowTimes, FlowError> {
    let began = Instant::now();
    let result_path = callback(browser, &prepared.callback_url).await?;
    let callback_took = began.elapsed();

    let began = Instant::now();
    result(target, browser, &result_path).await?;
    Ok(FlowTimes {
        link: prepared.link,
        start: prepared.start,
        authorize: prepared.authorize,
        callback: callback_took,
        result: began.elapsed(),
        code: prepared.code,
    })
}

/// Step 4: the callback; returns the result page's path it redirected to.
pub async fn callback(browser: &Browser, callback_url: &str) -> Result<String, FlowError> {
    let result_path = follow(browser, callback_url, "callback").await?;
    if !result_path.starts_with("/connect/result/") {
        return Err(failed("callback", format!("redirected to {result_path}, not a result page")));
    }
    Ok(result_path)
}

/// Step 5: the result page, which must say the account is connected (200).
pub async fn result(target: &Target, browser: &Browser, result_path: &str) -> Result<(), FlowError> {
    let response = browser
        .client
        .get(format!("{}{result_path}", target.gate))
        .send()
        .await
        .map_err(|err| failed("result", err))?;
    let status = response.status();
    let page = response.bytes().await.map_err(|err| failed("result", err))?;
    if status != StatusCode::OK {
        return Err(failed("result", format!("HTTP {} ({})", status.as_u16(), outcome_code(&page))));
    }
    Ok(())
}

/// One complete flow.
pub async fn run_flow(target: &Target, browser: &Browser, identifier: &str) -> Result<FlowTimes, FlowError> {
    let prepared = prepare(target, browser, identifier).await?;
    finish(target, browser, prepared).await
}

/// `GET url` in the browser, expecting a 303; returns its `Location`.
pub async fn follow(browser: &Browser, url: &str, step: &'static str) -> Result<String, FlowError> {
    let response = browser.client.get(url).send().await.map_err(|err| failed(step, err))?;
    let status = response.status();
    let location = response.headers().get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let page = response.bytes().await.map_err(|err| failed(step, err))?;
    match (status, location) {
        (StatusCode::SEE_OTHER, Some(location)) => Ok(location),
        (status, _) => Err(failed(step, format!("HTTP {} ({})", status.as_u16(), outcome_code(&page)))),
    }
}

/// The `data-code` of a failure page, to say why a flow failed.
fn outcome_code(page: &[u8]) -> String {
    let page = String::from_utf8_lossy(page);
    page.find("data-code=\"")
        .map(|at| at + "data-code=\"".len())
        .and_then(|start| page[start..].find('"').map(|end| page[start..start + end].to_owned()))
        .unwrap_or_else(|| "no outcome code on the page".into())
}

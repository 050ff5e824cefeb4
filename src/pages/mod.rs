//! The browser side: the start, callback and result routes, the pages they render, the security headers every
//! page carries, and the static files served from the binary.

use std::sync::Arc;
use std::time::Instant;

use askama::Template;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use time::OffsetDateTime;
use tower_http::compression::CompressionLayer;

use crate::assets::Assets;
use crate::crypto::{self, Secret};
use crate::flow::{self, CredentialForm, CredentialSubmission, Ending, Recorded};
use crate::i18n::Language;
use crate::outcome::Actions;
use crate::server::AppState;
use crate::store::FlowStatus;
use crate::telemetry;

mod prerendered;

pub use prerendered::Prerendered;
use prerendered::{Slot, Values};

/// `Content-Security-Policy` of every response: nothing but this origin's own styles and images (plus the app's
/// logo origin when the logo is a URL), no script at all.
pub fn content_security_policy(assets: &Assets) -> String {
    let logo_origin = assets
        .logo
        .as_deref()
        .filter(|logo| logo.starts_with("https://"))
        .and_then(|logo| url::Url::parse(logo).ok())
        .map(|url| format!(" {}", url.origin().ascii_serialization()))
        .unwrap_or_default();
    format!(
        "default-src 'none'; style-src 'self'; img-src 'self'{logo_origin}; font-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    )
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/connect/start/{link}", get(start))
        .route("/connect/callback/{connection}", get(callback))
        .route(
            "/connect/credential/{connection}",
            post(credential).layer(DefaultBodyLimit::max(MAX_CREDENTIAL_FORM_BYTES)),
        )
        .route("/connect/verified/{confirmation}", get(verified))
        .route("/connect/result/{flow}", get(result))
        .route("/static/{file}", get(static_file).layer(CompressionLayer::new()))
}

/// The browser-binding cookie's name: `__Host-` prefixed (and so `Secure`, host-only, path `/`) over https.
fn browser_cookie_name(state: &AppState) -> &'static str {
    if state.settings.public_url.scheme() == "https" { "__Host-callback-gate-browser" } else { "callback-gate-browser" }
}

fn browser_from(state: &AppState, jar: &CookieJar) -> Option<Secret> {
    flow::parse_browser(jar.get(browser_cookie_name(state)).map(Cookie::value))
}

fn browser_cookie(state: &AppState, value: Secret) -> Cookie<'static> {
    let mut cookie = Cookie::new(browser_cookie_name(state), value.expose().to_owned());
    cookie.set_http_only(true);
    // Lax: the provider's redirect back is a top-level GET navigation from another site, which Lax allows.
    cookie.set_same_site(SameSite::Lax);
    cookie.set_path("/");
    cookie.set_secure(state.settings.public_url.scheme() == "https");
    cookie.set_max_age(time::Duration::days(1));
    cookie
}

async fn start(
    State(state): State<AppState>,
    Path(link): Path<String>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Response {
    let browser = browser_from(&state, &jar);
    let ending = flow::start(&state, &link, browser).await;
    respond(&state, &Language::from_headers(&headers), jar, ending).await
}

async fn callback(
    State(state): State<AppState>,
    Path(connection): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    jar: CookieJar,
) -> Response {
    let browser = browser_from(&state, &jar);
    let ending = flow::callback(&state, &connection, query.as_deref(), browser).await;
    respond(&state, &Language::from_headers(&headers), jar, ending).await
}

/// `GET /connect/verified/{confirmation}`: the app's verify page sends the browser here after confirming its user.
async fn verified(
    State(state): State<AppState>,
    Path(confirmation): Path<String>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Response {
    let browser = browser_from(&state, &jar);
    let ending = flow::arrive(&state, &confirmation, browser).await;
    respond(&state, &Language::from_headers(&headers), jar, ending).await
}

/// Largest credential form accepted: the token and two fields of at most 4 KiB each, encoded.
const MAX_CREDENTIAL_FORM_BYTES: usize = 16 * 1024;

/// `POST /connect/credential/{connection}`: the hosted credential form's submission.
async fn credential(
    State(state): State<AppState>,
    Path(connection): Path<String>,
    headers: HeaderMap,
    jar: CookieJar,
    form: Result<axum::Form<CredentialSubmission>, FormRejection>,
) -> Response {
    let language = Language::from_headers(&headers);
    let submission = match form {
        Ok(axum::Form(submission)) => submission,
        Err(rejection) => {
            // Nothing of the body is kept or shown: it may hold the credential.
            let status = rejection.status();
            let (status, title) = if status == StatusCode::PAYLOAD_TOO_LARGE {
                (status, "payload-too-large-title")
            } else {
                (StatusCode::BAD_REQUEST, "form-unreadable-title")
            };
            tracing::debug!(target: "callback_gate::pages", status = status.as_u16(), "a credential form was refused unread");
            return plain_notice(&state.frame, &language, status, title, "refused-body");
        }
    };
    let browser = browser_from(&state, &jar);
    let ending = flow::credential::submit(&state, &connection, submission, browser).await;
    respond(&state, &language, jar, ending).await
}

async fn respond(state: &AppState, language: &Language, jar: CookieJar, ending: Ending) -> Response {
    match ending {
        Ending::Form { form, set_browser } => {
            let jar = match set_browser {
                Some(value) => jar.add(browser_cookie(state, value)),
                None => jar,
            };
            let status = if form.problem.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
            (jar, credential_page(state, language, status, &form)).into_response()
        }
        Ending::Redirect { location, set_browser } => {
            let jar = match set_browser {
                Some(value) => jar.add(browser_cookie(state, value)),
                None => jar,
            };
            (jar, Redirect::to(&location)).into_response()
        }
        Ending::Failed(recorded) => failure_page(state, language, &recorded).await,
    }
}

/// `GET /connect/result/{flow}`: the outcome page, for the browser that ran the flow only.
async fn result(
    State(state): State<AppState>,
    Path(flow_id): Path<String>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Response {
    let started = Instant::now();
    let language = Language::from_headers(&headers);
    let mut found = flow::for_result(&state, &flow_id).await;
    // A flow that waits for something that can no longer happen is ended now rather than shown as pending.
    if let Ok(Some(flow)) = &found
        && flow::may_be_abandoned(&state.settings, flow, OffsetDateTime::now_utc())
    {
        found = match flow::end_abandoned(&state, Some(&flow_id)).await {
            Ok(0) => found,
            Ok(_) => state.store.find_flow(&flow_id).await,
            Err(err) => Err(err),
        };
    }
    let flow = match found {
        Ok(Some(flow)) => flow,
        Ok(None) => return notice(&state, &language, StatusCode::NOT_FOUND, "result-gone"),
        Err(err) => {
            let failure = crate::outcome::Failure::new("internal_error").with_detail(err.to_string());
            let recorded = flow::record(&state, failure, flow::FailureContext::default(), started).await;
            return failure_page(&state, &language, &recorded).await;
        }
    };
    let same_browser = browser_from(&state, &jar).is_some_and(|b| {
        crypto::constant_time_eq(crypto::hash_hex(b.expose()).as_bytes(), flow.browser_hash.as_bytes())
    });
    if !same_browser {
        return notice(&state, &language, StatusCode::FORBIDDEN, "result-other-browser");
    }
    match flow.status {
        FlowStatus::Succeeded => {
            let app = display_name(&state);
            let back = return_url(&state, flow.return_to.as_deref());
            let page = SuccessPage {
                chrome: Chrome::new(&state, &language, language.text("connected-title")),
                body: language.text_with(
                    "connected-body",
                    &[("connection", connection_name(&state, &flow.connection)), ("app", app)],
                ),
                back: back.map(|href| Action::back_to_app(&language, app, href, true)),
            };
            render(StatusCode::OK, &page)
        }
        FlowStatus::Failed => {
            let reference = flow.reference.clone().unwrap_or_default();
            let event = flow::stored_event(&state, &reference).await.ok().flatten();
            let recorded = flow::stored_failure(&flow, event);
            failure_page(&state, &language, &recorded).await
        }
        // Both end by themselves (or are ended as abandoned when they cannot): the page reloads until they have.
        FlowStatus::Verifying => waiting(&state, &language, "result-verifying"),
        FlowStatus::Started | FlowStatus::Exchanging => waiting(&state, &language, "result-pending"),
    }
}

/// How pages name a connection's service to users.
fn connection_name<'a>(state: &'a AppState, connection: &'a str) -> &'a str {
    state.settings.connection(connection).map_or(connection, |c| c.display_name.as_str())
}

/// A time as people read it, in UTC.
fn readable_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let Some(year) = u32::try_from(at.year()).ok().filter(|year| *year <= 9999) else {
        return telemetry::rfc3339(at);
    };
    let fields = [
        (year, 4, b'-'),
        (u32::from(u8::from(at.month())), 2, b'-'),
        (u32::from(at.day()), 2, b' '),
        (u32::from(at.hour()), 2, b':'),
        (u32::from(at.minute()), 2, b' '),
    ];
    let mut buffer = [0u8; 32];
    let written = telemetry::padded_digits(&fields, &mut buffer);
    let mut out = String::with_capacity(written + 3);
    out.push_str(std::str::from_utf8(&buffer[..written]).unwrap_or_default());
    out.push_str("UTC");
    out
}

/// The name pages show: `branding.name`, else `app.name`.
fn display_name(state: &AppState) -> &str {
    state.settings.branding.name.as_deref().unwrap_or(&state.settings.app.name)
}

/// A "back to the app" target: the link's `return_to` or `app.return_url`, and only on an allowed origin.
fn return_url(state: &AppState, return_to: Option<&str>) -> Option<String> {
    return_to
        .and_then(|r| url::Url::parse(r).ok())
        .filter(|u| state.settings.is_allowed_return(u))
        .or_else(|| state.settings.app.return_url.clone())
        .map(String::from)
}

/// What every page shares: its language, title, the app's name and logo, and the stylesheets.
pub struct Chrome {
    pub lang: String,
    pub title: String,
    pub app_name: String,
    pub logo: Option<String>,
    pub stylesheets: Vec<String>,
}

impl Chrome {
    pub fn new(state: &AppState, language: &Language, title: String) -> Self {
        Self::with_assets(&state.assets, language, title, display_name(state).to_owned())
    }

    pub fn with_assets(assets: &Assets, language: &Language, title: String, app_name: String) -> Self {
        Self {
            lang: language.tag(),
            title,
            app_name,
            logo: assets.logo.clone(),
            stylesheets: assets.stylesheets.clone(),
        }
    }
}

/// A next step offered on a page.
pub struct Action {
    pub kind: &'static str,
    pub label: String,
    pub href: String,
    pub primary: bool,
}

impl Action {
    fn new(kind: &'static str, label: String, href: String, primary: bool) -> Self {
        Self { kind, label, href, primary }
    }

    /// "Back to {app}": the way back to the app, on every page that offers it.
    fn back_to_app(language: &Language, app: &str, href: String, primary: bool) -> Self {
        Self::new("return", language.text_with_configured("back-to-app", &[("app", app)]), href, primary)
    }
}

#[derive(Template)]
#[template(path = "success.html")]
struct SuccessPage {
    chrome: Chrome,
    body: String,
    back: Option<Action>,
}

#[derive(Template)]
#[template(path = "failure.html")]
struct FailurePage<'a> {
    chrome: Chrome,
    code: &'a str,
    class: &'a str,
    message: String,
    actions: Vec<Action>,
    actions_label: String,
    reference_label: String,
    reference: &'a str,
    at: &'a str,
    at_display: &'a str,
    developer: Option<DeveloperDetails<'a>>,
}

/// Shown in development mode only: what a developer needs. Besides the templates' HTML escaping, control and
/// bidirectional characters are made visible, so provider text cannot hide or reorder what is shown.
struct DeveloperDetails<'a> {
    hint: String,
    cause: Option<&'a str>,
    error: Option<String>,
    error_description: Option<String>,
    error_uri: Option<String>,
    detail: String,
}

#[derive(Template)]
#[template(path = "credential.html")]
struct CredentialPage<'a> {
    chrome: Chrome,
    kind: &'static str,
    intro: String,
    problem: Option<String>,
    action: String,
    token: &'a str,
    basic: bool,
    key_label: String,
    username_label: String,
    password_label: String,
    submit_label: String,
    privacy: String,
    back: Option<Action>,
}

fn credential_page(state: &AppState, language: &Language, status: StatusCode, form: &CredentialForm) -> Response {
    let service = [("connection", form.display_name.as_str()), ("app", display_name(state))];
    let back = return_url(state, None).map(|href| Action::back_to_app(language, display_name(state), href, false));
    let basic = form.kind == crate::catalog::Kind::Basic;
    let page = CredentialPage {
        chrome: Chrome::new(state, language, language.text_with("credential-title", &service)),
        kind: form.kind.as_str(),
        intro: language.text_with(if basic { "credential-intro-basic" } else { "credential-intro-key" }, &service),
        problem: form.problem.map(|problem| language.text(problem.message_id())),
        action: format!("/connect/credential/{}", form.connection),
        token: form.token.expose(),
        basic,
        key_label: language.text("credential-key-label"),
        username_label: language.text("credential-username-label"),
        password_label: language.text("credential-password-label"),
        submit_label: language.text("credential-submit"),
        privacy: language.text_with("credential-privacy", &service),
        back,
    };
    render(status, &page)
}

#[derive(Template)]
#[template(path = "notice.html")]
struct NoticePage {
    chrome: Chrome,
    message: String,
    back: Option<Action>,
    /// Seconds after which the browser reloads the page by itself (a meta refresh: no script is needed).
    refresh: Option<u32>,
}

async fn failure_page(state: &AppState, language: &Language, recorded: &Recorded) -> Response {
    let status = StatusCode::from_u16(recorded.failure.entry.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let at = telemetry::rfc3339(recorded.at);
    let at_display = readable_time(recorded.at);
    let values = Values { reference: &recorded.reference, at: &at, at_display: &at_display };
    if let Some(page) = prerendered_failure(state, language, recorded, &values).await {
        return (status, Html(page)).into_response();
    }
    render(status, &failure_content(state, language, recorded, &values).await)
}

/// The failure page from its parts rendered before (rendering and keeping them the first time), when nothing on it
/// but the reference and time is the request's own; `None` when the page must be rendered whole.
async fn prerendered_failure(
    state: &AppState,
    language: &Language,
    recorded: &Recorded,
    values: &Values<'_>,
) -> Option<String> {
    let failure = &recorded.failure;
    let entry = failure.entry;
    let context = &recorded.context;
    let developer = state.settings.developer_hints;
    let own_restart = context.link_id.is_some() && entry.actions.contains(Actions::RESTART);
    // The support link carries the reference and time inside a prefilled message.
    let own_support = entry.actions.contains(Actions::SUPPORT);
    let provider_text = failure.error.is_some() || failure.error_description.is_some() || failure.error_uri.is_some();
    if own_restart || own_support || context.return_to.is_some() || developer && provider_text {
        return None;
    }
    let key = prerendered::Key { entry: std::ptr::from_ref(entry) as usize, language: language.index() };
    let (detail, hint_detail) =
        if developer { (failure.detail.as_str(), failure.hint_detail.as_deref()) } else { ("", None) };
    if let Some(parts) = state.prerendered.get(&key, detail, hint_detail) {
        return parts.fill(values);
    }
    let (reference, at, at_display) = (Slot::Reference.mark(), Slot::At.mark(), Slot::AtDisplay.mark());
    let marked = Values { reference: &reference, at: &at, at_display: &at_display };
    let rendered = failure_content(state, language, recorded, &marked).await.render().ok()?;
    let parts = Arc::new(prerendered::Parts::cut(&rendered)?);
    let developer = prerendered::Developer { detail: detail.to_owned(), hint_detail: hint_detail.map(str::to_owned) };
    state.prerendered.keep(key, developer, parts.clone());
    parts.fill(values)
}

/// What a failure page shows, with `values` for its reference and time.
async fn failure_content<'a>(
    state: &'a AppState,
    language: &Language,
    recorded: &'a Recorded,
    values: &Values<'a>,
) -> FailurePage<'a> {
    let entry = recorded.failure.entry;
    let context = &recorded.context;
    let app = display_name(state);
    let restart_url = match (&context.link_id, entry.actions.contains(Actions::RESTART)) {
        (Some(link_id), true) => match state.store.find_link(link_id).await {
            Ok(Some(link)) if link.expires_at > OffsetDateTime::now_utc() && link.consumed_at.is_none() => {
                Some(format!("/connect/start/{}", flow::link_token(&state.settings, link_id)))
            }
            _ => None,
        },
        _ => None,
    };
    // When restarting is not possible any more, going back to the app is how the user starts again.
    let offer_return =
        entry.actions.contains(Actions::RETURN) || entry.actions.contains(Actions::RESTART) && restart_url.is_none();
    let mut actions = Vec::new();
    if let Some(href) = restart_url {
        actions.push(Action::new("restart", language.text("try-again"), href, true));
    }
    if let Some(href) = offer_return.then(|| return_url(state, context.return_to.as_deref())).flatten() {
        let primary = actions.is_empty();
        actions.push(Action::back_to_app(language, app, href, primary));
    }
    if let Some(href) =
        entry.actions.contains(Actions::SUPPORT).then(|| support_url(state, language, recorded, values.at)).flatten()
    {
        actions.push(Action::new("support", language.text("contact-support"), href, false));
    }
    if let Some(url) =
        entry.actions.contains(Actions::STATUS).then_some(()).and(state.settings.support.status_page_url.as_ref())
    {
        actions.push(Action::new("status", language.text("check-status"), url.to_string(), false));
    }
    let (title_id, message_id) = crate::i18n::outcome_ids(entry.code, entry.cause);
    FailurePage {
        chrome: Chrome::new(state, language, language.text(&title_id)),
        code: entry.code,
        class: entry.class.as_str(),
        message: language.text(&message_id),
        actions,
        actions_label: language.text("actions-label"),
        reference_label: language.text("reference-label"),
        reference: values.reference,
        at: values.at,
        at_display: values.at_display,
        developer: state.settings.developer_hints.then(|| DeveloperDetails {
            hint: recorded.failure.hint(),
            cause: entry.cause,
            error: recorded.failure.error.as_deref().map(telemetry::escape),
            error_description: recorded.failure.error_description.as_deref().map(telemetry::escape),
            error_uri: recorded.failure.error_uri.as_deref().map(telemetry::escape),
            detail: telemetry::escape(&recorded.failure.detail),
        }),
    }
}

/// `mailto:` (or the support URL) with the reference, connection and time prefilled; never raw error text.
fn support_url(state: &AppState, language: &Language, recorded: &Recorded, at: &str) -> Option<String> {
    let connection = recorded.context.connection.as_deref().map_or("unknown", |c| connection_name(state, c));
    let support = &state.settings.support;
    if let Some(url) = &support.url {
        let mut url = url.clone();
        url.query_pairs_mut().append_pair("reference", &recorded.reference);
        return Some(url.into());
    }
    let email = support.email.as_deref()?;
    let args = [
        ("reference", recorded.reference.as_str()),
        ("connection", connection),
        ("app", display_name(state)),
        ("time", at),
    ];
    let subject = language.text_with("support-subject", &args);
    let body = language.text_with("support-body", &args);
    let encode =
        |text: &str| percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string();
    Some(format!("mailto:{email}?subject={}&body={}", encode(&subject), encode(&body)))
}

/// A page with a title and a message from `{id}-title` and `{id}-body`, and the way back to the app.
fn notice(state: &AppState, language: &Language, status: StatusCode, id: &str) -> Response {
    render(status, &notice_page(state, language, id, None))
}

/// A flow still under way: the notice, reloading itself every few seconds until the flow has ended.
fn waiting(state: &AppState, language: &Language, id: &str) -> Response {
    render(StatusCode::OK, &notice_page(state, language, id, Some(3)))
}

fn notice_page(state: &AppState, language: &Language, id: &str, refresh: Option<u32>) -> NoticePage {
    let app = display_name(state);
    NoticePage {
        chrome: Chrome::new(state, language, language.text(&format!("{id}-title"))),
        message: language.text(&format!("{id}-body")),
        back: state
            .settings
            .app
            .return_url
            .as_ref()
            .map(|url| Action::back_to_app(language, app, url.to_string(), true)),
        refresh,
    }
}

/// What a page outside any flow needs: the static files, the app's name and the way back to it.
#[derive(Debug, Clone)]
pub struct Frame {
    pub assets: Arc<Assets>,
    pub app_name: String,
    pub return_url: Option<String>,
}

/// A page for requests refused before any handler runs (not found, size limits, rate limits, panics).
pub fn plain_notice(frame: &Frame, language: &Language, status: StatusCode, title_id: &str, body_id: &str) -> Response {
    let back = frame.return_url.as_ref().map(|href| Action::back_to_app(language, &frame.app_name, href.clone(), true));
    let page = NoticePage {
        chrome: Chrome::with_assets(&frame.assets, language, language.text(title_id), frame.app_name.clone()),
        message: language.text(body_id),
        back,
        refresh: None,
    };
    render(status, &page)
}

pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(err) => {
            tracing::error!(target: "callback_gate::pages", error = %err, "a page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// `GET /static/{file}`: files compiled into the binary or built from the branding config. Hashed names are cached
/// for a year; compression is negotiated by the layer around this route.
async fn static_file(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    match state.assets.get(&file) {
        Some(asset) => {
            let cache = if asset.immutable { "public, max-age=31536000, immutable" } else { "public, max-age=300" };
            (
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
                    (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
                ],
                asset.bytes.clone(),
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{CATALOG, Failure};
    use crate::server::Application;

    async fn app(dir: &std::path::Path, mode: &str) -> Application {
        let document = format!(
            r#"
public_url = "https://app.example.com"
mode = "{mode}"
database_url = "sqlite://{}"
[app]
name = "Pages <Test> & Co"
return_url = "https://app.example.com/settings?from=gate&x='y'"
user_verify_url = "https://app.example.com/verify"
[support]
email = "support@example.com"
status_page_url = "https://status.example.com/"
[[connections]]
name = "corp"
provider = "oauth2"
client_id = "c"
client_secret_env = "SECRET"
authorization_url = "https://idp.example.com/authorize"
token_url = "https://idp.example.com/token"
"#,
            dir.join(format!("{mode}.db")).display()
        );
        let settings = crate::config::from_toml(&document, &crate::config::test_secrets).expect("config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Application::build(settings, listener, Router::new()).await.expect("app")
    }

    /// Every outcome in every language, in both modes: a page assembled from kept parts, the first time (when the
    /// parts are rendered and kept) and after, is the page rendered whole.
    #[tokio::test]
    async fn a_page_from_kept_parts_is_the_page_rendered_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut assembled = 0;
        for mode in ["production", "development"] {
            let app = app(dir.path(), mode).await;
            let state = app.state();
            for entry in CATALOG {
                for (index, tag) in crate::i18n::LANGUAGES.iter().enumerate() {
                    let language = Language::negotiate(Some(tag));
                    assert_eq!(language.index(), index);
                    let mut failure =
                        Failure::from_entry(entry).with_detail(format!("{} <failed> & \"why\"", entry.code));
                    if entry.code == "redirect_uri_mismatch" {
                        failure.hint_detail = Some("send exactly <this>".into());
                    }
                    let at = OffsetDateTime::now_utc();
                    let recorded = Recorded {
                        failure,
                        reference: telemetry::new_reference(),
                        context: flow::FailureContext { connection: Some("corp".into()), ..Default::default() },
                        at,
                    };
                    let (at, at_display) = (telemetry::rfc3339(at), readable_time(at));
                    let values = Values { reference: &recorded.reference, at: &at, at_display: &at_display };
                    let whole = failure_content(state, &language, &recorded, &values).await.render().expect("render");
                    let first = prerendered_failure(state, &language, &recorded, &values).await;
                    let again = prerendered_failure(state, &language, &recorded, &values).await;
                    if entry.actions.contains(Actions::SUPPORT) {
                        assert_eq!(
                            (first, again),
                            (None, None),
                            "{}: the support link is the request's own",
                            entry.code
                        );
                        continue;
                    }
                    assert_eq!(first.as_deref(), Some(whole.as_str()), "{} in {tag} ({mode}), first", entry.code);
                    assert_eq!(again.as_deref(), Some(whole.as_str()), "{} in {tag} ({mode}), kept", entry.code);
                    assembled += 1;
                }
            }
        }
        assert!(assembled > CATALOG.len(), "most outcomes' pages are kept: {assembled}");
    }

    #[test]
    fn times_are_shown_in_utc_to_the_minute() {
        assert_eq!(readable_time(time::macros::datetime!(2026-01-04 09:05:59.9 UTC)), "2026-01-04 09:05 UTC");
        assert_eq!(readable_time(time::macros::datetime!(2026-12-31 23:30:00 -01:00)), "2027-01-01 00:30 UTC");
    }

    /// A page with anything of the request's own besides its reference and time is rendered whole.
    #[tokio::test]
    async fn pages_with_the_requests_own_text_are_not_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = app(dir.path(), "development").await;
        let state = app.state();
        let language = Language::default();
        let entry = crate::outcome::entry("state_missing", None);
        let at = OffsetDateTime::now_utc();
        let (stamp, display) = (telemetry::rfc3339(at), readable_time(at));
        let with = |failure: Failure, context: flow::FailureContext| Recorded {
            failure,
            reference: "CG-TEST-0001".into(),
            context,
            at,
        };
        let provider_error = Failure { error: Some("<script>".into()), ..Failure::from_entry(entry) };
        let return_to =
            flow::FailureContext { return_to: Some("https://app.example.com/x".into()), ..Default::default() };
        for recorded in [with(provider_error, Default::default()), with(Failure::from_entry(entry), return_to)] {
            let values = Values { reference: &recorded.reference, at: &stamp, at_display: &display };
            assert_eq!(prerendered_failure(state, &language, &recorded, &values).await, None);
        }
        assert!(state.prerendered.is_empty());
    }
}

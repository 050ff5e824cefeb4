//! The browser side: the start, callback and result routes, the pages they render, the security headers every
//! page carries, and the static files served from the binary.

use std::time::Instant;

use askama::Template;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use time::OffsetDateTime;

use crate::crypto::{self, Secret};
use crate::flow::{self, Ending, Recorded};
use crate::outcome::Actions;
use crate::server::AppState;
use crate::store::FlowStatus;
use crate::telemetry;

/// `Content-Security-Policy` of every response: nothing but this origin's own styles and images, no script at all.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; font-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/connect/start/{link}", get(start))
        .route("/connect/callback/{connection}", get(callback))
        .route("/connect/result/{flow}", get(result))
        .route("/static/{file}", get(static_file))
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

async fn start(State(state): State<AppState>, Path(link): Path<String>, jar: CookieJar) -> Response {
    let browser = browser_from(&state, &jar);
    let ending = flow::start(&state, &link, browser).await;
    respond(&state, jar, ending).await
}

async fn callback(
    State(state): State<AppState>,
    Path(connection): Path<String>,
    RawQuery(query): RawQuery,
    jar: CookieJar,
) -> Response {
    let browser = browser_from(&state, &jar);
    let ending = flow::callback(&state, &connection, query.as_deref(), browser).await;
    respond(&state, jar, ending).await
}

async fn respond(state: &AppState, jar: CookieJar, ending: Ending) -> Response {
    match ending {
        Ending::Redirect { location, set_browser } => {
            let jar = match set_browser {
                Some(value) => jar.add(browser_cookie(state, value)),
                None => jar,
            };
            (jar, Redirect::to(&location)).into_response()
        }
        Ending::Failed(recorded) => failure_page(state, &recorded).await,
    }
}

/// `GET /connect/result/{flow}`: the outcome page, for the browser that ran the flow only.
async fn result(State(state): State<AppState>, Path(flow_id): Path<String>, jar: CookieJar) -> Response {
    let started = Instant::now();
    let flow = match state.store.find_flow(&flow_id).await {
        Ok(Some(flow)) => flow,
        Ok(None) => {
            return notice(
                &state,
                StatusCode::NOT_FOUND,
                "This page is no longer available",
                "Connection results are kept for a day. Go back to the app to see whether you are connected.",
            );
        }
        Err(err) => {
            let failure = crate::outcome::Failure::new("internal_error").with_detail(err.to_string());
            let recorded = flow::record(&state, failure, flow::FailureContext::default(), started).await;
            return failure_page(&state, &recorded).await;
        }
    };
    let same_browser = browser_from(&state, &jar).is_some_and(|b| {
        crypto::constant_time_eq(crypto::hash_hex(b.expose()).as_bytes(), flow.browser_hash.as_bytes())
    });
    if !same_browser {
        return notice(
            &state,
            StatusCode::FORBIDDEN,
            "This page belongs to another browser",
            "A connection result is only shown in the browser that made the connection. Go back to the app to see whether you are connected.",
        );
    }
    match flow.status {
        FlowStatus::Succeeded => {
            let page = SuccessPage {
                app_name: &state.settings.app.name,
                connection: &flow.connection,
                return_url: return_url(&state, flow.return_to.as_deref()),
            };
            render(StatusCode::OK, &page)
        }
        FlowStatus::Failed => {
            let code = flow.outcome_code.as_deref().unwrap_or("internal_error");
            let reference = flow.reference.clone().unwrap_or_default();
            let event = state.store.reference(&reference).await.ok().flatten();
            let mut failure = crate::outcome::Failure::from_entry(crate::outcome::entry(
                code,
                event.as_ref().and_then(|e| e.cause.as_deref()),
            ));
            if let Some(event) = &event {
                failure.error = event.error.clone();
                failure.error_description = event.error_description.clone();
                failure.error_uri = event.error_uri.clone();
                failure.detail = event.detail.clone();
                failure.hint_detail =
                    event.hint.strip_prefix(failure.entry.hint).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
            }
            let recorded = Recorded {
                failure,
                reference,
                context: flow::FailureContext {
                    connection: Some(flow.connection.clone()),
                    identifier: Some(flow.identifier.clone()),
                    flow_id: Some(flow.id.clone()),
                    link_id: Some(flow.link_id.clone()),
                    return_to: flow.return_to.clone(),
                    touches_account: true,
                },
                at: event.map_or(flow.created_at, |e| e.created_at.0),
            };
            failure_page(&state, &recorded).await
        }
        FlowStatus::Verifying => notice(
            &state,
            StatusCode::OK,
            "Waiting for confirmation",
            "The app is confirming that this connection belongs to you. Refresh this page in a moment.",
        ),
        FlowStatus::Started | FlowStatus::Exchanging => notice(
            &state,
            StatusCode::OK,
            "Still connecting",
            "The connection is not finished yet. Refresh this page in a moment.",
        ),
    }
}

/// A "back to the app" target: the link's `return_to` or `app.return_url`, and only on an allowed origin.
fn return_url(state: &AppState, return_to: Option<&str>) -> Option<String> {
    return_to
        .and_then(|r| url::Url::parse(r).ok())
        .filter(|u| state.settings.is_allowed_return(u))
        .or_else(|| state.settings.app.return_url.clone())
        .map(String::from)
}

#[derive(Template)]
#[template(path = "success.html")]
struct SuccessPage<'a> {
    app_name: &'a str,
    connection: &'a str,
    return_url: Option<String>,
}

#[derive(Template)]
#[template(path = "failure.html")]
struct FailurePage<'a> {
    app_name: &'a str,
    code: &'a str,
    class: &'a str,
    title: &'a str,
    message: &'a str,
    reference: &'a str,
    at: String,
    restart_url: Option<String>,
    return_url: Option<String>,
    support_url: Option<String>,
    status_url: Option<String>,
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
#[template(path = "notice.html")]
struct NoticePage<'a> {
    app_name: &'a str,
    title: &'a str,
    message: &'a str,
    return_url: Option<String>,
}

async fn failure_page(state: &AppState, recorded: &Recorded) -> Response {
    let entry = recorded.failure.entry;
    let context = &recorded.context;
    let restart_url = match (&context.link_id, entry.actions.contains(Actions::RESTART)) {
        (Some(link_id), true) => match state.store.find_link(link_id).await {
            Ok(Some(link)) if link.expires_at > OffsetDateTime::now_utc() => {
                Some(format!("/connect/start/{}", flow::link_token(&state.settings, link_id)))
            }
            _ => None,
        },
        _ => None,
    };
    // When restarting is not possible any more, going back to the app is how the user starts again.
    let offer_return =
        entry.actions.contains(Actions::RETURN) || entry.actions.contains(Actions::RESTART) && restart_url.is_none();
    let at = telemetry::rfc3339(recorded.at);
    let page = FailurePage {
        app_name: &state.settings.app.name,
        code: entry.code,
        class: entry.class.as_str(),
        title: entry.title,
        message: entry.message,
        reference: &recorded.reference,
        restart_url,
        return_url: offer_return.then(|| return_url(state, context.return_to.as_deref())).flatten(),
        support_url: entry.actions.contains(Actions::SUPPORT).then(|| support_url(state, recorded, &at)).flatten(),
        status_url: entry
            .actions
            .contains(Actions::STATUS)
            .then(|| state.settings.support.status_page_url.as_ref().map(|u| u.to_string()))
            .flatten(),
        at,
        developer: state.settings.mode.is_development().then(|| DeveloperDetails {
            hint: recorded.failure.hint(),
            cause: entry.cause,
            error: recorded.failure.error.as_deref().map(telemetry::escape),
            error_description: recorded.failure.error_description.as_deref().map(telemetry::escape),
            error_uri: recorded.failure.error_uri.as_deref().map(telemetry::escape),
            detail: telemetry::escape(&recorded.failure.detail),
        }),
    };
    let status = StatusCode::from_u16(entry.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    render(status, &page)
}

/// `mailto:` (or the support URL) with the reference, connection and time prefilled; never raw error text.
fn support_url(state: &AppState, recorded: &Recorded, at: &str) -> Option<String> {
    let connection = recorded.context.connection.as_deref().unwrap_or("unknown");
    let support = &state.settings.support;
    if let Some(url) = &support.url {
        let mut url = url.clone();
        url.query_pairs_mut().append_pair("reference", &recorded.reference);
        return Some(url.into());
    }
    let email = support.email.as_deref()?;
    let subject = format!("Connection problem, reference {}", recorded.reference);
    let body = format!(
        "Hello,\n\nConnecting {connection} to {} did not work.\n\nReference: {}\nConnection: {connection}\nTime (UTC): {at}\n",
        state.settings.app.name, recorded.reference
    );
    let encode =
        |text: &str| percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string();
    Some(format!("mailto:{email}?subject={}&body={}", encode(&subject), encode(&body)))
}

fn notice(state: &AppState, status: StatusCode, title: &str, message: &str) -> Response {
    let page = NoticePage {
        app_name: &state.settings.app.name,
        title,
        message,
        return_url: state.settings.app.return_url.clone().map(String::from),
    };
    render(status, &page)
}

/// A plain page for requests refused before any handler runs (size limits, rate limits).
pub fn plain_notice(status: StatusCode, title: &str, message: &str) -> Response {
    render(status, &NoticePage { app_name: "", title, message, return_url: None })
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

/// Static files, compiled into the binary so nothing has to be deployed beside it.
const STATIC_FILES: [(&str, &str, &str); 1] =
    [("style.css", "text/css; charset=utf-8", include_str!("../static/style.css"))];

async fn static_file(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let _ = headers;
    match STATIC_FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

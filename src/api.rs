//! The JSON API under `/v1`, for the app's backend: authorization links, connected accounts and references.
//! Every request carries `Authorization: Bearer <key>`; every error is `{"error": {"code", "message"}}`.

use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use url::Url;
use utoipa::{IntoParams, ToSchema};

use crate::account::{AccountStatus, ConnectedAccount, Identifier};
use crate::config::Settings;
use crate::crypto::constant_time_eq;
use crate::openapi::{ErrorBody, ReferenceDetails};
use crate::server::AppState;
use crate::store::{AccountQuery, DeliveryQuery, DeliveryRecord, DeliveryStatus, StoreError};
use crate::tokens::TokenError;
use crate::{flow, telemetry};

/// The API's routes: the OpenAPI document without a key (it is documentation), everything else behind
/// [`require_api_key`]. Every route here must be in [`crate::openapi::ApiDoc`]; `tests/api/openapi.rs` checks it.
pub fn routes(state: AppState) -> Router<AppState> {
    let keyed = Router::new()
        .route("/authorization-links", post(create_link))
        .route("/connected-accounts", get(list_accounts))
        .route("/connected-accounts/{connection}/{identifier}", get(get_account).delete(disconnect))
        .route("/connected-accounts/{connection}/{identifier}/refresh", post(refresh))
        .route("/connected-accounts/{connection}/{identifier}/token", get(get_token))
        .route("/connected-accounts/{connection}/{identifier}/verify", post(verify))
        // A fixed list of methods: TRACE would have a provider echo the request, the account's token with it.
        .route("/proxy/{connection}/{identifier}/{*path}", on(crate::proxy::METHODS, crate::proxy::forward))
        .route("/references/{reference}", get(get_reference))
        .route("/webhook-deliveries", get(list_deliveries))
        .route("/webhook-deliveries/{id}/retry", post(retry_delivery))
        .route("/user-verifications", post(verify_user))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API route") })
        .layer(middleware::from_fn_with_state(state, require_api_key));
    Router::new().route("/openapi.json", get(openapi_json)).merge(keyed)
}

/// `GET /v1/openapi.json`
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "callback-gate",
    security(()),
    responses((status = 200, description = "This document: OpenAPI 3.1 of every `/v1` route", content_type = "application/json", body = Object))
)]
pub(crate) async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::DOCUMENT.as_str()).into_response()
}

/// Whether a request is for the API, and so must be answered in JSON whatever happens.
pub fn is_api_path(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// An API error answer made outside a handler (a panic, the request timeout, a wrong method).
pub fn error_response(status: StatusCode, code: &'static str, message: String) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// An API failure: its status, a stable code, a message a developer can act on, and the field at fault.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<&'static str>,
    /// The account's status, where the error is about it (`account_not_active`).
    account_status: Option<AccountStatus>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, account_status: None }
    }

    fn invalid_field(field: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self { field: Some(field), ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message) }
    }

    pub(crate) fn connection_unknown(connection: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "connection_unknown",
            format!("no connection named \"{}\" is configured", telemetry::escape(connection)),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        tracing::error!(target: "callback_gate::api", error = %err, "store failure");
        if err.is_unavailable() {
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the database cannot be reached right now; nothing was changed, try again shortly",
            );
        }
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "the store failed; nothing was changed")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(field) = self.field {
            error["field"] = json!(field);
        }
        if let Some(status) = self.account_status {
            error["status"] = json!(status);
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Lets the request through only with a valid API key.
async fn require_api_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Err(refused) = check_api_key(&state.settings, request.headers()) {
        return refused.into_response();
    }
    next.run(request).await
}

/// Checks the bearer key against every configured key in constant time (all keys are compared, always); on
/// failure, the 401 to answer.
pub fn check_api_key(settings: &Settings, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <key> with a key from CALLBACK_GATE_API_KEYS",
        ));
    };
    let matched = settings
        .api_keys
        .iter()
        .fold(false, |found, key| constant_time_eq(key.expose().as_bytes(), presented.as_bytes()) | found);
    if !matched {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the bearer key is not valid"));
    }
    Ok(())
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the body is larger than 64 KiB");
    }
    match rejection {
        JsonRejection::JsonDataError(err) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", err.body_text())
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_content_type",
            "send the body as application/json",
        ),
        other => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {}", other.body_text()),
        ),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct LinkRequest {
    /// A configured connection's name.
    connection: String,
    /// The app's id for its end user: 1 to 255 bytes, no control characters.
    identifier: String,
    /// Where the result page's "back to the app" link leads: an https URL on one of `app.allowed_return_origins`.
    return_to: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LinkResponse {
    /// The authorization link to give the user; it connects once.
    link: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

/// `POST /v1/authorization-links`
#[utoipa::path(
    post,
    path = "/v1/authorization-links",
    tag = "callback-gate",
    request_body = LinkRequest,
    responses(
        (status = 201, description = "A fresh authorization link; the account becomes PENDING_AUTH if it is new", body = LinkResponse),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "connection_unknown", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 422, description = "A field is missing or invalid (`field` names it)", body = ErrorBody),
        (status = "default", description = "Any other failure", body = ErrorBody),
    )
)]
pub(crate) async fn create_link(
    State(state): State<AppState>,
    payload: Result<Json<LinkRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = payload.map_err(json_rejection)?;
    if state.settings.connection(&request.connection).is_none() {
        return Err(ApiError::connection_unknown(&request.connection));
    }
    let identifier = Identifier::parse(&request.identifier)
        .map_err(|err| ApiError::invalid_field("identifier", "invalid_identifier", format!("identifier {err}")))?;
    let return_to = request.return_to.as_deref().map(|raw| parse_return_to(&state, raw)).transpose()?;
    let minted = flow::mint_link(&state.settings, &state.store, &request.connection, &identifier, return_to.as_ref());
    let (link, expires_at) = minted.await?;
    Ok((StatusCode::CREATED, Json(LinkResponse { link, expires_at })).into_response())
}

/// A `return_to` is accepted only as an absolute URL on an allowed origin, written plainly: nothing a browser
/// could read as another host.
fn parse_return_to(state: &AppState, raw: &str) -> Result<Url, ApiError> {
    let invalid = |why: &str| ApiError::invalid_field("return_to", "invalid_return_to", format!("return_to {why}"));
    if raw.len() > 2048 {
        return Err(invalid("is longer than 2048 bytes"));
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace() || c == '\\' || !c.is_ascii()) {
        return Err(invalid("contains whitespace, control characters, backslashes or non-ASCII characters"));
    }
    let url = Url::parse(raw).map_err(|_| invalid("is not an absolute URL"))?;
    if !state.settings.is_allowed_return(&url) {
        return Err(invalid("is not on one of app.allowed_return_origins (https only; no user name)"));
    }
    Ok(url)
}

/// `GET /v1/connected-accounts/{connection}/{identifier}`
#[utoipa::path(
    get,
    path = "/v1/connected-accounts/{connection}/{identifier}",
    tag = "callback-gate",
    params(AccountPath),
    responses(
        (status = 200, description = "The connected account (never its tokens)", body = ConnectedAccount),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "connection_unknown or account_not_found", body = ErrorBody),
        (status = "default", description = "Any other failure", body = ErrorBody),
    )
)]
pub(crate) async fn get_account(
    State(state): State<AppState>,
    Path((connection, identifier)): Path<(String, String)>,
) -> Result<Json<ConnectedAccount>, ApiError> {
    if state.settings.connection(&connection).is_none() {
        return Err(ApiError::connection_unknown(&connection));
    }
    state.store.account(&connection, &identifier).await?.map(|account| Json(view(&state, account))).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "account_not_found",
            "no connected account for this connection and identifier",
        )
    })
}

impl From<TokenError> for ApiError {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::Missing => ApiError::new(StatusCode::CONFLICT, "no_tokens", "the account has no stored tokens"),
            TokenError::Unreadable => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "tokens_unreadable",
                "the stored tokens could not be opened: they were sealed with a key that is neither CALLBACK_GATE_SECRET_KEY nor in CALLBACK_GATE_SECRET_KEY_PREVIOUS",
            ),
            TokenError::NoRefreshToken => ApiError::new(
                StatusCode::CONFLICT,
                "no_refresh_token",
                "the provider gave no refresh token for this account (for Google, access_type=offline; for Microsoft, the offline_access scope)",
            ),
            TokenError::UnknownConnection => {
                ApiError::new(StatusCode::NOT_FOUND, "connection_unknown", "the connection is not configured")
            }
            TokenError::Refused(recorded) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "token_refresh_failed",
                format!(
                    "the provider refused the refresh ({}); details under reference {}",
                    recorded.failure.detail.split(':').next().unwrap_or("unknown"),
                    recorded.reference
                ),
            ),
            TokenError::Expired(recorded) => ApiError::new(
                StatusCode::CONFLICT,
                "token_expired",
                format!(
                    "the access token expired and the provider gave no refresh token to renew it, so the account is now EXPIRED; mint a new authorization link (details under reference {})",
                    recorded.reference
                ),
            ),
            TokenError::NoProbe => ApiError::new(
                StatusCode::CONFLICT,
                "no_probe",
                "the connection has nothing to verify accounts with: set verify_path on it (a read-only path under api_base_url, such as \"/me\")",
            ),
            TokenError::Busy => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "refresh_busy",
                "another instance's refresh of this account did not finish in time; nothing was changed, try again shortly",
            ),
            TokenError::AccountNotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "account_not_found",
                "no connected account for this connection and identifier",
            ),
            TokenError::NotActive(status) => ApiError {
                account_status: Some(status),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    "account_not_active",
                    format!("the account is {status}, so it has no usable token: {}", status_next_step(status)),
                )
            },
            TokenError::Store(err) => err.into(),
        }
    }
}

/// What the app can do about an account that has no usable token.
fn status_next_step(status: AccountStatus) -> &'static str {
    match status {
        AccountStatus::PendingAuth => "the user has not finished connecting; send them an authorization link",
        AccountStatus::PendingVerification => {
            "the app has not verified the user who connected yet (POST /v1/user-verifications)"
        }
        AccountStatus::Expired => {
            "the provider no longer accepts its tokens; mint a new authorization link so the user connects again"
        }
        AccountStatus::Disconnected => "it was disconnected; mint a new authorization link to connect it again",
        AccountStatus::Active => "try again",
    }
}

/// An account as the API shows it: with the scopes its connection asks for now and it was not granted.
fn view(state: &AppState, account: ConnectedAccount) -> ConnectedAccount {
    match state.settings.connection(&account.connection) {
        Some(settings) => account.with_required_scopes(&settings.scopes),
        None => account,
    }
}

/// Looks up a configured connection's existing account, or the API error that says why not.
async fn existing_account(state: &AppState, connection: &str, identifier: &str) -> Result<ConnectedAccount, ApiError> {
    if state.settings.connection(connection).is_none() {
        return Err(ApiError::connection_unknown(connection));
    }
    state.store.account(connection, identifier).await?.map(|account| view(state, account)).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "account_not_found",
            "no connected account for this connection and identifier",
        )
    })
}

/// The path of one connected account, as the OpenAPI document describes it.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by the OpenAPI derive only; handlers take the path as a tuple
struct AccountPath {
    /// A configured connection's name
    connection: String,
    /// The app's id for its end user
    identifier: String,
}

/// `POST /v1/connected-accounts/{connection}/{identifier}/refresh`: refreshes the tokens now.
#[utoipa::path(
    post,
    path = "/v1/connected-accounts/{connection}/{identifier}/refresh",
    tag = "callback-gate",
    params(AccountPath),
    responses(
        (status = 200, description = "Refreshed (or, when another refresh of the same tokens ran meanwhile, its result); the account as it is now", body = ConnectedAccount),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "connection_unknown or account_not_found", body = ErrorBody),
        (status = 409, description = "account_not_active (also when the account was disconnected during the refresh), no_tokens, no_refresh_token or token_expired", body = ErrorBody),
        (status = 502, description = "token_refresh_failed: the provider refused; the message names the reference and the cause. invalid_grant makes the account EXPIRED; other causes leave it as it was", body = ErrorBody),
        (status = 503, description = "refresh_busy: another instance's refresh of this account did not finish in time, or store_unavailable", body = ErrorBody),
        (status = "default", description = "Any other failure", body = ErrorBody),
    )
)]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    Path((connection, identifier)): Path<(String, String)>,
) -> Result<Json<ConnectedAccount>, ApiError> {
    existing_account(&state, &connection, &identifier).await?;
    crate::tokens::refresh(&state, &connection, &identifier).await?;
    Ok(Json(existing_account(&state, &connection, &identifier).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Verification {
    /// Whether the provider accepted the account's credential.
    ok: bool,
    /// The provider's HTTP status, where it answered.
    provider_status: Option<u16>,
    #[schema(format = DateTime)]
    checked_at: String,
    /// On failure: the outcome code (`token_rejected` or `credential_check_failed`), also the account's last error.
    code: Option<&'static str>,
    /// On failure: the reference its details are stored under.
    reference: Option<String>,
}

/// `POST /v1/connected-accounts/{connection}/{identifier}/verify`: calls the connection's probe (its
/// `verify_path`, or the preset's userinfo-like endpoint) with the stored credential.
#[utoipa::path(
    post,
    path = "/v1/connected-accounts/{connection}/{identifier}/verify",
    tag = "callback-gate",
    params(AccountPath),
    responses(
        (status = 200, description = "The check ran: ok, or not ok with the provider's status and the reference of the failure, now the account's last_error", body = Verification),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "connection_unknown or account_not_found", body = ErrorBody),
        (status = 409, description = "account_not_active, no_tokens, token_expired, or no_probe (the connection has no verify_path and its preset no probe)", body = ErrorBody),
        (status = 502, description = "token_refresh_failed: a refresh it needed was refused", body = ErrorBody),
        (status = 503, description = "refresh_busy or store_unavailable", body = ErrorBody),
        (status = "default", description = "Any other failure", body = ErrorBody),
    )
)]
pub(crate) async fn verify(
    State(state): State<AppState>,
    Path((connection, identifier)): Path<(String, String)>,
) -> Result<Json<Verification>, ApiError> {
    existing_account(&state, &connection, &identifier).await?;
    let verified = crate::tokens::verify(&state, &connection, &identifier).await?;
    Ok(Json(Verification {
        ok: verified.ok,
        provider_status: verified.provider_status,
        checked_at: telemetry::rfc3339(verified.checked_at),
        code: verified.code,
        reference: verified.reference,
    }))
}

/// `DELETE /v1/connected-accounts/{connection}/{identifier}`: revokes at the provider where it can, then deletes
/// the tokens; the account stays, DISCONNECTED, with its history.
#[utoipa::path(
    delete,
    path = "/v1/connected-accounts/{connection}/{identifier}",
    tag = "callback-gate",
    params(AccountPath),
    responses(
        (status = 200, description = "Disconnected: the account, DISCONNECTED, and whether the provider confirmed a revocation", body = DisconnectedAccount),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "connection_unknown or account_not_found", body = ErrorBody),
        (status = "default", description = "Any other failure", body = ErrorBody),
    )
)]
pub(crate) async fn disconnect(
    State(state): State<AppState>,
    Path((connection, identifier)): Path<(String, String)>,
) -> Result<Json<DisconnectedAccount>, ApiError> {
    existing_account(&state, &connection, &identifier).await?;
    let revoked = crate::tokens::disconnect(&state, &connection, &identifier).await?;
    let account = existing_account(&state, &connection, &identifier).await?;
    Ok(Json(DisconnectedAccount { account, revoked }))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DisconnectedAccount {
    #[serde(flatten)]
    account: ConnectedAccount,
    /// Whether the provider confirmed a revocation (false where it has no revocation endpoint or it failed).
    revoked: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AccessToken {
    connection: String,
    identifier: String,
    /// Valid for at least 60 seconds more, where the provider's tokens live that long.
    access_token: String,
    token_type: Option<String>,
    /// When the access token expires, where the provider said.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// The scopes granted to the account.
    scopes: Vec<String>,
}

/// `GET /v1/connected-accounts/{connection}/{identifier}/token`: the raw access token, only for connections with
/// `expose_tokens = true`.
#[utoipa::path(
    get,
    path = "/v1/connected-accounts/{connection}/{identifier}/token",
    tag = "callback-gate",
    params(AccountPath),
    responses(
        (status = 200, description = "The raw access token, valid for at least 60 seconds more where the provider's tokens live that long (refreshed first when needed)", body = AccessToken),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "tokens_not_exposed: the connection does not have expose_tokens = true", body = ErrorBody),
        (status = 404, description = "connection_unknown or account_not_found", body = ErrorBody),
        (status = 409, description = "account_not_active (the message names the status and what to do), no_tokens, or token_expired (expired with no refresh token: the account is now EXPIRED)", body = ErrorBody),
        (status = 502, description = "token_refresh_failed: the refresh it needed was refused; the message names the reference", body = ErrorBody),
        (status = 503, description = "refresh_busy or store_unavailable", body = ErrorBody),
        (status = "default", description = "Any other failure", body = ErrorBody),
    )
)]
pub(crate) async fn get_token(
    State(state): State<AppState>,
    Path((connection, identifier)): Path<(String, String)>,
) -> Result<Json<AccessToken>, ApiError> {
    let Some(settings) = state.settings.connection(&connection) else {
        return Err(ApiError::connection_unknown(&connection));
    };
    if !settings.expose_tokens {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "tokens_not_exposed",
            format!(
                "connection \"{connection}\" does not expose raw tokens: set expose_tokens = true on it if your backend must call the provider itself"
            ),
        ));
    }
    let usable = crate::tokens::usable(&state, &connection, &identifier, TOKEN_MIN_VALID).await?;
    let expires_at = usable.tokens.expires_at.and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok());
    Ok(Json(AccessToken {
        access_token: usable.tokens.access_token.expose().to_owned(),
        token_type: usable.tokens.token_type,
        expires_at: expires_at.map(telemetry::rfc3339),
        scopes: usable.scopes,
        connection,
        identifier,
    }))
}

/// How long a token handed out by the token route stays valid at least, where the provider's tokens live that long.
const TOKEN_MIN_VALID: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Only accounts of this connection.
    connection: Option<String>,
    /// Only accounts with this status.
    #[param(value_type = Option<AccountStatus>)]
    status: Option<String>,
    /// Accounts per page (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AccountPage {
    data: Vec<ConnectedAccount>,
    /// Pass it back as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

/// A page size from a list route's `limit`: 50 when absent, 1 to 200.
fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            "invalid_limit",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    Ok(limit)
}

/// `GET /v1/connected-accounts?connection=&status=&limit=&cursor=`
#[utoipa::path(
    get,
    path = "/v1/connected-accounts",
    tag = "callback-gate",
    params(ListParams),
    responses(
        (status = 200, description = "One page of connected accounts, ordered by connection and identifier", body = AccountPage),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "connection_unknown", body = ErrorBody),
        (status = 422, description = "A parameter is invalid (`field` names it)", body = ErrorBody),
        (status = "default", description = "Any other failure", body = ErrorBody),
    )
)]
pub(crate) async fn list_accounts(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<AccountPage>, ApiError> {
    let Query(params) =
        params.map_err(|err| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", err.body_text()))?;
    let connection = params.connection.filter(|c| !c.is_empty());
    if let Some(connection) = &connection
        && state.settings.connection(connection).is_none()
    {
        return Err(ApiError::connection_unknown(connection));
    }
    let status = params
        .status
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<AccountStatus>().map_err(|()| {
                ApiError::invalid_field(
                    "status",
                    "invalid_status",
                    "status must be one of PENDING_AUTH, PENDING_VERIFICATION, ACTIVE, EXPIRED, DISCONNECTED",
                )
            })
        })
        .transpose()?;
    let limit = page_limit(params.limit)?;
    let after = params.cursor.map(|c| decode_cursor::<(String, String)>(&c)).transpose()?;
    let mut data = state.store.list_accounts(&AccountQuery { connection, status, after, limit: limit + 1 }).await?;
    let next_cursor = if data.len() > limit as usize {
        data.truncate(limit as usize);
        data.last().map(|last| encode_cursor(&(&last.connection, &last.identifier)))
    } else {
        None
    };
    let data = data.into_iter().map(|account| view(&state, account)).collect();
    Ok(Json(AccountPage { data, next_cursor }))
}

/// A list route's keyset position as an opaque `cursor`: base64url of its JSON.
fn encode_cursor(position: &impl Serialize) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_string(position).unwrap_or_default())
}

/// The position a `cursor` this API returned encodes, or the error for one it did not return.
fn decode_cursor<T: serde::de::DeserializeOwned>(cursor: &str) -> Result<T, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| ApiError::invalid_field("cursor", "invalid_cursor", "cursor is not one this API returned"))
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct VerificationRequest {
    /// The `auth_request_id` the service added to `app.user_verify_url`.
    auth_request_id: String,
    /// The identifier of the app's logged-in user.
    identifier: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VerificationConfirmed {
    /// Always `confirmed`.
    status: &'static str,
    connection: String,
    identifier: String,
    /// Where the app sends the browser: the account is connected only when the browser that consented arrives.
    redirect_to: String,
    #[schema(format = DateTime)]
    expires_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VerificationFailed {
    error: VerificationError,
    /// The result page the app sends the browser to.
    redirect_to: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VerificationError {
    /// Always `user_verification_failed`.
    code: &'static str,
    message: &'static str,
    reference: String,
}

/// `POST /v1/user-verifications`: the app confirms which of its users finished a flow.
#[utoipa::path(
    post,
    path = "/v1/user-verifications",
    tag = "callback-gate",
    request_body = VerificationRequest,
    responses(
        (status = 200, description = "The identifiers match; send the browser to redirect_to", body = VerificationConfirmed),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "user_verification_failed: another user, or too late; the held tokens were discarded", body = VerificationFailed),
        (status = 404, description = "auth_request_unknown", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 422, description = "A field is missing or invalid", body = ErrorBody),
        (status = "default", description = "Any other failure", body = ErrorBody),
    )
)]
pub(crate) async fn verify_user(
    State(state): State<AppState>,
    payload: Result<Json<VerificationRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = payload.map_err(json_rejection)?;
    let identifier = Identifier::parse(&request.identifier)
        .map_err(|err| ApiError::invalid_field("identifier", "invalid_identifier", format!("identifier {err}")))?;
    match flow::verify_user(&state, &request.auth_request_id, &identifier).await? {
        // Nothing is connected yet: the browser must bring the confirmation back, so the app redirects it.
        flow::Verification::Confirmed { connection, identifier, redirect_to, expires_at } => {
            Ok(Json(VerificationConfirmed {
                status: "confirmed",
                connection,
                identifier,
                redirect_to,
                expires_at: telemetry::rfc3339(expires_at),
            })
            .into_response())
        }
        flow::Verification::Failed { reference, redirect_to, detail } => Ok((
            StatusCode::FORBIDDEN,
            Json(VerificationFailed {
                error: VerificationError { code: "user_verification_failed", message: detail, reference },
                redirect_to,
            }),
        )
            .into_response()),
        flow::Verification::Unknown => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "auth_request_unknown",
            "no held connection waits for an answer under this auth_request_id: it is unknown, was already answered, or expired",
        )),
    }
}

/// `GET /v1/references/{reference}`: the raw details and the developer hint behind a reference.
#[utoipa::path(
    get,
    path = "/v1/references/{reference}",
    tag = "callback-gate",
    params(("reference" = String, Path, description = "A reference id, `CG-XXXX-XXXX`")),
    responses(
        (status = 200, description = "The outcome behind the reference", body = ReferenceDetails),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "reference_not_found", body = ErrorBody),
        (status = "default", description = "Any other failure", body = ErrorBody),
    )
)]
pub(crate) async fn get_reference(
    State(state): State<AppState>,
    Path(reference): Path<String>,
) -> Result<Response, ApiError> {
    let not_found =
        || ApiError::new(StatusCode::NOT_FOUND, "reference_not_found", "no outcome is stored under this reference");
    if !telemetry::is_reference(&reference) {
        return Err(not_found());
    }
    let event = flow::stored_event(&state, &reference).await?.ok_or_else(not_found)?;
    Ok(Json(event).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveryParams {
    /// Only deliveries with this status: `pending`, `delivered` or `failed`.
    status: Option<String>,
    /// At most this many (1 to 200, default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One webhook event and how its delivery stands.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Delivery {
    /// The `webhook-id` header, the same on every attempt.
    id: String,
    /// `account.status_changed`, `account.refresh_failed` or `flow.failed`.
    #[serde(rename = "type")]
    event_type: String,
    status: DeliveryStatus,
    attempts: i64,
    /// The receiver's HTTP status at the last attempt, where it answered.
    last_status: Option<i64>,
    /// Why the last attempt did not deliver (an HTTP status, a timeout, a refused connection).
    last_error: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    /// When the next attempt is due, for pending deliveries.
    #[schema(format = DateTime)]
    next_attempt_at: Option<String>,
    #[schema(format = DateTime)]
    delivered_at: Option<String>,
    /// The body sent, exactly as signed.
    #[schema(value_type = Object)]
    event: serde_json::Value,
}

impl From<DeliveryRecord> for Delivery {
    fn from(record: DeliveryRecord) -> Self {
        Self {
            event: serde_json::from_str(&record.payload).unwrap_or(serde_json::Value::Null),
            id: record.id,
            event_type: record.event_type,
            status: record.status,
            attempts: record.attempts,
            last_status: record.last_status,
            last_error: record.last_error,
            created_at: telemetry::rfc3339(record.created_at),
            next_attempt_at: record.next_attempt_at.map(telemetry::rfc3339),
            delivered_at: record.delivered_at.map(telemetry::rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeliveryPage {
    /// Newest first.
    data: Vec<Delivery>,
    /// Pass it back as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// `GET /v1/webhook-deliveries?status=&limit=&cursor=`: the outbox, newest first, for operators.
#[utoipa::path(
    get,
    path = "/v1/webhook-deliveries",
    tag = "callback-gate",
    params(DeliveryParams),
    responses(
        (status = 200, description = "One page of webhook deliveries, newest first", body = DeliveryPage),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 422, description = "A parameter is invalid (`field` names it)", body = ErrorBody),
        (status = "default", description = "Any other failure", body = ErrorBody),
    )
)]
pub(crate) async fn list_deliveries(
    State(state): State<AppState>,
    params: Result<Query<DeliveryParams>, QueryRejection>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let Query(params) =
        params.map_err(|err| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", err.body_text()))?;
    let status = match params.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some("pending") => Some(DeliveryStatus::Pending),
        Some("delivered") => Some(DeliveryStatus::Delivered),
        Some("failed") => Some(DeliveryStatus::Failed),
        Some(_) => {
            return Err(ApiError::invalid_field(
                "status",
                "invalid_status",
                "status must be one of pending, delivered, failed",
            ));
        }
    };
    let limit = page_limit(params.limit)?;
    let before = params.cursor.map(|c| decode_cursor::<(i64, String)>(&c)).transpose()?;
    let mut data = state.store.list_deliveries(&DeliveryQuery { status, before, limit: limit + 1 }).await?;
    let next_cursor = if data.len() > limit as usize {
        data.truncate(limit as usize);
        data.last().map(|last| encode_cursor(&(crate::store::millis(last.created_at), &last.id)))
    } else {
        None
    };
    Ok(Json(DeliveryPage { data: data.into_iter().map(Delivery::from).collect(), next_cursor }))
}

/// `POST /v1/webhook-deliveries/{id}/retry`: attempts a delivery again now, whatever its status.
#[utoipa::path(
    post,
    path = "/v1/webhook-deliveries/{id}/retry",
    tag = "callback-gate",
    params(("id" = String, Path, description = "The delivery's id (its webhook-id)")),
    responses(
        (status = 200, description = "Pending again, due now", body = Delivery),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 404, description = "delivery_not_found", body = ErrorBody),
        (status = "default", description = "Any other failure", body = ErrorBody),
    )
)]
pub(crate) async fn retry_delivery(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Delivery>, ApiError> {
    let retried = state.store.retry_delivery(&id, OffsetDateTime::now_utc()).await?;
    retried
        .map(|record| Json(Delivery::from(record)))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "delivery_not_found", "no webhook delivery has this id"))
}

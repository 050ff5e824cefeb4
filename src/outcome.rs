//! The outcome catalog: every way a flow can end badly has a stable code, and each code fixes the HTTP status, a
//! class, what the user reads, which next steps the page offers, and a hint for the developer.
//!
//! The catalog is data: one row per code (and per cause of `failed_to_exchange_token`).

use std::fmt;

use serde::Serialize;

use crate::provider::exchange::ExchangeError;

/// Who or what a failure is down to; decides the tone of the page and whether the status page is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    UserCancelled,
    UserAction,
    AppConfiguration,
    ProviderTransient,
    Security,
    Internal,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserCancelled => "user_cancelled",
            Self::UserAction => "user_action",
            Self::AppConfiguration => "app_configuration",
            Self::ProviderTransient => "provider_transient",
            Self::Security => "security",
            Self::Internal => "internal",
        }
    }
}

/// The next steps a failure page may offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actions(u8);

impl Actions {
    pub const RESTART: Actions = Actions(1);
    pub const RETURN: Actions = Actions(2);
    pub const SUPPORT: Actions = Actions(4);
    pub const STATUS: Actions = Actions(8);

    const fn with(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    pub fn contains(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }
}

const R: Actions = Actions::RESTART;
const B: Actions = Actions::RETURN;
const RB: Actions = R.with(B);
const BS: Actions = B.with(Actions::SUPPORT);
const RBS: Actions = RB.with(Actions::SUPPORT);
const RBST: Actions = RBS.with(Actions::STATUS);

use Class::*;

/// One row of the catalog.
#[derive(Debug)]
pub struct Entry {
    pub code: &'static str,
    /// For `failed_to_exchange_token`: why the exchange failed.
    pub cause: Option<&'static str>,
    pub status: u16,
    pub class: Class,
    pub title: &'static str,
    pub message: &'static str,
    pub actions: Actions,
    /// For developers: what it means, the likely causes, what to do.
    pub hint: &'static str,
}

macro_rules! row {
    ($code:literal, $cause:expr, $status:literal, $class:ident, $actions:ident, $title:literal, $message:literal, $hint:literal) => {
        Entry {
            code: $code,
            cause: $cause,
            status: $status,
            class: $class,
            actions: $actions,
            title: $title,
            message: $message,
            hint: $hint,
        }
    };
}

#[rustfmt::skip]
pub static CATALOG: &[Entry] = &[
    row!("access_denied", None, 403, UserCancelled, RB, "Connection cancelled", "You chose not to give access, so nothing was connected. You can try again whenever you like.", "The user declined consent at the provider, or the provider refused on their behalf. Nothing to fix unless this happens for every user."),
    row!("invalid_request", None, 400, AppConfiguration, BS, "This connection could not be started", "The request to the service was not accepted. Please go back to the app and try again later, or contact support.", "The authorization request or the callback was malformed: the provider said invalid_request (a missing or repeated parameter, or a PKCE parameter it does not accept), or the callback itself had both code and error, neither, a repeated parameter, invalid percent-encoding, or an error outside RFC 6749's character set. The detail under this reference says which."),
    row!("unauthorized_client", None, 502, AppConfiguration, BS, "This connection is not available", "The app is not allowed to connect to this service right now. Please contact support.", "The provider says this client may not use the authorization code grant. Check the OAuth app's settings and grant types in the provider console."),
    row!("unsupported_response_type", None, 502, AppConfiguration, BS, "This connection is not available", "The service does not accept the way the app asked for access. Please contact support.", "The provider does not support response_type=code for this client. Enable the authorization code flow for the OAuth app."),
    row!("invalid_scope", None, 502, AppConfiguration, BS, "This connection is not available", "The app asked for access the service does not offer. Please contact support.", "A scope in the connection's `scopes` is unknown to the provider or not enabled for this OAuth app. Compare the configured scopes with the provider console."),
    row!("server_error", None, 502, ProviderTransient, RBST, "The service had a problem", "The service you are connecting to had an error. Please try again in a few minutes.", "The provider reported an internal error during authorization. It is usually transient; retrying is safe."),
    row!("temporarily_unavailable", None, 503, ProviderTransient, RBST, "The service is busy", "The service you are connecting to is temporarily unavailable. Please try again in a few minutes.", "The provider is overloaded or in maintenance. Retrying later is safe; check the provider's status page."),
    row!("login_required", None, 400, UserAction, RB, "Please sign in", "You need to be signed in to the service to connect it. Try again and sign in when asked.", "The provider needs the user to sign in, but the request did not allow an interactive prompt (for example prompt=none)."),
    row!("consent_required", None, 400, UserAction, RB, "Your approval is needed", "The service needs you to approve access. Try again and approve when asked.", "The provider needs explicit consent, but the request did not allow a prompt. Restarting shows the consent screen."),
    row!("interaction_required", None, 400, UserAction, RB, "A step is needed at the service", "The service needs you to complete a step before connecting. Try again and follow its instructions.", "The provider needs user interaction (MFA, terms, account choice) that the request did not allow."),
    row!("state_missing", None, 400, Security, B, "This page was opened without a connection", "This address is only meant to be reached from the service you were connecting to. Go back to the app to start again.", "The callback had no `state` parameter. A bookmark, a hand-typed URL, or a provider that drops `state` (check the authorization request) can cause it."),
    row!("state_invalid", None, 400, Security, B, "This connection link is not valid", "We could not match this page to a connection you started. Go back to the app to start again.", "The callback's `state` matches no flow: it was altered, is from another deployment or database, or the flow was swept long ago."),
    row!("session_expired", None, 400, UserAction, RB, "This connection took too long", "Too much time passed between starting and finishing, so we stopped it to keep your account safe. Please start again.", "The flow expired (flow_ttl_seconds, 10 minutes by default) before the provider redirected back. Long pauses on the consent screen or a reopened old tab cause it; restarting creates a fresh flow."),
    row!("browser_mismatch", None, 403, Security, B, "Finish in the same browser", "This connection was started in another browser or window. Please go back to the app and finish connecting in the browser where you started.", "The flow's browser-binding cookie is missing or belongs to another browser. The user switched browsers or devices mid-flow, blocks cookies, or someone forwarded the callback URL."),
    row!("flow_already_used", None, 409, Security, B, "This connection was already completed", "This page was already used to finish a connection. If you just connected, you are done; otherwise go back to the app to start again.", "The callback for this flow was already received (a refresh, the back button, or a replay). Codes and state are single use."),
    row!("code_missing", None, 400, Security, B, "The service did not send what we expected", "The service you were connecting to sent you back without the information we need. Please go back to the app and try again.", "The callback had `state` and an empty `code`. Check the provider's redirect and response_mode."),
    row!("issuer_mismatch", None, 400, Security, B, "This connection could not be verified", "The answer did not come from the service you were connecting to, so we stopped. Please go back to the app and try again.", "The callback's RFC 9207 `iss` parameter does not name this connection's issuer (or is missing where the provider promises it). Possible mix-up attack, or a wrong `issuer` in the config."),
    row!("id_token_invalid", None, 502, Security, BS, "This connection could not be verified", "We could not verify the answer from the service you were connecting to. Please try again later or contact support.", "The ID token failed validation (signature, issuer, audience and authorized party, expiry or nonce), or the issuer's key set could not be fetched within token_timeout_seconds. The cause chain under this reference says which check failed."),
    row!("failed_to_exchange_token", Some("invalid_grant"), 400, UserAction, RB, "Please try connecting again", "The connection could not be completed. Starting again usually fixes this.", "The provider refused the authorization code (invalid_grant): it expired, was already used, or the PKCE verifier or redirect_uri did not match. Restarting the flow can help."),
    row!("failed_to_exchange_token", Some("invalid_client"), 502, AppConfiguration, BS, "This connection is not available", "The app could not complete the connection because of a setup problem on its side. Please contact support.", "The provider rejected the client credentials (invalid_client). The client secret may have rotated or expired, or client_id is wrong; check client_secret_env and token_auth_method. Restarting will not help."),
    row!("failed_to_exchange_token", Some("redirect_uri_mismatch"), 502, AppConfiguration, BS, "This connection is not available", "The app could not complete the connection because of a setup problem on its side. Please contact support.", "The provider says the redirect URI differs from the registered one. Paste the exact redirect URI printed by `callback-gate check` into the provider console (protocol, host, path, no trailing slash). Restarting will not help."),
    row!("failed_to_exchange_token", Some("timeout"), 504, ProviderTransient, RBST, "The service is not answering", "The service you are connecting to took too long to answer. Please try again in a few minutes.", "The token endpoint did not answer within token_timeout_seconds. The provider may be degraded; restarting can help."),
    row!("failed_to_exchange_token", Some("provider_unavailable"), 502, ProviderTransient, RBST, "The service had a problem", "The service you are connecting to had an error. Please try again in a few minutes.", "The token endpoint failed (HTTP 5xx, or the connection failed). Usually transient; restarting can help."),
    row!("failed_to_exchange_token", Some("malformed_response"), 502, ProviderTransient, RBS, "The service gave an unexpected answer", "The service you are connecting to answered in a way we could not use. Please try again later or contact support.", "The token endpoint's answer was not a token response this service can use (HTML, invalid JSON, a redirect, no access_token, too large, a token_type other than bearer, or a scope, refresh_token, id_token or expires_in of the wrong type). Check token_url; the detail names the field, and the body excerpt is stored under this reference. Restarting helps only if the provider's fault was passing."),
    row!("failed_to_exchange_token", Some("post_auth_hook"), 500, Internal, RBST, "Something went wrong on our side", "The connection could not be saved. Please try again in a few minutes.", "The exchange succeeded but a post-authorization step (storing the connected account) failed. See the cause chain under this reference; restarting can help once the store is healthy."),
    row!("user_verify_url_not_configured", None, 500, AppConfiguration, BS, "This connection cannot be finished", "The app is not set up to confirm connections yet. Please contact support.", "The connection has user_verification on but app.user_verify_url is not set. Set it, or turn user_verification off for development."),
    row!("user_verification_failed", None, 403, Security, B, "This connection could not be confirmed", "We could not confirm that this connection belongs to you, so nothing was connected. Please go back to the app and try again.", "The app's user verification did not match the identifier the link was minted for, the app's confirmation was opened in another browser than the one that consented at the provider (a forwarded verify URL), or it came too late. The held tokens were discarded; the detail under this reference says which."),
    row!("insufficient_scope", None, 403, UserAction, RB, "Some permissions were not granted", "The connection needs all the permissions it asked for. Please try again and leave every permission selected.", "The provider granted fewer scopes than the connection requires, or answered an API call made through /v1/proxy with 403 for a missing scope. The missing scopes are listed under this reference and in the account's missing_scopes; mint a new authorization link so the user grants them."),
    row!("link_expired", None, 410, UserAction, B, "This link has expired", "Connection links only work for a limited time. Go back to the app to get a new one.", "The authorization link is older than link_ttl_seconds (24 hours by default). Mint a new link when the user clicks Connect rather than sending old ones."),
    row!("link_used", None, 410, UserAction, B, "This link was already used", "This link already connected your account, and each link works once. If you need to connect again, go back to the app for a new link.", "A flow started from this authorization link already connected the account, which consumes the link: reopened or forwarded, it starts no other flow, and a callback for a flow started from it earlier is refused before its code is exchanged. Mint a new link to reconnect."),
    row!("link_invalid", None, 404, Security, B, "This link is not valid", "This connection link is incomplete or was changed. Go back to the app to get a new one.", "The link's signature does not verify, or it names no stored link: it was truncated, altered, or minted with another CALLBACK_GATE_SECRET_KEY or database."),
    row!("connection_unknown", None, 404, AppConfiguration, BS, "This connection is not available", "The app is not set up for this service. Please contact support.", "The connection in the link or callback path is not configured (anymore). Check the [[connections]] names."),
    row!("redirect_uri_mismatch", None, 502, AppConfiguration, BS, "This connection is not available", "The app could not start the connection because of a setup problem on its side. Please contact support.", "The provider refused the authorization request because its redirect_uri is not registered for this OAuth app (Microsoft AADSTS50011, GitHub and Google redirect_uri_mismatch). Register the exact redirect URI below in the provider console: same scheme, host and path, no trailing slash. Restarting will not help."),
    row!("single_tenant_app", None, 502, AppConfiguration, BS, "This connection is not available", "The app could not start the connection because of a setup problem on its side. Please contact support.", "The Microsoft app registration is single-tenant, but the connection signs users in through the common or organizations endpoint (AADSTS50194). Set params.tenant on the connection to the app's tenant id or primary domain, or make the registration multi-tenant (Authentication, Supported account types) if users from other organizations must connect. Restarting will not help."),
    row!("application_not_found", None, 502, AppConfiguration, BS, "This connection is not available", "The service does not know this app. Please contact support.", "The provider does not know this client_id in the directory the user signed in to (Microsoft AADSTS700016). Check client_id, and for single-tenant Microsoft apps whether the user belongs to that tenant or the app should be multi-tenant."),
    row!("admin_consent_required", None, 403, UserAction, BS, "An administrator needs to approve this app", "Your organization requires an administrator to approve this app before you can connect it. Ask your IT administrator to approve it, then try again.", "The provider needs admin consent for the requested scopes (Microsoft AADSTS65001). An administrator of the user's tenant must grant consent for the app, or the scopes must be reduced to ones users may consent to."),
    row!("user_not_in_tenant", None, 403, UserAction, RB, "This account cannot be used here", "The account you signed in with does not belong to the organization this app works with. Try again and sign in with your work account.", "The user's account is not in the app's tenant (Microsoft AADSTS50020): a personal or guest account signed in to a single-tenant app. Make the app multi-tenant or tell users which account to use."),
    row!("admin_policy_enforced", None, 403, UserAction, BS, "Your organization blocks this app", "Your organization's administrator does not allow this app to access your account. Ask your IT administrator to allow it.", "A Google Workspace administrator restricted third-party access for this user (admin_policy_enforced). The admin must trust the app in the Admin console (Security, API controls)."),
    row!("org_internal", None, 403, AppConfiguration, BS, "This app is limited to one organization", "This app can only be used by accounts of the organization that made it. Please contact support.", "The Google OAuth app's user type is Internal, so only accounts in its own Workspace organization may consent (org_internal). Switch the consent screen to External for customers' accounts."),
    row!("app_not_verified", None, 403, AppConfiguration, BS, "This app is not available yet", "The service blocked access because the app has not finished its review. Please contact support.", "The provider blocked an unverified app or one in testing mode: only listed test users (often only the account that created the app) can connect. Add the user as a test user, or publish and verify the app in the provider console."),
    row!("workspace_approval_required", None, 403, UserAction, BS, "Your workspace needs to approve this app", "An administrator of your workspace has to approve this app before it can be connected. Ask them, then try again.", "The Slack workspace requires admin approval for apps (app_approval_request_pending / eligible / denied). A workspace admin must approve the app in Slack's app management."),
    row!("app_not_distributed", None, 403, AppConfiguration, BS, "This app is not available for your workspace", "This app can only be installed in the workspace that created it. Please contact support.", "The Slack app is not distributed (invalid_team_for_non_distributed_app): it installs only in the workspace that created it. Enable public distribution under Manage Distribution in the Slack app settings."),
    row!("application_suspended", None, 502, AppConfiguration, BS, "This connection is not available", "The service has suspended this app. Please contact support.", "The provider suspended the OAuth app (GitHub application_suspended). Check the app in the provider's developer settings; restarting will not help."),
    row!("token_refresh_failed", None, 502, ProviderTransient, BS, "The connection needs attention", "The service did not accept the saved connection. Please connect again from the app, or try again later.", "The provider refused to refresh the tokens; the cause is under this reference. invalid_grant means the user revoked access, the refresh token expired, or it was rotated elsewhere: the account is now EXPIRED and needs a new authorization link. invalid_client points at the client secret. Other causes are transient: retry later."),
    row!("token_expired", None, 409, UserAction, BS, "The connection needs attention", "The saved connection has expired. Please connect again from the app.", "The access token expired and the provider gave no refresh token to renew it, so the account is now EXPIRED. Mint a new authorization link; for Google ask for access_type=offline, for Microsoft the offline_access scope, so the next connection can be refreshed."),
    row!("token_rejected", None, 502, UserAction, BS, "The connection needs attention", "The service no longer accepts the saved connection. Please connect again from the app.", "The provider answered 401 to an API call even with a freshly refreshed token: the user revoked the app's access, their account was disabled or lost its licence, or the token is for another audience. The account stays ACTIVE until a refresh is refused, but calls will keep failing: mint a new authorization link."),
    row!("credential_rejected", None, 400, UserAction, RB, "That key was not accepted", "The service did not accept what you entered, so nothing was saved. Check it and try again.", "The connection's probe (verify_path, or the preset's probe) answered 401 or 403 to the credential the user entered on the hosted form, or Slack answered invalid_auth. Nothing was stored. The user may have pasted a wrong, revoked or too narrowly scoped key; if every key is refused, check credential_header, credential_prefix and verify_path."),
    row!("credential_check_failed", None, 502, ProviderTransient, RBST, "The key could not be checked", "The service you are connecting to did not answer our check, so nothing was saved. Please try again in a few minutes.", "The probe with the entered credential did not give a usable answer: a timeout, a failed connection, a 5xx, a redirect, or a status other than 2xx, 401 and 403 (a 404 usually means verify_path is wrong). Nothing was stored; the detail names the status."),
    row!("unknown_provider_error", None, 502, ProviderTransient, RBS, "The service reported a problem", "The service you are connecting to reported a problem. Please try again or contact support.", "The provider returned an error this service does not recognise. The raw error, error_description and error_uri are stored under this reference."),
    row!("internal_error", None, 500, Internal, RBST, "Something went wrong on our side", "We could not finish connecting. Please try again in a few minutes.", "An unexpected failure inside the service (store unavailable, for example). The cause chain is in the logs and under this reference."),
];

/// Looks up a catalog row by code and, for exchange failures, cause. Unknown codes fall back to `internal_error`.
pub fn entry(code: &str, cause: Option<&str>) -> &'static Entry {
    CATALOG
        .iter()
        .find(|e| e.code == code && e.cause == cause)
        .or_else(|| CATALOG.iter().find(|e| e.code == code))
        .unwrap_or_else(|| internal_error())
}

fn internal_error() -> &'static Entry {
    match CATALOG.iter().find(|e| e.code == "internal_error") {
        Some(entry) => entry,
        None => unreachable!("the catalog has an internal_error row"),
    }
}

/// A failure as it happened: the catalog row plus everything a developer needs behind the reference.
#[derive(Debug, Clone)]
pub struct Failure {
    pub entry: &'static Entry,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub error_uri: Option<String>,
    pub iss: Option<String>,
    pub provider_status: Option<u16>,
    pub provider_body: Option<String>,
    /// The cause chain, for logs and the reference record.
    pub detail: String,
    /// Specifics appended to the catalog's hint: the exact redirect URI, the missing scopes.
    pub hint_detail: Option<String>,
}

impl Failure {
    pub fn new(code: &str) -> Self {
        Self::from_entry(entry(code, None))
    }

    pub fn from_entry(entry: &'static Entry) -> Self {
        Self {
            entry,
            error: None,
            error_description: None,
            error_uri: None,
            iss: None,
            provider_status: None,
            provider_body: None,
            detail: String::new(),
            hint_detail: None,
        }
    }

    pub fn with_hint(mut self, specifics: impl Into<String>) -> Self {
        self.hint_detail = Some(specifics.into());
        self
    }

    /// The developer hint: the catalog's text plus what is specific to this failure.
    pub fn hint(&self) -> String {
        match &self.hint_detail {
            Some(specifics) => format!("{} {specifics}", self.entry.hint),
            None => self.entry.hint.to_owned(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    pub fn code(&self) -> &'static str {
        self.entry.code
    }

    pub fn cause(&self) -> Option<&'static str> {
        self.entry.cause
    }

    /// An error the provider sent to the callback (`error`, `error_description`, `error_uri`).
    /// The description is kept whole as evidence, but only its part within RFC 6749's character set is interpreted.
    pub fn from_callback_error(error: &str, description: Option<&str>, uri: Option<&str>) -> Self {
        let code = recognize_callback_error(error, description.map(interpretable));
        let mut failure = Self::new(code);
        failure.error = Some(error.to_owned());
        failure.error_description = description.map(str::to_owned);
        failure.error_uri = uri.map(str::to_owned);
        failure.detail = format!("the provider redirected back with error \"{error}\"");
        failure
    }

    /// A failed token exchange, named by its cause.
    pub fn from_exchange(err: &ExchangeError) -> Self {
        let recognized = match err {
            // At the token endpoint a redirect URI mismatch is a cause of failed_to_exchange_token.
            ExchangeError::Rejected { error, error_description, .. } => {
                recognize(error, error_description.as_deref()).filter(|code| *code != "redirect_uri_mismatch")
            }
            _ => None,
        };
        let mut failure = match recognized {
            Some(code) => Self::new(code),
            None => Self::from_entry(entry("failed_to_exchange_token", Some(exchange_cause(err)))),
        };
        if let ExchangeError::Rejected { error, error_description, error_uri, .. } = err {
            failure.error = Some(error.clone());
            failure.error_description = error_description.clone();
            failure.error_uri = error_uri.clone();
        }
        failure.provider_status = err.provider_status();
        failure.provider_body = err.body_excerpt().map(str::to_owned);
        failure.detail = err.to_string();
        failure
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.entry.cause {
            Some(cause) => write!(f, "{} ({cause})", self.entry.code),
            None => f.write_str(self.entry.code),
        }
    }
}

/// Errors a provider may put in the callback that have a row of their own.
const CALLBACK_ERRORS: [&str; 10] = [
    "access_denied",
    "invalid_request",
    "unauthorized_client",
    "unsupported_response_type",
    "invalid_scope",
    "server_error",
    "temporarily_unavailable",
    "login_required",
    "consent_required",
    "interaction_required",
];

/// Where a provider-specific signal is looked for.
#[derive(Debug, Clone, Copy)]
enum Signal {
    /// The `error` value, exactly.
    Error(&'static str),
    /// A fragment of `error_description`, compared case-insensitively.
    Description(&'static str),
}

/// Provider-specific signals, checked before the generic OAuth errors: they name the cause more precisely.
#[rustfmt::skip]
const RECOGNITIONS: &[(Signal, &str)] = &[
    (Signal::Description("AADSTS65001"), "admin_consent_required"),
    (Signal::Description("AADSTS90094"), "admin_consent_required"),
    (Signal::Description("AADSTS50020"), "user_not_in_tenant"),
    (Signal::Description("AADSTS50011"), "redirect_uri_mismatch"),
    (Signal::Description("AADSTS700016"), "application_not_found"),
    (Signal::Description("AADSTS50194"), "single_tenant_app"),
    (Signal::Error("admin_policy_enforced"), "admin_policy_enforced"),
    (Signal::Error("org_internal"), "org_internal"),
    (Signal::Description("has not completed the google verification process"), "app_not_verified"),
    (Signal::Description("app is currently being tested"), "app_not_verified"),
    (Signal::Description("unverified app"), "app_not_verified"),
    (Signal::Error("app_approval_request_pending"), "workspace_approval_required"),
    (Signal::Error("app_approval_request_eligible"), "workspace_approval_required"),
    (Signal::Error("app_approval_request_denied"), "workspace_approval_required"),
    (Signal::Error("invalid_team_for_non_distributed_app"), "app_not_distributed"),
    (Signal::Error("redirect_uri_mismatch"), "redirect_uri_mismatch"),
    (Signal::Error("application_suspended"), "application_suspended"),
];

/// A provider-specific code for an error, if one is recognised.
pub fn recognize(error: &str, description: Option<&str>) -> Option<&'static str> {
    let description = description.map(str::to_ascii_lowercase);
    RECOGNITIONS.iter().find_map(|(signal, code)| {
        let hit = match signal {
            Signal::Error(value) => error == *value,
            Signal::Description(fragment) => {
                description.as_deref().is_some_and(|d| d.contains(&fragment.to_ascii_lowercase()))
            }
        };
        hit.then_some(*code)
    })
}

/// The code for an error the provider put in the callback.
pub fn recognize_callback_error(error: &str, description: Option<&str>) -> &'static str {
    recognize(error, description)
        .or_else(|| CALLBACK_ERRORS.iter().find(|known| **known == error).copied())
        .unwrap_or("unknown_provider_error")
}

fn description_has(err: &ExchangeError, fragments: &[&str]) -> bool {
    match err {
        ExchangeError::Rejected { error_description: Some(description), .. } => {
            fragments.iter().any(|f| description.contains(f))
        }
        _ => false,
    }
}

/// Names why an exchange failed, from the provider's `error` field where it gave one, else from what happened.
pub fn exchange_cause(err: &ExchangeError) -> &'static str {
    match err {
        ExchangeError::Rejected { status, error, .. } => match error.as_str() {
            // GitHub says bad_verification_code and Slack invalid_code for what RFC 6749 calls invalid_grant.
            // Slack answers a refresh with a spent or revoked refresh token with invalid_refresh_token.
            "invalid_grant"
            | "bad_verification_code"
            | "invalid_code"
            | "code_already_used"
            | "invalid_refresh_token" => "invalid_grant",
            "invalid_client"
            | "incorrect_client_credentials"
            | "invalid_client_id"
            | "bad_client_secret"
            | "unauthorized_client" => "invalid_client",
            // Microsoft: AADSTS7000215 (invalid secret) and AADSTS7000222 (expired secret).
            _ if description_has(err, &["AADSTS7000215", "AADSTS7000222"]) => "invalid_client",
            "redirect_uri_mismatch" | "bad_redirect_uri" => "redirect_uri_mismatch",
            "temporarily_unavailable" | "server_error" => "provider_unavailable",
            _ if *status == 401 => "invalid_client",
            // Rate limited: the provider is fine, just not now.
            _ if *status >= 500 || *status == 429 => "provider_unavailable",
            _ => "invalid_grant",
        },
        ExchangeError::Timeout => "timeout",
        ExchangeError::Request(_) => "provider_unavailable",
        ExchangeError::Status { status, .. } if *status >= 500 || *status == 429 => "provider_unavailable",
        ExchangeError::Status { status: 401, .. } => "invalid_client",
        ExchangeError::Status { .. }
        | ExchangeError::Redirect { .. }
        | ExchangeError::Malformed { .. }
        | ExchangeError::TooLarge { .. } => "malformed_response",
    }
}

/// The troubleshooting guide, `docs/outcomes.md`, generated from the catalog so it cannot drift from the code.
pub fn troubleshooting_guide() -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "# Outcomes: the troubleshooting guide\n\n\
         <!-- Generated from src/outcome.rs by `UPDATE_DOCS=1 cargo test --test docs`; do not edit by hand. -->\n\n\
         Every way a connection flow can end badly has a stable code. The user sees the title and message (never the\n\
         provider's raw text) and the actions listed; the developer finds the raw values and the hint under the\n\
         reference shown on the page: `GET /v1/references/{reference}`, and the log event with the same reference.\n\n\
         | code | HTTP | class | user sees |\n|---|---|---|---|\n",
    );
    for entry in CATALOG {
        let code = match entry.cause {
            Some(cause) => format!("[`{}` ({cause})](#{}-{cause})", entry.code, entry.code),
            None => format!("[`{}`](#{})", entry.code, entry.code),
        };
        let _ = writeln!(out, "| {code} | {} | {} | {} |", entry.status, entry.class.as_str(), entry.title);
    }
    for entry in CATALOG {
        let heading = match entry.cause {
            Some(cause) => format!("{}-{cause}", entry.code),
            None => entry.code.to_owned(),
        };
        let _ = write!(out, "\n## {heading}\n\n");
        if let Some(cause) = entry.cause {
            let _ = writeln!(out, "`{}` with cause `{cause}`.\n", entry.code);
        }
        let _ = writeln!(out, "- **HTTP status:** {}", entry.status);
        let _ = writeln!(out, "- **Class:** `{}`", entry.class.as_str());
        let _ = writeln!(out, "- **The user reads:** \"{}\" — {}", entry.title, entry.message);
        let _ = writeln!(out, "- **The page offers:** {}", describe_actions(entry.actions));
        let signals = signals_for(entry.code);
        if !signals.is_empty() {
            let _ = writeln!(out, "- **Recognised from:** {}", signals.join("; "));
        }
        let _ = writeln!(out, "\n{}", entry.hint);
    }
    out
}

fn describe_actions(actions: Actions) -> String {
    let mut offered = Vec::new();
    if actions.contains(Actions::RESTART) {
        offered.push("try again (a new flow for the same link while it is valid; once it expired, back to the app)");
    }
    if actions.contains(Actions::RETURN) {
        offered.push("back to the app");
    }
    if actions.contains(Actions::SUPPORT) {
        offered.push("contact support with the reference prefilled");
    }
    if actions.contains(Actions::STATUS) {
        offered.push("the status page, when configured");
    }
    offered.join(", ")
}

fn signals_for(code: &str) -> Vec<String> {
    let mut signals: Vec<String> = RECOGNITIONS
        .iter()
        .filter(|(_, c)| *c == code)
        .map(|(signal, _)| match signal {
            Signal::Error(value) => format!("`error={value}`"),
            Signal::Description(fragment) => format!("`error_description` containing \"{fragment}\""),
        })
        .collect();
    if CALLBACK_ERRORS.contains(&code) {
        signals.insert(0, format!("`error={code}` on the callback"));
    }
    signals
}

/// RFC 6749 appendix A.7/A.8: `error` and `error_description` are `%x20-21 / %x23-5B / %x5D-7E` (printable ASCII
/// without `"` and `\`).
pub fn is_rfc6749_text(c: char) -> bool {
    matches!(c, '\u{20}'..='\u{21}' | '\u{23}'..='\u{5b}' | '\u{5d}'..='\u{7e}')
}

/// The part of a provider's `error_description` that can be interpreted: up to the first character outside
/// RFC 6749's set. Microsoft, for one, ends its descriptions with CR LF and trace ids; the AADSTS code before them
/// stays recognisable while the rest is kept only as evidence.
pub fn interpretable(description: &str) -> &str {
    match description.char_indices().find(|(_, c)| !is_rfc6749_text(*c)) {
        Some((end, _)) => &description[..end],
        None => description,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_unique_and_complete() {
        let mut seen = std::collections::HashSet::new();
        for entry in CATALOG {
            assert!(seen.insert((entry.code, entry.cause)), "duplicate row {}", entry.code);
            assert!((400..600).contains(&entry.status));
            assert!(!entry.title.is_empty() && !entry.message.is_empty() && !entry.hint.is_empty());
        }
    }

    #[test]
    fn exchange_errors_name_their_cause() {
        let rejected = |status, error: &str| ExchangeError::Rejected {
            status,
            error: error.into(),
            error_description: None,
            error_uri: None,
            body: String::new(),
        };
        assert_eq!(exchange_cause(&rejected(400, "invalid_grant")), "invalid_grant");
        assert_eq!(exchange_cause(&rejected(200, "bad_verification_code")), "invalid_grant");
        assert_eq!(exchange_cause(&rejected(401, "invalid_client")), "invalid_client");
        assert_eq!(exchange_cause(&rejected(400, "redirect_uri_mismatch")), "redirect_uri_mismatch");
        assert_eq!(exchange_cause(&ExchangeError::Timeout), "timeout");
        let expired_secret = ExchangeError::Rejected {
            status: 400,
            error: "invalid_request".into(),
            error_description: Some("AADSTS7000222: The provided client secret keys are expired.".into()),
            error_uri: None,
            body: String::new(),
        };
        assert_eq!(exchange_cause(&expired_secret), "invalid_client");
        assert_eq!(exchange_cause(&ExchangeError::Status { status: 500, body: String::new() }), "provider_unavailable");
        assert_eq!(
            exchange_cause(&ExchangeError::Redirect { status: 302, location: String::new() }),
            "malformed_response"
        );
    }

    #[test]
    fn unknown_callback_errors_are_named_as_such() {
        assert_eq!(recognize_callback_error("access_denied", None), "access_denied");
        assert_eq!(recognize_callback_error("<script>", None), "unknown_provider_error");
    }

    #[test]
    fn provider_specific_signals_win_over_generic_errors() {
        let aad = |code: &str| format!("{code}: The user or administrator has not consented. Trace ID: x");
        assert_eq!(recognize_callback_error("consent_required", Some(&aad("AADSTS65001"))), "admin_consent_required");
        assert_eq!(recognize_callback_error("access_denied", Some(&aad("AADSTS50020"))), "user_not_in_tenant");
        assert_eq!(recognize_callback_error("invalid_request", Some(&aad("AADSTS50011"))), "redirect_uri_mismatch");
        assert_eq!(
            recognize_callback_error("unauthorized_client", Some(&aad("AADSTS700016"))),
            "application_not_found"
        );
        assert_eq!(recognize_callback_error("admin_policy_enforced", None), "admin_policy_enforced");
        assert_eq!(recognize_callback_error("org_internal", None), "org_internal");
        assert_eq!(
            recognize_callback_error("access_denied", Some("Acme has not completed the Google verification process")),
            "app_not_verified"
        );
        assert_eq!(recognize_callback_error("app_approval_request_pending", None), "workspace_approval_required");
        assert_eq!(recognize_callback_error("redirect_uri_mismatch", None), "redirect_uri_mismatch");
        assert_eq!(recognize_callback_error("application_suspended", None), "application_suspended");
        let slack = ExchangeError::Rejected {
            status: 200,
            error: "invalid_team_for_non_distributed_app".into(),
            error_description: None,
            error_uri: None,
            body: String::new(),
        };
        assert_eq!(Failure::from_exchange(&slack).code(), "app_not_distributed");
    }
}

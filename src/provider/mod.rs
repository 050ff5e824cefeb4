//! Providers: the presets for well-known services, generic OAuth 2.0 and OpenID Connect (with discovery), and the
//! one HTTP client every provider call goes through.

pub mod exchange;
pub mod id_token;
pub mod probe;
pub mod quirks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::config::{ConnectionSettings, Kind, Mode, Settings, TokenAuthMethod};
use id_token::Jwks;

/// A connection resolved against its preset or its issuer's discovery document: everything a flow needs.
#[derive(Debug)]
pub struct Provider {
    pub connection: ConnectionSettings,
    /// None for `api_key` and `basic` connections, whose users give a credential instead of consenting.
    pub authorization_url: Option<Url>,
    pub token_url: Option<Url>,
    pub revocation_url: Option<Url>,
    pub auth_method: TokenAuthMethod,
    /// Where `/v1/proxy` sends calls: the connection's `api_base_url`, else its preset's.
    pub api_base_url: Option<Url>,
    /// The issuer the provider identifies as, where known: checked against RFC 9207 `iss` and ID tokens.
    pub issuer: Option<String>,
    /// Whether the provider promises `iss` in every authorization response (RFC 9207), so a missing one is an error.
    pub iss_required: bool,
    /// Present for OpenID connections: ID tokens are validated against these keys.
    pub jwks: Option<Jwks>,
}

impl Provider {
    pub fn name(&self) -> &str {
        &self.connection.name
    }

    pub fn is_oidc(&self) -> bool {
        self.jwks.is_some()
    }

    /// The provider's consent URL for one flow; none for a connection without one (`api_key`, `basic`).
    pub fn authorization_request(&self, state: &str, code_challenge: &str, nonce: Option<&str>) -> Option<Url> {
        let mut url = self.authorization_url.clone()?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &self.connection.client_id)
                .append_pair("redirect_uri", self.connection.redirect_uri.as_str());
            if !self.connection.scopes.is_empty() {
                query.append_pair("scope", &self.connection.scopes.join(&self.connection.scope_separator));
            }
            query.append_pair("state", state);
            if self.connection.pkce {
                query.append_pair("code_challenge", code_challenge).append_pair("code_challenge_method", "S256");
            }
            if let Some(nonce) = nonce {
                query.append_pair("nonce", nonce);
            }
            for (key, value) in &self.connection.authorization_params {
                query.append_pair(key, value);
            }
        }
        Some(url)
    }

    /// Scopes the provider says it granted; Slack and GitHub separate them with commas, the rest with spaces.
    pub fn parse_granted_scopes(&self, scope: Option<&str>) -> Vec<String> {
        match scope {
            Some(scope) => scope.split([' ', ',']).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            // RFC 6749 section 5.1: an absent `scope` means the requested scopes were granted.
            None => self.connection.scopes.clone(),
        }
    }
}

/// Every configured connection, resolved, and the HTTP client they share.
#[derive(Debug, Clone)]
pub struct Providers {
    by_name: Arc<HashMap<String, Arc<Provider>>>,
    pub http: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("connection \"{connection}\": OpenID discovery at {url} failed: {reason}")]
    Discovery { connection: String, url: String, reason: String },
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

/// The one HTTP client for provider calls: rustls, no redirects followed (a token endpoint that redirects is
/// answered as an error, never chased), bounded connect and total timeouts, https only in production.
pub fn http_client(settings: &Settings) -> Result<reqwest::Client, ResolveError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5).min(settings.token_timeout))
        .timeout(settings.token_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .https_only(settings.mode == Mode::Production)
        .user_agent(concat!("callback-gate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| ResolveError::Client(err.to_string()))
}

impl Providers {
    /// Resolves every connection; OpenID connections fetch their discovery document now, so a wrong issuer is
    /// reported at start-up rather than at a user's first callback.
    pub async fn resolve(settings: &Settings, http: reqwest::Client) -> Result<Self, ResolveError> {
        let mut by_name = HashMap::new();
        for connection in &settings.connections {
            let provider = resolve_one(connection.clone(), &http, settings.token_timeout).await?;
            by_name.insert(connection.name.clone(), Arc::new(provider));
        }
        Ok(Self { by_name: Arc::new(by_name), http })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Provider>> {
        self.by_name.get(name).cloned()
    }
}

async fn resolve_one(
    connection: ConnectionSettings,
    http: &reqwest::Client,
    token_timeout: Duration,
) -> Result<Provider, ResolveError> {
    if connection.kind == Kind::Oidc {
        return discover(connection, http, token_timeout).await;
    }
    // Configuration resolved every URL against the preset already.
    Ok(Provider {
        authorization_url: connection.authorization_url.clone(),
        token_url: connection.token_url.clone(),
        revocation_url: connection.revocation_url.clone(),
        auth_method: connection.token_auth_method.unwrap_or(TokenAuthMethod::ClientSecretBasic),
        api_base_url: connection.api_base_url.clone(),
        issuer: connection.issuer.as_ref().map(|u| trim_issuer(u.as_str())),
        iss_required: false,
        jwks: None,
        connection,
    })
}

/// The fields of an OpenID discovery document this service uses.
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: Url,
    token_endpoint: Url,
    jwks_uri: Url,
    revocation_endpoint: Option<Url>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

fn trim_issuer(issuer: &str) -> String {
    issuer.trim_end_matches('/').to_owned()
}

async fn discover(
    connection: ConnectionSettings,
    http: &reqwest::Client,
    token_timeout: Duration,
) -> Result<Provider, ResolveError> {
    let Some(issuer) = connection.issuer.clone() else {
        unreachable!("config validation requires an issuer for oidc connections");
    };
    let url = format!("{}/.well-known/openid-configuration", trim_issuer(issuer.as_str()));
    let fail =
        |reason: String| ResolveError::Discovery { connection: connection.name.clone(), url: url.clone(), reason };
    let response = http.get(&url).send().await.map_err(|err| fail(format!("unreachable ({})", error_chain(&err))))?;
    if !response.status().is_success() {
        return Err(fail(format!("answered HTTP {}", response.status().as_u16())));
    }
    let body = exchange::read_capped(response, 256 * 1024)
        .await
        .map_err(|_| fail("the document is too large or cut short".into()))?;
    let doc: Discovery =
        serde_json::from_slice(&body).map_err(|err| fail(format!("the document did not parse: {err}")))?;
    if trim_issuer(&doc.issuer) != trim_issuer(issuer.as_str()) {
        return Err(fail(format!("the document names issuer \"{}\", not the configured one", doc.issuer)));
    }
    let supports = |method: &str| doc.token_endpoint_auth_methods_supported.iter().any(|m| m == method);
    let auth_method = connection.token_auth_method.unwrap_or(
        if doc.token_endpoint_auth_methods_supported.is_empty() || supports("client_secret_basic") {
            TokenAuthMethod::ClientSecretBasic
        } else {
            TokenAuthMethod::ClientSecretPost
        },
    );
    Ok(Provider {
        authorization_url: Some(connection.authorization_url.clone().unwrap_or(doc.authorization_endpoint)),
        token_url: Some(connection.token_url.clone().unwrap_or(doc.token_endpoint)),
        revocation_url: connection.revocation_url.clone().or(doc.revocation_endpoint),
        auth_method,
        api_base_url: connection.api_base_url.clone(),
        issuer: Some(doc.issuer),
        iss_required: doc.authorization_response_iss_parameter_supported,
        jwks: Some(Jwks::new(doc.jwks_uri, token_timeout)),
        connection,
    })
}

/// An error and its sources on one line, for logs and start-up messages.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

//! OpenID Connect ID token validation: signature through the issuer's JWKS, `iss`, `aud`, `azp`, `exp` and `nonce`.

use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use tokio::sync::RwLock;
use url::Url;

use crate::crypto::constant_time_eq;

/// Public-key algorithms accepted for ID tokens; symmetric and `none` never are.
const ACCEPTED: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];
/// A key set is fetched again for an unknown `kid` at most this often (keys rotate, but floods must not refetch).
const REFETCH_AFTER: Duration = Duration::from_secs(60);
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The issuer's signing keys, fetched on first use and again when a token names a key not yet seen.
#[derive(Debug)]
pub struct Jwks {
    uri: Url,
    cache: RwLock<Option<(JwkSet, Instant)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdTokenError {
    #[error("the ID token's header did not parse: {0}")]
    Header(String),
    #[error("the ID token uses algorithm {0:?}, which is not accepted")]
    Algorithm(Algorithm),
    #[error("the issuer's key set could not be fetched: {0}")]
    KeySet(String),
    #[error("no key in the issuer's key set matches the ID token")]
    UnknownKey,
    #[error("the ID token is invalid: {0}")]
    Invalid(String),
    #[error("the ID token's audience (aud) does not include this client")]
    Audience,
    #[error("the ID token has several audiences but no authorized party (azp) naming this client")]
    AzpMissing,
    #[error("the ID token's authorized party (azp) is another client, not this one")]
    AzpMismatch,
    #[error("the ID token's nonce does not match the flow's")]
    NonceMismatch,
}

#[derive(Debug, Deserialize)]
pub struct IdTokenClaims {
    pub sub: String,
    pub iss: String,
    aud: Audience,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

impl Jwks {
    pub fn new(uri: Url) -> Self {
        Self { uri, cache: RwLock::new(None) }
    }

    pub async fn validate(
        &self,
        http: &reqwest::Client,
        token: &str,
        issuer: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<IdTokenClaims, IdTokenError> {
        let header = decode_header(token).map_err(|err| IdTokenError::Header(err.to_string()))?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(IdTokenError::Algorithm(header.alg));
        }
        let key = self.key_for(http, header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[issuer]);
        // OpenID Connect Core 3.1.3.7 item 3: a single `aud` equal to the client id, or an array that contains it.
        validation.set_audience(&[client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 60;
        let claims = decode::<IdTokenClaims>(token, &key, &validation)
            .map_err(|err| match err.kind() {
                ErrorKind::InvalidAudience => IdTokenError::Audience,
                _ => IdTokenError::Invalid(err.to_string()),
            })?
            .claims;
        check_authorized_party(&claims, client_id)?;
        match &claims.nonce {
            Some(found) if constant_time_eq(found.as_bytes(), nonce.as_bytes()) => Ok(claims),
            _ => Err(IdTokenError::NonceMismatch),
        }
    }

    async fn key_for(
        &self,
        http: &reqwest::Client,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, IdTokenError> {
        if let Some((set, fetched)) = self.cache.read().await.as_ref() {
            if let Some(key) = find_key(set, kid, alg) {
                return key;
            }
            if fetched.elapsed() < REFETCH_AFTER {
                return Err(IdTokenError::UnknownKey);
            }
        }
        let mut cache = self.cache.write().await;
        let set = self.fetch(http).await?;
        let key = find_key(&set, kid, alg).unwrap_or(Err(IdTokenError::UnknownKey));
        *cache = Some((set, Instant::now()));
        key
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<JwkSet, IdTokenError> {
        let response = http.get(self.uri.clone()).send().await.map_err(|err| IdTokenError::KeySet(err.to_string()))?;
        if !response.status().is_success() {
            return Err(IdTokenError::KeySet(format!("HTTP {}", response.status().as_u16())));
        }
        let body = super::exchange::read_capped(response, MAX_JWKS_BYTES)
            .await
            .map_err(|_| IdTokenError::KeySet("the key set is too large or cut short".into()))?;
        serde_json::from_slice(&body).map_err(|err| IdTokenError::KeySet(err.to_string()))
    }
}

fn find_key(set: &JwkSet, kid: Option<&str>, alg: Algorithm) -> Option<Result<DecodingKey, IdTokenError>> {
    let jwk = match kid {
        Some(kid) => set.find(kid),
        // Without a `kid`, only an unambiguous key set can be used.
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    }?;
    if jwk.common.key_algorithm.is_some_and(|declared| format!("{declared:?}") != format!("{alg:?}")) {
        return Some(Err(IdTokenError::Invalid("the key's declared algorithm differs from the token's".into())));
    }
    Some(DecodingKey::from_jwk(jwk).map_err(|err| IdTokenError::Invalid(err.to_string())))
}

/// `aud` is one string or an array of them (RFC 7519 section 4.1.3).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Several(Vec<String>),
}

impl Audience {
    /// Whether the token is meant for anyone besides `client_id`.
    fn names_another_than(&self, client_id: &str) -> bool {
        match self {
            Self::One(aud) => aud != client_id,
            Self::Several(auds) => auds.iter().any(|aud| aud != client_id),
        }
    }
}

/// OpenID Connect Core 3.1.3.7, items 3 to 5: `aud` includes this client (jsonwebtoken has checked that), a token
/// with other audiences names this client as `azp`, and an `azp` present is this client whatever the audiences.
fn check_authorized_party(claims: &IdTokenClaims, client_id: &str) -> Result<(), IdTokenError> {
    match claims.azp.as_deref() {
        Some(azp) if azp != client_id => Err(IdTokenError::AzpMismatch),
        Some(_) => Ok(()),
        None if claims.aud.names_another_than(client_id) => Err(IdTokenError::AzpMissing),
        None => Ok(()),
    }
}

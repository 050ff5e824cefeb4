//! OpenID Connect ID token validation: signature through the issuer's JWKS, `iss`, `aud`, `azp`, `exp` and `nonce`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use tokio::sync::watch;
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
/// A fetch that failed is tried again after this long: soon enough that a blip at the issuer does not fail every
/// login for a minute, late enough that callbacks during an outage are answered from the failure, not each with a
/// request of their own.
const RETRY_AFTER: Duration = Duration::from_secs(5);
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The issuer's signing keys, fetched on first use and again when a token names a key not yet seen.
///
/// No lock is held while the issuer is asked. A fetch runs as a task of its own, bounded by `timeout`, and callbacks
/// that need keys meanwhile wait for its outcome: a key set URL that hangs costs each of them at most one timeout,
/// however many arrive together, and a callback that goes away does not abandon the fetch for the others.
#[derive(Debug)]
pub struct Jwks {
    uri: Url,
    /// The longest a fetch may take: the provider client's total timeout, enforced here too.
    timeout: Duration,
    cache: Arc<Mutex<KeyCache>>,
}

#[derive(Debug, Default)]
struct KeyCache {
    /// The newest key set fetched successfully; a failed refetch leaves it in place.
    set: Option<Arc<JwkSet>>,
    /// The fetch in flight (its value still `None`), or the last one to finish. At most one runs at a time, and the
    /// next starts only once this one is older than `REFETCH_AFTER` (`RETRY_AFTER` if it failed).
    fetch: Option<watch::Receiver<Option<Arc<Fetched>>>>,
}

/// One fetch's outcome, and when it finished.
#[derive(Debug)]
struct Fetched {
    at: Instant,
    result: Result<Arc<JwkSet>, String>,
}

/// What a callback does about the key set, decided under the cache's lock and carried out after it is released.
enum Next {
    Found(Result<DecodingKey, IdTokenError>),
    Wait(watch::Receiver<Option<Arc<Fetched>>>),
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
    pub fn new(uri: Url, timeout: Duration) -> Self {
        Self { uri, timeout, cache: Arc::new(Mutex::new(KeyCache::default())) }
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
        let mut fetch = match self.next_step(http, kid, alg) {
            Next::Found(key) => return key,
            Next::Wait(fetch) => fetch,
        };
        let fetched = match fetch.wait_for(Option::is_some).await {
            Ok(fetched) => fetched.clone(),
            // The fetch task was dropped before it finished, as happens when the runtime shuts down.
            Err(_) => None,
        };
        match fetched.as_deref().map(|fetched| &fetched.result) {
            Some(Ok(set)) => find_key(set, kid, alg).unwrap_or(Err(IdTokenError::UnknownKey)),
            Some(Err(reason)) => Err(IdTokenError::KeySet(reason.clone())),
            None => Err(IdTokenError::KeySet("the fetch ended without an outcome".into())),
        }
    }

    /// Looks the key up in the cached set, or says which fetch to wait for, starting one where the rules allow.
    /// Holds the lock only for that decision.
    fn next_step(&self, http: &reqwest::Client, kid: Option<&str>, alg: Algorithm) -> Next {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = cache.set.as_deref().and_then(|set| find_key(set, kid, alg)) {
            return Next::Found(key);
        }
        if let Some(fetch) = &cache.fetch {
            let last = fetch.borrow().clone();
            match last.as_deref() {
                None if !fetch.is_closed() => return Next::Wait(fetch.clone()),
                None => {}
                Some(Fetched { at, result: Ok(_) }) if at.elapsed() < REFETCH_AFTER => {
                    return Next::Found(Err(IdTokenError::UnknownKey));
                }
                Some(Fetched { at, result: Err(reason) }) if at.elapsed() < RETRY_AFTER => {
                    return Next::Found(Err(IdTokenError::KeySet(reason.clone())));
                }
                Some(_) => {}
            }
        }
        let (done, fetch) = watch::channel(None);
        cache.fetch = Some(fetch.clone());
        tokio::spawn(fetch_into(http.clone(), self.uri.clone(), self.timeout, Arc::clone(&self.cache), done));
        Next::Wait(fetch)
    }
}

/// Fetches the key set, keeps it in `cache` if it is one, and tells every waiting callback how the fetch went.
async fn fetch_into(
    http: reqwest::Client,
    uri: Url,
    timeout: Duration,
    cache: Arc<Mutex<KeyCache>>,
    done: watch::Sender<Option<Arc<Fetched>>>,
) {
    let result = match tokio::time::timeout(timeout, fetch(&http, uri)).await {
        Ok(result) => result.map(Arc::new),
        Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
    };
    if let Ok(set) = &result {
        cache.lock().unwrap_or_else(PoisonError::into_inner).set = Some(Arc::clone(set));
    }
    done.send_replace(Some(Arc::new(Fetched { at: Instant::now(), result })));
}

async fn fetch(http: &reqwest::Client, uri: Url) -> Result<JwkSet, String> {
    let response = http.get(uri).send().await.map_err(|err| super::error_chain(&err))?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status().as_u16()));
    }
    let body = super::exchange::read_capped(response, MAX_JWKS_BYTES).await.map_err(|err| match err {
        super::exchange::ReadError::TooLarge => "the key set is larger than 256 KiB".to_owned(),
        super::exchange::ReadError::Request(err) => format!("the key set was cut short: {}", super::error_chain(&err)),
    })?;
    serde_json::from_slice(&body).map_err(|err| format!("the key set did not parse: {err}"))
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

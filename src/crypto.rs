//! Secrets and the operations on them: the service's secret key, sealing tokens at rest, signing authorization
//! links, hashing state and browser-binding values, and generating random values.
//!
//! Every secret value lives in a type whose `Debug` redacts it; comparisons of secrets are constant time.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Bytes of randomness in a flow's `state` (256 bits, above the 128 the issue asks for).
const STATE_BYTES: usize = 32;
/// Bytes of randomness in a PKCE verifier: 32 bytes encode to 43 characters, the RFC 7636 minimum, 256 bits.
const VERIFIER_BYTES: usize = 32;
const NONCE_LEN: usize = 24;

/// Fills a buffer from the operating system's random source.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS random source failing is not something the service can work around; every caller needs randomness
    // to be safe, so there is no degraded mode to fall back to.
    getrandom::fill(&mut buf).unwrap_or_else(|err| panic!("the operating system's random source failed: {err}"));
    buf
}

/// A random URL-safe token with `N` bytes of entropy.
pub fn random_token<const N: usize>() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<N>())
}

/// A uniformly random number in [0, 1), for jitter.
pub fn random_fraction() -> f64 {
    (u64::from_le_bytes(random_bytes::<8>()) >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether a value has the shape of a [`random_token`] of 32 bytes (43 base64url characters): what browsers and
/// apps send back for browser bindings and verification requests, checked before any lookup.
pub fn is_random_token(value: &str) -> bool {
    value.len() == 43 && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// SHA-256 of a value, hex encoded: what the store keeps instead of a state or browser-binding value.
pub fn hash_hex(value: &str) -> String {
    // The digest's own `LowerHex` writes all 64 digits at once; formatting byte by byte cost ten times the hash.
    format!("{:x}", Sha256::digest(value.as_bytes()))
}

/// Constant-time equality of two byte strings (lengths may leak, contents do not).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A string that must never reach a log, a page, a URL or an error body.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; every call site is a place where it deliberately leaves the process.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// A PKCE code verifier and its S256 challenge (RFC 7636). `plain` is never offered.
pub struct Pkce {
    pub verifier: Secret,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Self {
        let verifier = random_token::<VERIFIER_BYTES>();
        let challenge = Self::challenge_for(&verifier);
        Self { verifier: Secret(verifier), challenge }
    }

    pub fn challenge_for(verifier: &str) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("is not valid base64")]
    NotBase64,
    #[error("decodes to {0} bytes; it must be 32 random bytes")]
    WrongLength(usize),
}

/// `CALLBACK_GATE_SECRET_KEY`: 32 random bytes. Separate subkeys are derived for sealing and for signing links so
/// that one use can never stand in for the other.
#[derive(Clone)]
pub struct SecretKey {
    seal: [u8; 32],
    link: [u8; 32],
    id: String,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl SecretKey {
    pub fn from_base64(encoded: &str) -> Result<Self, KeyError> {
        let encoded = encoded.trim();
        let bytes = STANDARD
            .decode(encoded)
            .or_else(|_| URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')))
            .map_err(|_| KeyError::NotBase64)?;
        let master: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::WrongLength(bytes.len()))?;
        Ok(Self::from_bytes(master))
    }

    pub fn from_bytes(master: [u8; 32]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"callback-gate"), &master);
        let mut seal = [0u8; 32];
        let mut link = [0u8; 32];
        let mut id = [0u8; 8];
        // Output lengths are fixed and far below HKDF's limit of 255 * 32 bytes, so expansion cannot fail.
        for (info, out) in [(&b"seal v1"[..], &mut seal[..]), (b"link v1", &mut link[..]), (b"key id v1", &mut id[..])]
        {
            if hk.expand(info, out).is_err() {
                unreachable!("HKDF output length is fixed and valid");
            }
        }
        let id = id.iter().map(|b| format!("{b:02x}")).collect();
        Self { seal, link, id }
    }

    /// A new random key, for the demo.
    pub fn generate() -> Self {
        Self::from_bytes(random_bytes::<32>())
    }

    /// A short public id of the key, stored beside each ciphertext so keys can be rotated.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plaintext` with XChaCha20-Poly1305 under a random nonce, binding it to `associated_data`.
    pub fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new((&self.seal).into());
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let nonce = XNonce::from_slice(&nonce_bytes);
        let Ok(ciphertext) = cipher.encrypt(nonce, Payload { msg: plaintext, aad: associated_data }) else {
            unreachable!("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        };
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce_bytes);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Opens a value sealed by [`SecretKey::seal`]; fails when the key, the ciphertext or the associated data differ.
    pub fn open(&self, sealed: &[u8], associated_data: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new((&self.seal).into());
        cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: associated_data })
            .map_err(|_| OpenError)
    }

    /// The signature part of an authorization link for the link id.
    pub fn sign_link(&self, link_id: &str) -> String {
        self.tag(b"authorization-link\0", link_id)
    }

    /// Checks a link signature in constant time.
    pub fn verify_link(&self, link_id: &str, signature: &str) -> bool {
        constant_time_eq(self.sign_link(link_id).as_bytes(), signature.as_bytes())
    }

    /// Checks the signature of a flow `state` made by [`Keyring::new_state`], in constant time.
    fn verify_state(&self, random: &str, signature: &str) -> bool {
        constant_time_eq(self.tag(b"flow-state\0", random).as_bytes(), signature.as_bytes())
    }

    /// A 128-bit HMAC-SHA256 tag of `value` under the signing key, for the purpose named by `label`.
    fn tag(&self, label: &[u8], value: &str) -> String {
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.link) else {
            unreachable!("HMAC accepts keys of any length");
        };
        mac.update(label);
        mac.update(value.as_bytes());
        let tag: [u8; 32] = mac.finalize().into_bytes().into();
        URL_SAFE_NO_PAD.encode(&tag[..16])
    }
}

/// The current key and the previous ones still accepted while keys are rotated: new values are sealed and
/// links signed with the current key; values and links from a previous key still open and verify.
#[derive(Debug, Clone)]
pub struct Keyring {
    current: SecretKey,
    previous: Vec<SecretKey>,
}

impl Keyring {
    pub fn new(current: SecretKey, previous: Vec<SecretKey>) -> Self {
        Self { current, previous }
    }

    /// The id stored beside every new ciphertext.
    pub fn id(&self) -> &str {
        self.current.id()
    }

    pub fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Vec<u8> {
        self.current.seal(plaintext, associated_data)
    }

    pub fn sign_link(&self, link_id: &str) -> String {
        self.current.sign_link(link_id)
    }

    pub fn verify_link(&self, link_id: &str, signature: &str) -> bool {
        self.keys().fold(false, |valid, key| key.verify_link(link_id, signature) | valid)
    }

    /// A fresh flow `state`: 256 random bits, then a tag under the current key (`{random}.{tag}`). Single use;
    /// only its hash is stored. The tag lets a callback refuse a forged or garbled state without asking the store.
    pub fn new_state(&self) -> Secret {
        let random = random_token::<STATE_BYTES>();
        let tag = self.current.tag(b"flow-state\0", &random);
        Secret(format!("{random}.{tag}"))
    }

    /// Whether a callback's `state` was made by [`Keyring::new_state`] under a key of the ring.
    pub fn verify_state(&self, state: &str) -> bool {
        let Some((random, signature)) = state.split_once('.') else {
            return false;
        };
        self.keys().fold(false, |valid, key| key.verify_state(random, signature) | valid)
    }

    /// Opens a value sealed by any key of the ring.
    pub fn open(&self, sealed: &[u8], associated_data: &[u8]) -> Result<Vec<u8>, OpenError> {
        self.keys().find_map(|key| key.open(sealed, associated_data).ok()).ok_or(OpenError)
    }

    /// Opens a value whose key id was stored with it; the named key is tried first.
    pub fn open_with_id(&self, sealed: &[u8], associated_data: &[u8], key_id: &str) -> Result<Vec<u8>, OpenError> {
        match self.keys().find(|key| key.id() == key_id) {
            Some(key) => key.open(sealed, associated_data),
            None => self.open(sealed, associated_data),
        }
    }

    fn keys(&self) -> impl Iterator<Item = &SecretKey> {
        std::iter::once(&self.current).chain(&self.previous)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the sealed value could not be opened (wrong key, tampered ciphertext or different associated data)")]
pub struct OpenError;

/// Associated data binding sealed tokens to their connected account: a ciphertext copied into another account's
/// row fails to open.
pub fn account_associated_data(connection: &str, identifier: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + connection.len() + identifier.len());
    aad.extend_from_slice(b"callback-gate tokens v1\0");
    aad.extend_from_slice(connection.as_bytes());
    aad.push(0);
    aad.extend_from_slice(identifier.as_bytes());
    aad
}

/// Associated data for values sealed inside a flow record (PKCE verifier, nonce).
pub fn flow_associated_data(flow_id: &str) -> Vec<u8> {
    let mut aad = b"callback-gate flow v1\0".to_vec();
    aad.extend_from_slice(flow_id.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_hex_is_sha256_in_lowercase_hex() {
        // FIPS 180-2's test vector for "abc".
        assert_eq!(hash_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hash_hex("").len(), 64);
    }

    #[test]
    fn sealed_tokens_open_only_with_the_same_associated_data() {
        let key = SecretKey::generate();
        let sealed = key.seal(b"access-token", &account_associated_data("gmail", "user_1"));
        assert_eq!(key.open(&sealed, &account_associated_data("gmail", "user_1")).unwrap(), b"access-token");
        assert!(key.open(&sealed, &account_associated_data("gmail", "user_2")).is_err());
        assert!(key.open(&sealed, &account_associated_data("slack", "user_1")).is_err());
        assert!(SecretKey::generate().open(&sealed, &account_associated_data("gmail", "user_1")).is_err());
    }

    #[test]
    fn the_key_must_be_32_bytes_of_base64() {
        assert_eq!(SecretKey::from_base64("not base64 !").unwrap_err(), KeyError::NotBase64);
        assert_eq!(SecretKey::from_base64(&STANDARD.encode([1u8; 16])).unwrap_err(), KeyError::WrongLength(16));
        assert!(SecretKey::from_base64(&STANDARD.encode([1u8; 32])).is_ok());
    }

    #[test]
    fn link_signatures_depend_on_the_key_and_the_id() {
        let key = SecretKey::generate();
        let sig = key.sign_link("abc");
        assert!(key.verify_link("abc", &sig));
        assert!(!key.verify_link("abd", &sig));
        assert!(!SecretKey::generate().verify_link("abc", &sig));
    }

    #[test]
    fn states_verify_only_under_a_key_of_the_ring_and_unaltered() {
        let old = SecretKey::generate();
        let new = SecretKey::generate();
        let old_state = Keyring::new(old.clone(), vec![]).new_state();
        let ring = Keyring::new(new, vec![old]);
        let state = ring.new_state();
        let (random, tag) = state.expose().split_once('.').unwrap();
        assert_eq!((random.len(), tag.len()), (43, 22), "256 random bits and a 128-bit tag");
        assert!(ring.verify_state(state.expose()));
        assert!(ring.verify_state(old_state.expose()), "a state from before a rotation still verifies");
        assert_ne!(ring.new_state().expose(), state.expose());
        let link_tag = ring.sign_link(random);
        for forged in [
            random.to_owned(),
            format!("{random}."),
            format!(".{tag}"),
            format!("{random}.{link_tag}"),
            format!("{}{}.{tag}", &random[..42], if random.ends_with('A') { 'B' } else { 'A' }),
            format!("{random}.{tag}."),
            format!("{random}.{tag}x"),
        ] {
            assert!(!ring.verify_state(&forged), "{forged}");
        }
        assert!(!Keyring::new(SecretKey::generate(), vec![]).verify_state(state.expose()));
    }

    #[test]
    fn pkce_challenge_matches_rfc7636_appendix_b() {
        assert_eq!(
            Pkce::challenge_for("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn a_rotated_ring_opens_old_values_and_seals_with_the_new_key() {
        let old = SecretKey::generate();
        let new = SecretKey::generate();
        let aad = account_associated_data("gmail", "user_1");
        let before = old.seal(b"old token", &aad);
        let old_link = old.sign_link("link");
        let ring = Keyring::new(new.clone(), vec![old.clone()]);
        assert_eq!(ring.open_with_id(&before, &aad, old.id()).unwrap(), b"old token");
        assert_eq!(ring.open(&before, &aad).unwrap(), b"old token");
        assert!(ring.verify_link("link", &old_link));
        assert_eq!(ring.id(), new.id());
        let after = ring.seal(b"new token", &aad);
        assert!(old.open(&after, &aad).is_err() && new.open(&after, &aad).is_ok());
        assert!(Keyring::new(new, vec![]).open(&before, &aad).is_err(), "a dropped key opens nothing");
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::new("hunter2");
        assert!(!format!("{secret:?} {secret}").contains("hunter2"));
    }
}

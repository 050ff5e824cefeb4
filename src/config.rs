//! How the service is configured: a TOML file with `CALLBACK_GATE_<KEY>` environment overrides, secrets from the
//! environment only. Loading parses everything once into [`Settings`], whose fields cannot hold invalid values;
//! every problem found is reported on its own line.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;
use url::Url;

use crate::catalog;
pub use crate::catalog::{Kind, Preset, Quirk, TokenAuthMethod};
use crate::crypto::{Keyring, Secret, SecretKey};

/// Environment variables that carry secrets or process settings rather than config keys; they are never merged
/// into the file's keys.
const RESERVED_ENV: [&str; 5] = ["SECRET_KEY", "SECRET_KEY_PREVIOUS", "API_KEYS", "CONFIG", "LOG_FORMAT"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Production,
    Development,
}

impl Mode {
    pub fn is_development(self) -> bool {
        self == Mode::Development
    }
}

/// The file's shape, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default, deserialize_with = "text")]
    pub public_url: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub listen: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub mode: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub database_url: Option<String>,
    /// How long an authorization link can be opened, in seconds (default 24 hours, at most 30 days).
    /// Read as text, like every duration key, so that a value too large for any integer type (possible from the
    /// environment) is reported as out of bounds rather than as a type error.
    #[serde(default, deserialize_with = "text")]
    pub link_ttl_seconds: Option<String>,
    /// How long a user has between opening a link and finishing at the provider, in seconds (default 10 minutes,
    /// at most an hour).
    #[serde(default, deserialize_with = "text")]
    pub flow_ttl_seconds: Option<String>,
    /// Upper bound of one token request, in seconds (default 10, at most [`MAX_TOKEN_TIMEOUT_SECONDS`]).
    #[serde(default, deserialize_with = "text")]
    pub token_timeout_seconds: Option<String>,
    /// Whether failure pages show the developer hint and the raw provider values (default: in development mode
    /// only). Never shown in production mode.
    pub developer_hints: Option<bool>,
    #[serde(default)]
    pub app: RawApp,
    #[serde(default)]
    pub support: RawSupport,
    #[serde(default)]
    pub connections: Vec<RawConnection>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub branding: RawBranding,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub webhooks: RawWebhooks,
}

/// `[webhooks]`: where events about accounts and flows are delivered. Optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhooks {
    #[serde(default, deserialize_with = "text")]
    pub url: Option<String>,
    /// The environment variable holding the signing secret, `whsec_` and base64; several separated by spaces
    /// while rotating (each delivery is signed with every one).
    #[serde(default, deserialize_with = "text")]
    pub secret_env: Option<String>,
}

/// `[metrics]`: how `/metrics` is reached. Without it, `/metrics` answers only requests that carry a `/v1` API key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// A second address (e.g. "127.0.0.1:9090") that serves `/metrics` without an API key, for a scraper on a
    /// private network. The main address keeps answering `/metrics` with a key.
    #[serde(default, deserialize_with = "text")]
    pub listen: Option<String>,
}

/// `[branding]`: how the pages look like part of the app. Every key is optional; the defaults look finished.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBranding {
    /// The name shown on pages (default: `app.name`).
    #[serde(default, deserialize_with = "text")]
    pub name: Option<String>,
    /// A logo: a file path (served by the service) or an https URL on one of `app.allowed_return_origins`.
    #[serde(default, deserialize_with = "text")]
    pub logo: Option<String>,
    /// Accent colour for buttons, links and focus rings, `#rrggbb`; must reach WCAG AA contrast on white.
    #[serde(default, deserialize_with = "text")]
    pub accent_color: Option<String>,
    /// Accent colour in dark mode, `#rrggbb`; must reach WCAG AA contrast on the dark background.
    #[serde(default, deserialize_with = "text")]
    pub accent_color_dark: Option<String>,
    /// An extra stylesheet file loaded after the built-in one.
    #[serde(default, deserialize_with = "text")]
    pub stylesheet: Option<String>,
}

/// `[limits]`: abuse limits. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Flows one client may start per minute (default [`DEFAULT_STARTS_PER_MINUTE`]).
    pub starts_per_minute: Option<u32>,
    /// Callbacks one client may send per minute (default [`DEFAULT_CALLBACKS_PER_MINUTE`]).
    pub callbacks_per_minute: Option<u32>,
    /// Requests a client may make at once before the per-minute rate applies (default [`DEFAULT_BURST`]).
    pub burst: Option<u32>,
    /// Unexpired links kept per connection and identifier; minting more drops the oldest (default 20).
    pub links_per_identifier: Option<u32>,
    /// Started flows kept per connection and identifier; starting more drops the oldest (default 20).
    pub flows_per_identifier: Option<u32>,
    /// Peers whose `X-Forwarded-For` is believed, as addresses or CIDR ranges; the client is the right-most
    /// address not in this list (default none: the peer address is the client).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Present only to give a clear error: replaced by `trusted_proxies`.
    pub trust_forwarded_for: Option<toml_value::Ignored>,
    /// Connections served at once; further ones wait to be accepted until one closes (default
    /// [`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: Option<u32>,
    /// References kept, at most, of failures that matched no flow and no account (missing or forged state, forged
    /// links): anyone can cause those, so the oldest go first (default 100000).
    pub unmatched_references: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    #[serde(default, deserialize_with = "text")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub return_url: Option<String>,
    #[serde(default)]
    pub allowed_return_origins: Vec<String>,
    #[serde(default, deserialize_with = "text")]
    pub user_verify_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSupport {
    #[serde(default, deserialize_with = "text")]
    pub email: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub status_page_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnection {
    #[serde(default, deserialize_with = "text")]
    pub name: Option<String>,
    /// How pages name the service to users, e.g. "Gmail" (default: the preset's name, else `name`).
    #[serde(default, deserialize_with = "text")]
    pub display_name: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub provider: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub client_id: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub client_secret_env: Option<String>,
    /// Present only to give a clear error: secrets never live in the file.
    pub client_secret: Option<toml_value::Ignored>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default, deserialize_with = "text")]
    pub authorization_url: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub token_url: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub issuer: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub revocation_url: Option<String>,
    /// `client_secret_basic` or `client_secret_post`; presets and discovery choose one when absent.
    #[serde(default, deserialize_with = "text")]
    pub token_auth_method: Option<String>,
    pub user_verification: Option<bool>,
    pub expose_tokens: Option<bool>,
    /// Where `/v1/proxy` sends calls; presets set it.
    #[serde(default, deserialize_with = "text")]
    pub api_base_url: Option<String>,
    /// Values for the preset's placeholders, e.g. `{ subdomain = "acme" }` or `{ tenant = "contoso.com" }`.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Extra parameters on the consent URL, added to (and replacing) the preset's.
    #[serde(default)]
    pub authorization_params: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "text")]
    pub scope_separator: Option<String>,
    pub pkce: Option<bool>,
    /// api_key and basic connections: the header the proxy sends the credential in, and what precedes it.
    #[serde(default, deserialize_with = "text")]
    pub credential_header: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub credential_prefix: Option<String>,
    /// A path under `api_base_url` to GET with a credential before storing it, and for `verify`.
    #[serde(default, deserialize_with = "text")]
    pub verify_path: Option<String>,
}

mod toml_value {
    /// Accepts any value and keeps none of it.
    #[derive(Debug)]
    pub struct Ignored;

    impl<'de> serde::Deserialize<'de> for Ignored {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            serde::de::IgnoredAny::deserialize(deserializer).map(|_| Ignored)
        }
    }
}

/// Reads a text value leniently: environment overrides arrive typed (`CALLBACK_GATE_APP__NAME=2024` is a number),
/// but every text key must accept them as written.
fn text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Integer(i64),
        Unsigned(u64),
        Float(f64),
        Bool(bool),
    }
    Ok(Option::<Scalar>::deserialize(deserializer)?.map(|value| match value {
        Scalar::Text(text) => text,
        Scalar::Integer(n) => n.to_string(),
        Scalar::Unsigned(n) => n.to_string(),
        Scalar::Float(n) => n.to_string(),
        Scalar::Bool(b) => b.to_string(),
    }))
}

/// The validated configuration the service runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Origin browsers use, without a trailing slash.
    pub public_url: Url,
    pub listen: String,
    pub mode: Mode,
    /// Failure pages show the developer hint and raw values (development mode only).
    pub developer_hints: bool,
    /// May carry a password: its `Debug` leaves it out.
    pub database_url: DatabaseUrl,
    pub link_ttl: Duration,
    pub flow_ttl: Duration,
    pub token_timeout: Duration,
    /// [`REQUEST_TIMEOUT`]: not a config key, a field so that tests can shorten it.
    pub request_timeout: Duration,
    /// [`HEADER_READ_TIMEOUT`]: not a config key, a field so that tests can shorten it.
    pub header_read_timeout: Duration,
    pub app: AppSettings,
    pub support: SupportSettings,
    pub connections: Vec<ConnectionSettings>,
    /// `CALLBACK_GATE_SECRET_KEY`, with `CALLBACK_GATE_SECRET_KEY_PREVIOUS` still accepted for opening.
    pub secret_key: Keyring,
    pub api_keys: Vec<Secret>,
    pub limits: LimitSettings,
    pub branding: Branding,
    /// `metrics.listen`: where `/metrics` is served without an API key, if anywhere.
    pub metrics_listen: Option<String>,
    /// `[webhooks]`, when configured.
    pub webhooks: Option<WebhookSettings>,
    /// Choices that are allowed but weaken a guarantee, one line each: `check` prints them and `serve` logs them.
    pub warnings: Vec<String>,
}

/// Where webhooks go, and the keys that sign them.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: Url,
    /// The decoded keys, newest first; never shown.
    pub keys: Vec<WebhookKey>,
}

/// One Standard Webhooks signing key (the bytes after `whsec_`, decoded). `Debug` leaves it out.
#[derive(Clone)]
pub struct WebhookKey(Vec<u8>);

impl WebhookKey {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    #[cfg(test)]
    pub(crate) fn for_tests(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookKey([redacted])")
    }
}

/// Reads `[webhooks]`: an https URL (plain http to a loopback host in development), and the signing keys from the
/// environment variable `secret_env` names.
fn validate_webhooks(
    raw: RawWebhooks,
    mode: Mode,
    secrets: &dyn SecretSource,
    problems: &mut Vec<String>,
) -> Option<WebhookSettings> {
    let url = raw.url.filter(|u| !u.trim().is_empty());
    let Some(value) = url else {
        if raw.secret_env.is_some() {
            problems
                .push("webhooks.secret_env is set but webhooks.url is not: set the URL that receives events".into());
        }
        return None;
    };
    let before = problems.len();
    let url = match Url::parse(&value) {
        Ok(url) if url.scheme() == "https" && url.host().is_some() => Some(url),
        Ok(url) if url.scheme() == "http" && mode.is_development() && is_loopback_url(&url) => Some(url),
        Ok(url) if url.scheme() == "http" => {
            problems.push(format!(
                "webhooks.url \"{value}\" must use https (plain http only to a loopback host in development mode)"
            ));
            None
        }
        _ => {
            problems.push(format!("webhooks.url \"{value}\" is not an absolute https URL"));
            None
        }
    };
    let keys = match raw.secret_env.as_deref() {
        None => {
            problems.push(
                "webhooks.secret_env is required: the name of the environment variable holding the signing secret (whsec_ and base64)".into(),
            );
            Vec::new()
        }
        Some(var) => match secrets.var(var) {
            None => {
                problems.push(format!("environment variable {var} (webhooks.secret_env) is not set"));
                Vec::new()
            }
            Some(value) => {
                let mut keys = Vec::new();
                for secret in value.split([' ', ',', '\n']).filter(|s| !s.trim().is_empty()) {
                    let decoded = secret
                        .trim()
                        .strip_prefix("whsec_")
                        .and_then(|b64| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).ok());
                    match decoded {
                        Some(key) if key.len() >= 16 => keys.push(WebhookKey(key)),
                        _ => problems.push(format!(
                            "environment variable {var} (webhooks.secret_env) must hold whsec_ followed by the base64 of at least 16 random bytes (several separated by spaces while rotating)"
                        )),
                    }
                }
                if keys.is_empty() && problems.len() == before {
                    problems.push(format!("environment variable {var} (webhooks.secret_env) is empty"));
                }
                keys
            }
        },
    };
    if problems.len() > before {
        return None;
    }
    Some(WebhookSettings { url: url?, keys })
}

fn is_loopback_url(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(domain)) => domain == "localhost",
        None => false,
    }
}

/// Validated branding, files already read.
#[derive(Debug, Clone, Default)]
pub struct Branding {
    pub name: Option<String>,
    pub logo: Option<Logo>,
    pub accent: Option<Rgb>,
    pub accent_dark: Option<Rgb>,
    pub stylesheet: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Logo {
    /// Served by the service from memory.
    File { bytes: Vec<u8>, content_type: &'static str, extension: &'static str },
    /// Loaded by the browser from the app's own origin (added to the pages' CSP).
    Url(Url),
}

/// An sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    pub fn parse(value: &str) -> Option<Self> {
        let hex = value.strip_prefix('#')?;
        if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let channel = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
        Some(Self(channel(0)?, channel(2)?, channel(4)?))
    }

    pub fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }

    /// WCAG 2.2 relative luminance.
    fn luminance(self) -> f64 {
        let linear = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.04045 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
        };
        0.2126 * linear(self.0) + 0.7152 * linear(self.1) + 0.0722 * linear(self.2)
    }

    /// WCAG 2.2 contrast ratio, 1 to 21.
    pub fn contrast(self, other: Rgb) -> f64 {
        let (a, b) = (self.luminance(), other.luminance());
        (a.max(b) + 0.05) / (a.min(b) + 0.05)
    }

    /// Black or white, whichever reads better on this colour.
    pub fn text_on(self) -> Rgb {
        let (white, black) = (Rgb(255, 255, 255), Rgb(17, 17, 17));
        if self.contrast(white) >= self.contrast(black) { white } else { black }
    }
}

/// The pages' backgrounds, light and dark (the card, where text and buttons sit).
pub const LIGHT_BACKGROUND: Rgb = Rgb(0xff, 0xff, 0xff);
pub const DARK_BACKGROUND: Rgb = Rgb(0x18, 0x1b, 0x21);
/// WCAG 2.2 AA for normal text.
pub const AA_CONTRAST: f64 = 4.5;
/// Largest logo and extra stylesheet read.
const MAX_BRAND_FILE_BYTES: u64 = 512 * 1024;

#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub starts_per_minute: std::num::NonZeroU32,
    pub callbacks_per_minute: std::num::NonZeroU32,
    pub burst: std::num::NonZeroU32,
    pub links_per_identifier: u32,
    pub flows_per_identifier: u32,
    /// Peers whose `X-Forwarded-For` is believed; IPv4 ranges also match IPv4-mapped IPv6 peers.
    pub trusted_proxies: Vec<IpNet>,
    pub max_connections: usize,
    pub unmatched_references: u64,
}

#[derive(Debug, Clone)]
pub struct AppSettings {
    pub name: String,
    pub return_url: Option<Url>,
    pub allowed_return_origins: Vec<url::Origin>,
    pub user_verify_url: Option<Url>,
}

#[derive(Debug, Clone, Default)]
pub struct SupportSettings {
    pub email: Option<String>,
    pub url: Option<Url>,
    pub status_page_url: Option<Url>,
}

#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    pub name: String,
    /// How pages name the service to users.
    pub display_name: String,
    /// What `provider` named: a preset or a generic kind.
    pub provider: String,
    pub kind: Kind,
    pub preset: Option<&'static Preset>,
    /// Empty for api_key and basic connections, which have no OAuth client.
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    /// The endpoints: the connection's own, else its preset's with `params` filled in.
    pub authorization_url: Option<Url>,
    pub token_url: Option<Url>,
    pub issuer: Option<Url>,
    pub revocation_url: Option<Url>,
    /// Set by the connection or its preset; OpenID discovery chooses when neither does.
    pub token_auth_method: Option<TokenAuthMethod>,
    /// The preset's extra consent-URL parameters, then the connection's (which win).
    pub authorization_params: Vec<(String, String)>,
    pub scope_separator: String,
    pub pkce: bool,
    /// `token_type` values accepted besides `bearer`.
    pub token_types: Vec<String>,
    pub quirk: Option<Quirk>,
    /// Every placeholder value, defaults included.
    pub params: BTreeMap<String, String>,
    pub user_verification: bool,
    pub expose_tokens: bool,
    /// Where `/v1/proxy` sends this connection's calls: the connection's, else its preset's.
    pub api_base_url: Option<Url>,
    /// What a stored credential is checked against: `verify_path` under `api_base_url`, else the preset's probe.
    pub probe: Option<Url>,
    /// How the proxy and the probe send the credential: `{credential_header}: {credential_prefix}{credential}`.
    pub credential_header: String,
    pub credential_prefix: String,
    /// `{public_url}/connect/callback/{name}`: the one redirect URI registered in the provider console.
    pub redirect_uri: Url,
}

/// Every problem found in a configuration, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblems(pub Vec<String>);

impl fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "config error: {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigProblems {}

/// Where the secrets come from: the process environment in production, a map in tests.
pub trait SecretSource {
    fn var(&self, name: &str) -> Option<String>;
}

/// Reads secrets from the process environment.
pub struct ProcessEnv;

impl SecretSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> SecretSource for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// The config file to read: `--config`, else `$CALLBACK_GATE_CONFIG`, else `./callback-gate.toml`.
pub fn config_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("CALLBACK_GATE_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("callback-gate.toml"))
}

/// Reads the file, applies environment overrides and validates.
pub fn load(path: &Path) -> Result<Settings, ConfigProblems> {
    // Read here rather than by figment, which treats a missing or unreadable path as an empty file.
    let document = match std::fs::read_to_string(path) {
        Ok(document) => document,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigProblems(vec![format!(
                "config file {} not found (pass --config FILE or set CALLBACK_GATE_CONFIG)",
                path.display()
            )]));
        }
        Err(err) => {
            return Err(ConfigProblems(vec![format!("config file {} could not be read: {err}", path.display())]));
        }
    };
    let figment = Figment::from(Toml::string(&document)).merge(
        Env::prefixed("CALLBACK_GATE_").ignore(&RESERVED_ENV).split("__").map(|key| key.as_str().to_lowercase().into()),
    );
    let raw = extract(figment)?;
    validate(raw, &ProcessEnv)
}

/// Parses a TOML document without environment overrides (tests and the demo build their config this way).
pub fn from_toml(document: &str, secrets: &dyn SecretSource) -> Result<Settings, ConfigProblems> {
    let raw = extract(Figment::from(Toml::string(document)))?;
    validate(raw, secrets)
}

fn extract(figment: Figment) -> Result<RawConfig, ConfigProblems> {
    figment
        .extract::<RawConfig>()
        .map_err(|err| ConfigProblems(err.into_iter().map(|e| one_line(&e.to_string())).collect()))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Checks everything and collects every problem rather than stopping at the first.
pub fn validate(raw: RawConfig, secrets: &dyn SecretSource) -> Result<Settings, ConfigProblems> {
    let mut problems = Vec::new();

    let mode = match raw.mode.as_deref() {
        None | Some("production") => Mode::Production,
        Some("development") => Mode::Development,
        Some(other) => {
            problems.push(format!("mode \"{other}\" is not known; use \"production\" or \"development\""));
            Mode::Production
        }
    };

    let public_url = match raw.public_url.as_deref() {
        None => {
            problems.push("public_url is required: the origin browsers use, e.g. \"https://app.example.com\"".into());
            None
        }
        Some(value) => parse_public_url(value, mode).map_err(|p| problems.push(p)).ok(),
    };

    let listen = raw.listen.unwrap_or_else(|| "0.0.0.0:8080".into());
    if listen.parse::<SocketAddr>().is_err() {
        problems.push(format!("listen \"{listen}\" is not a socket address like \"0.0.0.0:8080\""));
    }

    let metrics_listen = raw.metrics.listen.filter(|value| !value.trim().is_empty());
    if let Some(address) = &metrics_listen {
        match address.parse::<std::net::SocketAddr>() {
            Err(_) => {
                problems.push(format!("metrics.listen \"{address}\" is not a socket address like \"127.0.0.1:9090\""))
            }
            Ok(parsed) if parsed.port() != 0 && listen.parse::<std::net::SocketAddr>().ok() == Some(parsed) => problems
                .push(format!("metrics.listen \"{address}\" is the same address as listen; give it another port")),
            Ok(_) => {}
        }
    }

    let database_url = raw.database_url.unwrap_or_else(|| "sqlite://callback-gate.db".into());
    if let Err(err) = crate::store::Backend::of(&database_url) {
        problems.push(err.to_string());
    }

    let link_ttl =
        seconds("link_ttl_seconds", raw.link_ttl_seconds.as_deref(), 24 * 60 * 60, LINK_TTL_BOUND, &mut problems);
    let flow_ttl = seconds("flow_ttl_seconds", raw.flow_ttl_seconds.as_deref(), 10 * 60, FLOW_TTL_BOUND, &mut problems);
    let token_timeout =
        seconds("token_timeout_seconds", raw.token_timeout_seconds.as_deref(), 10, TOKEN_TIMEOUT_BOUND, &mut problems);

    let app = validate_app(raw.app, mode, &mut problems);
    let limits = validate_limits(raw.limits, &mut problems);
    let branding = validate_branding(raw.branding, &app, &mut problems);
    let support = validate_support(raw.support, &mut problems);

    let mut seen = HashSet::new();
    let mut connections = Vec::new();
    if raw.connections.is_empty() {
        problems.push("no [[connections]] configured; add at least one".into());
    }
    for (index, connection) in raw.connections.into_iter().enumerate() {
        if let Some(name) = &connection.name
            && !seen.insert(name.clone())
        {
            problems.push(format!("connections[{index}]: duplicate connection name \"{name}\""));
            continue;
        }
        if let Some(settings) =
            validate_connection(index, connection, public_url.as_ref(), mode, secrets, &mut problems)
        {
            connections.push(settings);
        }
    }

    let secret_key = match secrets.var("CALLBACK_GATE_SECRET_KEY") {
        None => {
            problems.push("CALLBACK_GATE_SECRET_KEY is not set; generate one with: openssl rand -base64 32".into());
            None
        }
        Some(value) => SecretKey::from_base64(&value)
            .map_err(|err| {
                problems.push(format!("CALLBACK_GATE_SECRET_KEY {err} (generate one with: openssl rand -base64 32)"))
            })
            .ok(),
    };

    let mut previous_keys = Vec::new();
    for (index, value) in secrets.var("CALLBACK_GATE_SECRET_KEY_PREVIOUS").unwrap_or_default().split(',').enumerate() {
        if value.trim().is_empty() {
            continue;
        }
        match SecretKey::from_base64(value) {
            Ok(key) => previous_keys.push(key),
            Err(err) => problems.push(format!("CALLBACK_GATE_SECRET_KEY_PREVIOUS (key {}) {err}", index + 1)),
        }
    }

    let api_keys: Vec<Secret> = secrets
        .var("CALLBACK_GATE_API_KEYS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .map(Secret::new)
        .collect();
    if api_keys.is_empty() {
        problems.push("CALLBACK_GATE_API_KEYS is not set; give at least one bearer key for the /v1 API".into());
    } else if api_keys.iter().any(|key| key.expose().len() < 16) {
        problems.push("CALLBACK_GATE_API_KEYS: every key must be at least 16 characters".into());
    }

    let mut warnings: Vec<String> = connections
        .iter()
        .filter(|connection| mode == Mode::Production && !connection.user_verification)
        .map(|connection| {
            format!(
                "connection \"{}\" has user_verification = false in production mode: anyone holding a user's authorization link could connect their own {} account to that user; leave it on (with app.user_verify_url) unless every link reaches only the user it was minted for",
                connection.name, connection.display_name
            )
        })
        .collect();
    if let (Some(url), Ok(address)) = (&public_url, listen.parse::<SocketAddr>())
        && url.scheme() == "https"
        && is_internal(address.ip())
        && limits.trusted_proxies.is_empty()
    {
        warnings.push(format!(
            "public_url is https but listen \"{listen}\" is a loopback or private address, so requests likely arrive through a proxy; with limits.trusted_proxies empty every client counts as the proxy's address and all share one rate limit: list the proxy's addresses in limits.trusted_proxies, e.g. [\"127.0.0.1\"] for a proxy on this host"
        ));
    }

    let webhooks = validate_webhooks(raw.webhooks, mode, secrets, &mut problems);

    match (public_url, secret_key, problems.is_empty()) {
        (Some(public_url), Some(secret_key), true) => Ok(Settings {
            secret_key: Keyring::new(secret_key, previous_keys),
            public_url,
            listen,
            mode,
            developer_hints: mode.is_development() && raw.developer_hints.unwrap_or(true),
            database_url: DatabaseUrl(database_url),
            link_ttl,
            flow_ttl,
            token_timeout,
            request_timeout: REQUEST_TIMEOUT,
            header_read_timeout: HEADER_READ_TIMEOUT,
            app,
            support,
            connections,
            api_keys,
            limits,
            branding,
            metrics_listen,
            webhooks,
            warnings,
        }),
        _ => Err(ConfigProblems(problems)),
    }
}

/// The largest value of a duration key, and how `check` says it.
struct Bound {
    seconds: u64,
    reads: &'static str,
}

/// Links are minted for a user who is about to click; a month covers an invitation sent by email.
const LINK_TTL_BOUND: Bound = Bound { seconds: 30 * 24 * 60 * 60, reads: "30 days" };
/// A flow is one sitting at the provider's consent screen.
const FLOW_TTL_BOUND: Bound = Bound { seconds: 60 * 60, reads: "1 hour" };
/// Largest `token_timeout_seconds`. A token request runs inside the browser's callback request, which may last
/// [`REQUEST_TIMEOUT`]; ending well inside it leaves the user the `failed_to_exchange_token` page with its reference
/// rather than the bare request timeout.
pub const MAX_TOKEN_TIMEOUT_SECONDS: u64 = 20;
const TOKEN_TIMEOUT_BOUND: Bound = Bound { seconds: MAX_TOKEN_TIMEOUT_SECONDS, reads: "20 seconds" };
/// No request may take longer than this, whatever a provider does.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const _: () = assert!(MAX_TOKEN_TIMEOUT_SECONDS < REQUEST_TIMEOUT.as_secs());
/// How long a client has to send a request's head, on a new connection and between requests on a kept-alive one;
/// then the connection is closed. This bounds a slowloris client, a connection that never speaks and an idle
/// keep-alive connection alike. A proxy in front should close its idle upstream connections sooner.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);

/// A duration key: whole seconds from 1 to its bound. The bound is what keeps `now + ttl` a representable time;
/// the value is written back as given, so the operator can find it.
fn seconds(key: &str, value: Option<&str>, default: u64, bound: Bound, problems: &mut Vec<String>) -> Duration {
    let Some(value) = value else {
        return Duration::from_secs(default);
    };
    let allowed = format!("write 1 to {} ({})", bound.seconds, bound.reads);
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    match value.parse::<u64>() {
        Ok(secs @ 1..) if secs <= bound.seconds => return Duration::from_secs(secs),
        Ok(0) => problems.push(format!("{key} is 0; {allowed}")),
        // Digits that do not fit in 64 bits are past every bound too.
        _ if digits => problems.push(format!("{key} is {value}, more than the maximum; {allowed}")),
        _ => problems.push(format!("{key} \"{value}\" is not a whole number of seconds; {allowed}")),
    }
    Duration::from_secs(default)
}

fn validate_branding(raw: RawBranding, app: &AppSettings, problems: &mut Vec<String>) -> Branding {
    let mut colour = |key: &str, value: Option<String>, background: Rgb, mode: &str| {
        let value = value?;
        let Some(rgb) = Rgb::parse(value.trim()) else {
            problems.push(format!("branding.{key} \"{value}\" is not a colour like \"#0b57d0\""));
            return None;
        };
        let ratio = rgb.contrast(background);
        if ratio < AA_CONTRAST {
            problems.push(format!(
                "branding.{key} \"{value}\" has a contrast of {ratio:.2}:1 against the {mode} page background ({}); WCAG AA needs at least 4.5:1",
                background.hex()
            ));
            return None;
        }
        Some(rgb)
    };
    let accent = colour("accent_color", raw.accent_color, LIGHT_BACKGROUND, "light");
    let accent_dark = colour("accent_color_dark", raw.accent_color_dark, DARK_BACKGROUND, "dark");
    let logo = raw.logo.and_then(|value| {
        if value.starts_with("https://") || value.starts_with("http://") {
            match Url::parse(&value) {
                Ok(url) if url.scheme() == "https" && app.allowed_return_origins.contains(&url.origin()) => {
                    Some(Logo::Url(url))
                }
                _ => {
                    problems.push(format!(
                        "branding.logo \"{value}\" must be an https URL on one of app.allowed_return_origins, or a file path"
                    ));
                    None
                }
            }
        } else {
            let extension = Path::new(&value).extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
            let content_type = match extension.as_deref() {
                Some("png") => ("image/png", "png"),
                Some("svg") => ("image/svg+xml", "svg"),
                Some("jpg" | "jpeg") => ("image/jpeg", "jpg"),
                Some("webp") => ("image/webp", "webp"),
                _ => {
                    problems.push(format!("branding.logo \"{value}\" must be a .png, .svg, .jpg or .webp file"));
                    return None;
                }
            };
            read_brand_file("branding.logo", &value, problems)
                .map(|bytes| Logo::File { bytes, content_type: content_type.0, extension: content_type.1 })
        }
    });
    let stylesheet = raw.stylesheet.and_then(|path| {
        let bytes = read_brand_file("branding.stylesheet", &path, problems)?;
        String::from_utf8(bytes)
            .map_err(|_| problems.push(format!("branding.stylesheet {path} is not UTF-8 text")))
            .ok()
    });
    Branding { name: raw.name.filter(|n| !n.trim().is_empty()), logo, accent, accent_dark, stylesheet }
}

fn read_brand_file(key: &str, path: &str, problems: &mut Vec<String>) -> Option<Vec<u8>> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() && meta.len() <= MAX_BRAND_FILE_BYTES => {}
        Ok(meta) if meta.is_file() => {
            problems.push(format!("{key} {path} is larger than {} KiB", MAX_BRAND_FILE_BYTES / 1024));
            return None;
        }
        _ => {
            problems.push(format!("{key} {path} is not a readable file"));
            return None;
        }
    }
    std::fs::read(path).map_err(|err| problems.push(format!("{key} {path} could not be read: {err}"))).ok()
}

/// Default per-client rates and burst: generous enough that a legitimate burst from one address (a class or an
/// office behind one NAT or proxy starting 150 flows in a minute) is served, while a single client flooding the
/// service is still slowed. Tight limits stay available by configuration.
pub const DEFAULT_STARTS_PER_MINUTE: u32 = 300;
pub const DEFAULT_CALLBACKS_PER_MINUTE: u32 = 300;
pub const DEFAULT_BURST: u32 = 200;

/// Open connections served at once by default: far more than one instance needs, few enough that file descriptors
/// and memory stay bounded under a flood of connections.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;

fn validate_limits(raw: RawLimits, problems: &mut Vec<String>) -> LimitSettings {
    if raw.trust_forwarded_for.is_some() {
        problems.push(
            "limits.trust_forwarded_for was replaced by limits.trusted_proxies: list the addresses or CIDR ranges of your proxies instead, e.g. trusted_proxies = [\"10.0.0.0/8\"]".into(),
        );
    }
    let mut trusted_proxies = Vec::new();
    for (index, value) in raw.trusted_proxies.iter().enumerate() {
        match parse_proxy_range(value) {
            Some(range) => trusted_proxies.push(range),
            None => problems.push(format!(
                "limits.trusted_proxies[{index}] \"{value}\" is not an IP address or CIDR range; write e.g. \"10.0.0.0/8\", \"192.0.2.7\" or \"2001:db8::/32\""
            )),
        }
    }
    let mut positive = |key: &str, value: Option<u32>, default: u32| {
        let value = value.unwrap_or(default);
        std::num::NonZeroU32::new(value).unwrap_or_else(|| {
            problems.push(format!("limits.{key} must be at least 1"));
            std::num::NonZeroU32::MIN
        })
    };
    LimitSettings {
        starts_per_minute: positive("starts_per_minute", raw.starts_per_minute, DEFAULT_STARTS_PER_MINUTE),
        callbacks_per_minute: positive("callbacks_per_minute", raw.callbacks_per_minute, DEFAULT_CALLBACKS_PER_MINUTE),
        burst: positive("burst", raw.burst, DEFAULT_BURST),
        links_per_identifier: positive("links_per_identifier", raw.links_per_identifier, 20).get(),
        flows_per_identifier: positive("flows_per_identifier", raw.flows_per_identifier, 20).get(),
        trusted_proxies,
        max_connections: positive("max_connections", raw.max_connections, DEFAULT_MAX_CONNECTIONS).get() as usize,
        unmatched_references: match raw.unmatched_references {
            Some(0) => {
                problems.push("limits.unmatched_references must be at least 1".into());
                1
            }
            value => value.unwrap_or(100_000),
        },
    }
}

/// A trusted proxy: a CIDR range, or a bare address meaning just that address (/32 or /128). An IPv4-mapped IPv6
/// range is read as the IPv4 range it maps, since peers are compared in their IPv4 form.
fn parse_proxy_range(value: &str) -> Option<IpNet> {
    let value = value.trim();
    let range = value.parse::<IpNet>().ok().or_else(|| value.parse::<IpAddr>().ok().map(IpNet::from))?.trunc();
    if let IpNet::V6(v6) = range
        && let Some(v4) = v6.network().to_ipv4_mapped()
        && v6.prefix_len() >= 96
    {
        return Ipv4Net::new(v4, v6.prefix_len() - 96).ok().map(IpNet::V4);
    }
    Some(range)
}

/// Whether a listening address is reachable only from the host or its private network, as behind a proxy.
fn is_internal(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local(),
    }
}

fn parse_public_url(value: &str, mode: Mode) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|_| {
        format!("public_url \"{value}\" is not an absolute URL; use the origin browsers use, e.g. \"https://app.example.com\"")
    })?;
    match url.scheme() {
        "https" => {}
        "http" if mode.is_development() => {}
        "http" => {
            return Err(format!(
                "public_url \"{value}\" uses plain http; production mode requires https (set mode = \"development\" for local testing)"
            ));
        }
        other => {
            return Err(format!("public_url \"{value}\" has scheme \"{other}\"; it must be https"));
        }
    }
    if url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!("public_url \"{value}\" must be a plain origin with a host and no user name"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!("public_url \"{value}\" must be an origin only, with no path, query or fragment"));
    }
    Ok(url)
}

/// Parses an absolute http(s) URL used as a link target on pages.
fn parse_link_url(key: &str, value: &str, problems: &mut Vec<String>) -> Option<Url> {
    match Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "https" | "http") && url.host_str().is_some() => Some(url),
        _ => {
            problems.push(format!("{key} \"{value}\" is not an absolute http(s) URL"));
            None
        }
    }
}

fn validate_app(raw: RawApp, mode: Mode, problems: &mut Vec<String>) -> AppSettings {
    let return_url = raw.return_url.as_deref().and_then(|v| parse_link_url("app.return_url", v, problems));
    let mut allowed_return_origins = Vec::new();
    for (index, value) in raw.allowed_return_origins.iter().enumerate() {
        match parse_origin(value) {
            Some(origin) => allowed_return_origins.push(origin),
            None => problems.push(format!(
                "app.allowed_return_origins[{index}] \"{value}\" is not an origin; write scheme://host[:port] with no path, e.g. \"https://app.example.com\""
            )),
        }
    }
    match &return_url {
        Some(url) if allowed_return_origins.is_empty() => allowed_return_origins.push(url.origin()),
        Some(url) if !allowed_return_origins.contains(&url.origin()) => problems.push(format!(
            "app.return_url \"{url}\" is not on one of app.allowed_return_origins; add its origin there"
        )),
        _ => {}
    }
    let user_verify_url =
        raw.user_verify_url.as_deref().and_then(|v| parse_link_url("app.user_verify_url", v, problems));
    if user_verify_url.is_none() && raw.user_verify_url.is_none() && mode == Mode::Production {
        problems.push(
            "app.user_verify_url is required in production mode: the page of your app that confirms which user finished a connection".into(),
        );
    }
    // The browser carries the auth_request_id there: in production, only over TLS and only to the app itself.
    // Development keeps plain http (local apps and the demo run on loopback).
    match (&user_verify_url, raw.user_verify_url.as_deref()) {
        (Some(url), Some(value)) if mode == Mode::Production && url.scheme() != "https" => problems.push(format!(
            "app.user_verify_url \"{value}\" must use https in production mode: the browser carries the auth_request_id there"
        )),
        (Some(url), Some(value)) if mode == Mode::Production && !allowed_return_origins.contains(&url.origin()) => {
            problems.push(format!(
                "app.user_verify_url \"{value}\" is not on one of app.allowed_return_origins: it must be a page of your own app, which receives the auth_request_id"
            ))
        }
        _ => {}
    }
    AppSettings {
        name: raw.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| "the app".into()),
        return_url,
        allowed_return_origins,
        user_verify_url,
    }
}

/// Accepts exactly `scheme://host[:port]` (an optional trailing slash), http or https.
fn parse_origin(value: &str) -> Option<url::Origin> {
    let url = Url::parse(value).ok()?;
    let plain = matches!(url.scheme(), "https" | "http")
        && url.host_str().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && !value.trim_end_matches('/').ends_with(':');
    let written = value.trim_end_matches('/');
    (plain && !written.contains(['\\', '\t', '\n', '\r', ' '])).then(|| url.origin())
}

fn validate_support(raw: RawSupport, problems: &mut Vec<String>) -> SupportSettings {
    if let Some(email) = &raw.email
        && (!email.contains('@') || email.contains(['<', '>', '"', ' ', '\n', '?', '&']))
    {
        problems.push(format!("support.email \"{email}\" is not an email address"));
    }
    SupportSettings {
        email: raw.email,
        url: raw.url.as_deref().and_then(|v| parse_link_url("support.url", v, problems)),
        status_page_url: raw
            .status_page_url
            .as_deref()
            .and_then(|v| parse_link_url("support.status_page_url", v, problems)),
    }
}

fn validate_connection(
    index: usize,
    mut raw: RawConnection,
    public_url: Option<&Url>,
    mode: Mode,
    secrets: &dyn SecretSource,
    problems: &mut Vec<String>,
) -> Option<ConnectionSettings> {
    let before = problems.len();
    let label = match &raw.name {
        Some(name) => format!("connection \"{name}\""),
        None => format!("connections[{index}]"),
    };
    let name = match raw.name.take() {
        Some(name) if is_valid_connection_name(&name) => Some(name),
        Some(name) => {
            problems.push(format!(
                "{label}: name \"{name}\" must be 1 to 64 characters of a-z, 0-9, '-' and '_' (it is part of the redirect URI)"
            ));
            None
        }
        None => {
            problems.push(format!("{label}: name is required"));
            None
        }
    };
    let (kind, preset) = match raw.provider.as_deref() {
        None => {
            problems.push(format!(
                "{label}: provider is required: a preset (callback-gate providers lists them) or one of {GENERIC_KINDS}"
            ));
            (None, None)
        }
        Some(value) => match (catalog::preset(value), Kind::generic(value)) {
            (Some(preset), _) => (Some(preset.kind), Some(preset)),
            (None, Some(kind)) => (Some(kind), None),
            (None, None) => {
                let closest = catalog::closest(value);
                let hint =
                    if closest.is_empty() { String::new() } else { format!("did you mean {}? ", closest.join(", ")) };
                problems.push(format!(
                    "{label}: unknown provider \"{value}\"; {hint}callback-gate providers lists every preset, or use one of {GENERIC_KINDS}"
                ));
                (None, None)
            }
        },
    };
    let oauth = kind.is_none_or(Kind::is_oauth);

    let (client_id, client_secret) = if oauth {
        oauth_client(&label, &raw, secrets, problems)
    } else {
        let kind = kind.map_or("api_key", Kind::as_str);
        for (key, present) in [
            ("client_id", raw.client_id.is_some()),
            ("client_secret_env", raw.client_secret_env.is_some()),
            ("authorization_url", raw.authorization_url.is_some()),
            ("token_url", raw.token_url.is_some()),
            ("issuer", raw.issuer.is_some()),
            ("token_auth_method", raw.token_auth_method.is_some()),
            ("scopes", !raw.scopes.is_empty()),
        ] {
            if present {
                problems.push(format!(
                    "{label}: {key} is not used by a {kind} connection (its users give a credential on the hosted form); remove it"
                ));
            }
        }
        (Some(String::new()), Some(Secret::new(String::new())))
    };

    let params = connection_params(&label, preset, &raw.params, problems);
    let url_field = |key: &str, value: Option<String>, problems: &mut Vec<String>| -> Option<Url> {
        let value = value?;
        match Url::parse(&value) {
            Ok(url) if url.scheme() == "https" => Some(url),
            Ok(url) if url.scheme() == "http" && mode.is_development() => Some(url),
            Ok(url) if url.scheme() == "http" => {
                problems.push(format!("{label}: {key} \"{value}\" must use https in production mode"));
                None
            }
            _ => {
                problems.push(format!("{label}: {key} \"{value}\" is not an absolute https URL"));
                None
            }
        }
    };
    // The connection's own value, else the preset's with the parameters filled in (only once they are valid).
    let from_preset = |own: Option<String>, of_preset: Option<&String>| -> Option<String> {
        own.or_else(|| catalog::fill(of_preset?, params.as_ref()?).ok())
    };
    let authorization_url = url_field(
        "authorization_url",
        from_preset(raw.authorization_url, preset.and_then(|p| p.authorization_url.as_ref())),
        problems,
    );
    let token_url =
        url_field("token_url", from_preset(raw.token_url, preset.and_then(|p| p.token_url.as_ref())), problems);
    let issuer = url_field("issuer", from_preset(raw.issuer, preset.and_then(|p| p.issuer.as_ref())), problems);
    let revocation_url = url_field(
        "revocation_url",
        from_preset(raw.revocation_url, preset.and_then(|p| p.revocation_url.as_ref())),
        problems,
    );
    let api_base_value = from_preset(raw.api_base_url, preset.and_then(|p| p.api_base_url.as_ref()));
    let api_base_url = url_field("api_base_url", api_base_value.clone(), problems).and_then(|url| {
        let value = api_base_value.as_deref().unwrap_or_default();
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some()
        {
            problems.push(format!(
                "{label}: api_base_url \"{value}\" must be a scheme, host and optional path, without a query, fragment or user name"
            ));
            return None;
        }
        Some(url)
    });
    match kind {
        Some(Kind::OAuth2) => {
            for (key, present) in
                [("authorization_url", authorization_url.is_some()), ("token_url", token_url.is_some())]
            {
                if !present && problems.len() == before {
                    problems.push(format!("{label}: provider \"oauth2\" needs {key}"));
                }
            }
        }
        Some(Kind::Oidc) if issuer.is_none() && problems.len() == before => {
            problems.push(format!(
                "{label}: provider \"oidc\" needs issuer (discovery reads its /.well-known/openid-configuration)"
            ));
        }
        _ => {}
    }
    let probe = match raw.verify_path.as_deref() {
        Some(path) => {
            if !path.starts_with('/') || path.starts_with("//") || path.contains(['#', '\\']) || path.contains("/..") {
                problems.push(format!(
                    "{label}: verify_path \"{path}\" must be a path under api_base_url starting with '/', e.g. \"/me\""
                ));
                None
            } else if api_base_url.is_none() {
                problems.push(format!("{label}: verify_path needs api_base_url, the base it is joined to"));
                None
            } else {
                api_base_url.as_ref().and_then(|base| under(base, path))
            }
        }
        None => preset.and_then(|p| p.probe.as_deref()).and_then(|probe| {
            let probe = catalog::fill(probe, params.as_ref()?).ok()?;
            match probe.strip_prefix('/') {
                Some(_) => under(api_base_url.as_ref()?, &probe),
                None => Url::parse(&probe).ok(),
            }
        }),
    };
    let token_auth_method = match raw.token_auth_method.as_deref() {
        None => preset.map(|p| p.token_auth_method),
        Some(value) => match TokenAuthMethod::parse(value) {
            Some(method) => Some(method),
            None => {
                problems.push(format!(
                    "{label}: token_auth_method \"{value}\" is not known; use \"client_secret_basic\" or \"client_secret_post\""
                ));
                None
            }
        },
    };
    if raw.scopes.iter().any(|s| s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == ',' || c.is_control()))
    {
        problems.push(format!("{label}: each scope must be one non-empty word without spaces or commas"));
    }
    let scope_separator = raw.scope_separator.or_else(|| preset.map(|p| p.scope_separator.clone()));
    if let Some(separator) = &scope_separator
        && !matches!(separator.as_str(), " " | ",")
    {
        problems.push(format!("{label}: scope_separator {separator:?} is not known; use \" \" or \",\""));
    }
    for (key, value) in &raw.authorization_params {
        if RESERVED_AUTHORIZATION_PARAMS.contains(&key.as_str()) {
            problems.push(format!(
                "{label}: authorization_params.{key} is set by the service for every flow and cannot be configured"
            ));
        } else if key.is_empty() || value.chars().any(char::is_control) {
            problems.push(format!("{label}: authorization_params.{key} must be a name and a one-line value"));
        }
    }
    let default_prefix = if kind == Some(Kind::Basic) { "Basic " } else { "Bearer " };
    let credential_header = raw
        .credential_header
        .or_else(|| preset.and_then(|p| p.credential_header.clone()))
        .unwrap_or_else(|| "Authorization".into());
    if !is_sendable_header(&credential_header) {
        problems.push(format!(
            "{label}: credential_header {credential_header:?} is not a header name the proxy may set (letters, digits and '-'; not a connection, length, cookie, host or forwarding header)"
        ));
    }
    let credential_prefix = raw
        .credential_prefix
        .or_else(|| preset.and_then(|p| p.credential_prefix.clone()))
        .unwrap_or_else(|| default_prefix.into());
    if credential_prefix.len() > 64 || credential_prefix.chars().any(|c| !(' '..='~').contains(&c)) {
        problems.push(format!("{label}: credential_prefix must be at most 64 printable ASCII characters"));
    }
    if problems.len() > before {
        return None;
    }
    let (name, kind, client_id, client_secret, public_url, params) =
        (name?, kind?, client_id?, client_secret?, public_url?, params?);
    let redirect_uri = public_url.join(&format!("connect/callback/{name}")).ok()?;
    let display_name = raw
        .display_name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| preset.map_or_else(|| name.clone(), |p| p.display_name.clone()));
    let mut authorization_params: Vec<(String, String)> = preset
        .map(|p| p.authorization_params.iter().filter(|(k, _)| !raw.authorization_params.contains_key(*k)))
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    authorization_params.extend(raw.authorization_params);
    Some(ConnectionSettings {
        display_name,
        name,
        provider: raw.provider.unwrap_or_default(),
        kind,
        preset,
        client_id,
        client_secret,
        scopes: raw.scopes,
        authorization_url,
        token_url,
        issuer,
        revocation_url,
        token_auth_method,
        authorization_params,
        scope_separator: scope_separator.unwrap_or_else(|| " ".into()),
        pkce: raw.pkce.or(preset.map(|p| p.pkce)).unwrap_or(true),
        token_types: preset.map(|p| p.token_types.clone()).unwrap_or_default(),
        quirk: preset.and_then(|p| p.quirk),
        params,
        user_verification: raw.user_verification.unwrap_or(mode == Mode::Production),
        expose_tokens: raw.expose_tokens.unwrap_or(false),
        api_base_url,
        probe,
        credential_header,
        credential_prefix,
        redirect_uri,
    })
}

/// The generic kinds a connection may name instead of a preset.
const GENERIC_KINDS: &str = "oauth2, oidc, api_key, basic";

/// Consent-URL parameters every flow sets itself; configuring one would break the flow or its protections.
const RESERVED_AUTHORIZATION_PARAMS: [&str; 8] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
];

/// The OAuth client of an oauth2 or oidc connection: its id, and its secret from the environment.
fn oauth_client(
    label: &str,
    raw: &RawConnection,
    secrets: &dyn SecretSource,
    problems: &mut Vec<String>,
) -> (Option<String>, Option<Secret>) {
    let client_id = raw.client_id.clone().filter(|id| !id.trim().is_empty());
    if client_id.is_none() {
        problems.push(format!("{label}: client_id is required"));
    }
    if raw.client_secret.is_some() {
        problems.push(format!(
            "{label}: client_secret must not be written in the file; put it in an environment variable and name that variable in client_secret_env"
        ));
    }
    let client_secret = match raw.client_secret_env.as_deref() {
        None => {
            problems.push(format!(
                "{label}: client_secret_env is required: the name of the environment variable holding the client secret"
            ));
            None
        }
        Some(var) => match secrets.var(var) {
            Some(secret) if !secret.is_empty() => Some(Secret::new(secret)),
            _ => {
                problems.push(format!("{label}: environment variable {var} (client_secret_env) is not set"));
                None
            }
        },
    };
    (client_id, client_secret)
}

/// The connection's parameters with the preset's defaults, each checked; `None` when one is missing or invalid.
fn connection_params(
    label: &str,
    preset: Option<&Preset>,
    given: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
) -> Option<BTreeMap<String, String>> {
    let before = problems.len();
    let known: Vec<&str> = preset.map(|p| p.parameter_names().collect()).unwrap_or_default();
    for (key, value) in given {
        if !known.contains(&key.as_str()) {
            let takes = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
            problems.push(format!("{label}: params.{key} is not a parameter of this provider (it takes: {takes})"));
        } else if !catalog::is_valid_param_value(value) {
            problems.push(format!(
                "{label}: params.{key} {value:?} must be letters, digits, '-', '_' and '.' (it is put into the provider's URLs)"
            ));
        }
    }
    let mut params = BTreeMap::new();
    if let Some(preset) = preset {
        for required in &preset.params {
            match given.get(required) {
                Some(value) => {
                    params.insert(required.clone(), value.clone());
                }
                None => {
                    let example = preset.urls().find(|(_, url)| url.contains(&format!("{{{required}}}")));
                    let shown =
                        example.map(|(_, url)| format!(" (it fills {{{required}}} in {url})")).unwrap_or_default();
                    problems.push(format!("{label}: provider \"{}\" needs params.{required}{shown}", preset.name));
                }
            }
        }
        for (key, default) in &preset.param_defaults {
            params.insert(key.clone(), given.get(key).unwrap_or(default).clone());
        }
    }
    (problems.len() == before).then_some(params)
}

/// `path` (starting with '/') appended to `base`'s path.
fn under(base: &Url, path: &str) -> Option<Url> {
    Url::parse(&format!("{}{path}", base.as_str().trim_end_matches('/'))).ok()
}

/// Whether the proxy may send a credential in this header: a token of letters, digits and '-', and not one that
/// frames the message, names the host, carries cookies or claims to come from a proxy.
fn is_sendable_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !matches!(
            lower.as_str(),
            "host"
                | "content-length"
                | "content-type"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "te"
                | "trailer"
                | "upgrade"
                | "cookie"
                | "forwarded"
                | "proxy-authorization"
        )
        && !lower.starts_with("x-forwarded-")
        && !lower.starts_with("proxy-")
}

fn is_valid_connection_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl ConnectionSettings {
    /// The provider as metrics label it: the preset's name, else the generic kind.
    pub fn provider_label(&self) -> &'static str {
        self.preset.map_or(self.kind.as_str(), |preset| preset.name.as_str())
    }
}

impl Settings {
    pub fn connection(&self, name: &str) -> Option<&ConnectionSettings> {
        self.connections.iter().find(|c| c.name == name)
    }

    /// Whether `url` may be used as a "back to the app" target.
    /// Whether `url` may be used as a "back to the app" target: https (plain http only to a loopback host in
    /// development), no user name or password, on one of `app.allowed_return_origins`.
    pub fn is_allowed_return(&self, url: &Url) -> bool {
        let loopback = is_loopback_url(url);
        let scheme_ok = url.scheme() == "https" || url.scheme() == "http" && loopback && self.mode.is_development();
        scheme_ok
            && url.username().is_empty()
            && url.password().is_none()
            && self.app.allowed_return_origins.contains(&url.origin())
    }
}

/// A `database_url`. A PostgreSQL URL may carry a password (set it through `CALLBACK_GATE_DATABASE_URL` rather than
/// the file), so it is shown with the password left out.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL itself, password included, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("redacted"));
                write!(f, "{:?}", url.as_str())
            }
            Ok(_) => write!(f, "{:?}", self.0),
            Err(_) => f.write_str("\"(unparsed database_url)\""),
        }
    }
}

/// The secrets unit tests configure with: a secret key, an API key, and `SECRET` for a connection's client secret.
#[cfg(test)]
pub(crate) fn test_secrets(name: &str) -> Option<String> {
    match name {
        "CALLBACK_GATE_SECRET_KEY" => Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()),
        "CALLBACK_GATE_API_KEYS" => Some("0123456789abcdef0123".into()),
        "SECRET" => Some("s".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_is_shown_without_its_password() {
        let url = DatabaseUrl("postgres://gate:s3cret-pass@db.example.com:5432/gate".into());
        let shown = format!("{url:?}");
        assert!(!shown.contains("s3cret-pass") && shown.contains("db.example.com"), "{shown}");
        assert_eq!(url.expose(), "postgres://gate:s3cret-pass@db.example.com:5432/gate");
        assert_eq!(format!("{:?}", DatabaseUrl("sqlite://gate.db".into())), "\"sqlite://gate.db\"");
    }

    fn secrets(name: &str) -> Option<String> {
        test_secrets(name)
    }

    #[test]
    fn production_talks_to_token_endpoints_over_tls_only() {
        let document = r#"
public_url = "https://app.example.com"
[app]
return_url = "https://app.example.com/"
user_verify_url = "https://app.example.com/verify"
[[connections]]
name = "corp"
provider = "oauth2"
client_id = "c"
client_secret_env = "SECRET"
authorization_url = "https://idp.example.com/authorize"
token_url = "http://idp.example.com/token"
"#;
        let problems = from_toml(document, &secrets).unwrap_err();
        assert!(problems.0.iter().any(|p| p.contains("token_url") && p.contains("https")), "{problems}");
        let fixed = document.replace("http://idp.example.com/token", "https://idp.example.com/token");
        let settings = from_toml(&fixed, &secrets).unwrap();
        assert!(settings.connections[0].user_verification, "user verification is on by default in production");
    }

    #[test]
    fn api_base_url_is_an_https_base_without_query_fragment_or_user() {
        let with = |base: &str| {
            format!(
                r#"
public_url = "https://app.example.com"
[app]
return_url = "https://app.example.com/"
user_verify_url = "https://app.example.com/verify"
[[connections]]
name = "gmail"
provider = "google"
client_id = "c"
client_secret_env = "SECRET"
api_base_url = "{base}"
"#
            )
        };
        let settings = from_toml(&with("https://www.googleapis.com/"), &secrets).unwrap();
        assert_eq!(settings.connections[0].api_base_url.as_ref().map(Url::as_str), Some("https://www.googleapis.com/"));
        for (base, says) in [
            ("http://api.example.com", "must use https in production mode"),
            ("https://api.example.com/v1?key=1", "without a query, fragment or user name"),
            ("https://api.example.com/#x", "without a query, fragment or user name"),
            ("https://user:pass@api.example.com", "without a query, fragment or user name"),
            ("api.example.com", "is not an absolute https URL"),
        ] {
            let problems = from_toml(&with(base), &secrets).unwrap_err();
            assert!(problems.0.iter().any(|p| p.contains("api_base_url") && p.contains(says)), "{base}: {problems}");
            assert_eq!(problems.0.len(), 1, "one line per problem: {problems}");
        }
    }

    #[test]
    fn webhooks_need_an_https_url_and_whsec_keys_from_the_environment() {
        let document = |mode: &str, url: &str| {
            format!(
                r#"
public_url = "https://app.example.com"
mode = "{mode}"
[app]
return_url = "https://app.example.com/"
user_verify_url = "https://app.example.com/verify"
[webhooks]
url = "{url}"
secret_env = "HOOK_SECRET"
[[connections]]
name = "gmail"
provider = "google"
client_id = "c"
client_secret_env = "SECRET"
"#
            )
        };
        let key = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let with = |value: &'static str| {
            move |name: &str| if name == "HOOK_SECRET" { Some(value.to_owned()) } else { secrets(name) }
        };
        let settings = from_toml(&document("production", "https://app.example.com/hooks"), &with(key)).unwrap();
        let webhooks = settings.webhooks.unwrap();
        assert_eq!(webhooks.keys.len(), 1);
        assert!(!format!("{webhooks:?}").contains("MfKQ9r8G"), "keys never shown");
        let two = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(
            from_toml(&document("production", "https://x.example/h"), &with(two)).unwrap().webhooks.unwrap().keys.len(),
            2
        );
        for (mode, url, secret, says) in [
            ("production", "http://hooks.example.com/", key, "must use https"),
            ("development", "http://hooks.example.com/", key, "must use https"),
            ("production", "https://x.example/h", "not-whsec", "must hold whsec_"),
            ("production", "https://x.example/h", "whsec_c2hvcnQ=", "at least 16 random bytes"),
        ] {
            let problems = from_toml(&document(mode, url), &with(secret)).unwrap_err();
            assert!(problems.0.iter().any(|p| p.contains(says)), "{url} {secret}: {problems}");
        }
        let loopback =
            document("development", "http://127.0.0.1:9000/hooks").replace("https://app", "http://localhost");
        assert!(from_toml(&loopback, &with(key)).is_ok(), "plain http to loopback in development");
        let problems = from_toml(&document("production", "https://x.example/h"), &secrets).unwrap_err();
        assert!(problems.0.iter().any(|p| p.contains("HOOK_SECRET") && p.contains("not set")), "{problems}");
    }

    #[test]
    fn accent_colours_must_reach_aa_contrast() {
        assert!((Rgb(0, 0, 0).contrast(Rgb(255, 255, 255)) - 21.0).abs() < 0.01);
        assert!(Rgb::parse("#0b57d0").unwrap().contrast(LIGHT_BACKGROUND) >= AA_CONTRAST);
        assert!(Rgb::parse("#ffcc00").unwrap().contrast(LIGHT_BACKGROUND) < AA_CONTRAST);
        assert_eq!(Rgb::parse("#ffcc00").unwrap().text_on(), Rgb(17, 17, 17));
        assert!(Rgb::parse("0b57d0").is_none() && Rgb::parse("#0b57d").is_none() && Rgb::parse("#zzzzzz").is_none());
    }

    #[test]
    fn durations_are_whole_seconds_up_to_their_bound() {
        let document = |line: &str| {
            format!(
                "public_url = \"https://app.example.com\"\n{line}\n[app]\nreturn_url = \"https://app.example.com/\"\nuser_verify_url = \"https://app.example.com/verify\"\n[[connections]]\nname = \"gmail\"\nprovider = \"google\"\nclient_id = \"c\"\nclient_secret_env = \"SECRET\""
            )
        };
        let settings = from_toml(&document("flow_ttl_seconds = 3600"), &secrets).unwrap();
        assert_eq!(settings.flow_ttl, Duration::from_secs(3600));
        assert_eq!(settings.link_ttl, Duration::from_secs(86_400), "the default");
        for (line, fragment) in [
            ("flow_ttl_seconds = 3601", "flow_ttl_seconds is 3601, more than the maximum; write 1 to 3600 (1 hour)"),
            ("flow_ttl_seconds = 1.5", "flow_ttl_seconds \"1.5\" is not a whole number"),
            ("flow_ttl_seconds = true", "flow_ttl_seconds \"true\" is not a whole number"),
            ("flow_ttl_seconds = -1", "flow_ttl_seconds \"-1\" is not a whole number"),
            ("link_ttl_seconds = 0", "link_ttl_seconds is 0; write 1 to 2592000 (30 days)"),
        ] {
            let problems = from_toml(&document(line), &secrets).unwrap_err();
            assert_eq!(problems.0.len(), 1, "{problems}");
            assert!(problems.0[0].contains(fragment), "{line}: {problems}");
        }
    }

    /// A production document listening on `listen`, with `limits` as its `[limits]` section.
    fn behind(listen: &str, limits: &str) -> String {
        format!(
            "public_url = \"https://app.example.com\"\nlisten = \"{listen}\"\n[app]\nreturn_url = \"https://app.example.com/\"\nuser_verify_url = \"https://app.example.com/verify\"\n[[connections]]\nname = \"gmail\"\nprovider = \"google\"\nclient_id = \"c\"\nclient_secret_env = \"SECRET\"\n[limits]\n{limits}"
        )
    }

    #[test]
    fn trusted_proxies_are_addresses_or_cidr_ranges() {
        let document = behind(
            "0.0.0.0:8080",
            r#"trusted_proxies = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1", " 172.16.0.1/12 ", "::ffff:192.168.0.0/112"]"#,
        );
        let settings = from_toml(&document, &secrets).unwrap();
        let written: Vec<String> = settings.limits.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(
            written,
            ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128", "172.16.0.0/12", "192.168.0.0/16"],
            "a bare address is one host; host bits are dropped; mapped ranges are read as IPv4"
        );

        let document = behind(
            "0.0.0.0:8080",
            r#"trusted_proxies = ["10.0.0.0/33", "proxy.internal", "", "10.0.0.0/8", "::/129"]"#,
        );
        let problems = from_toml(&document, &secrets).unwrap_err();
        assert_eq!(problems.0.len(), 4, "one line per bad entry: {problems}");
        for (index, value) in [(0, "10.0.0.0/33"), (1, "proxy.internal"), (2, ""), (4, "::/129")] {
            assert!(
                problems.0.iter().any(|p| p.starts_with(&format!("limits.trusted_proxies[{index}] \"{value}\""))),
                "{problems}"
            );
        }
    }

    #[test]
    fn trust_forwarded_for_names_its_replacement() {
        for value in ["true", "false", "\"yes\""] {
            let problems =
                from_toml(&behind("0.0.0.0:8080", &format!("trust_forwarded_for = {value}")), &secrets).unwrap_err();
            assert_eq!(problems.0.len(), 1, "{problems}");
            assert!(problems.0[0].contains("limits.trusted_proxies"), "{problems}");
        }
    }

    #[test]
    fn an_https_service_on_an_internal_address_without_trusted_proxies_is_warned_about() {
        for listen in ["127.0.0.1:8080", "10.1.2.3:8080", "192.168.1.10:80", "[::1]:8080", "[fd00::5]:8080"] {
            let settings = from_toml(&behind(listen, ""), &secrets).unwrap();
            assert_eq!(settings.warnings.len(), 1, "{listen}: {:?}", settings.warnings);
            assert!(settings.warnings[0].contains("limits.trusted_proxies"), "{:?}", settings.warnings);
            let trusted = behind(listen, r#"trusted_proxies = ["127.0.0.1"]"#);
            assert!(from_toml(&trusted, &secrets).unwrap().warnings.is_empty(), "{listen} with a trusted proxy");
        }
        for listen in ["0.0.0.0:8080", "[::]:8080", "203.0.113.5:443"] {
            assert!(from_toml(&behind(listen, ""), &secrets).unwrap().warnings.is_empty(), "{listen}");
        }
        let development = behind("127.0.0.1:8080", "")
            .replace("https://app.example.com\"\nlisten", "http://127.0.0.1:8080\"\nmode = \"development\"\nlisten");
        assert!(from_toml(&development, &secrets).unwrap().warnings.is_empty(), "plain http: no proxy in front");
    }

    #[test]
    fn default_limits_serve_a_burst_of_150_from_one_address() {
        let settings = from_toml(&behind("0.0.0.0:8080", ""), &secrets).unwrap();
        assert!(settings.limits.burst.get() >= 150);
        assert!(settings.limits.starts_per_minute.get() >= 150 && settings.limits.callbacks_per_minute.get() >= 150);
    }

    #[test]
    fn metrics_listen_is_an_address_of_its_own() {
        let document = |metrics: &str| {
            format!(
                "public_url = \"https://app.example.com\"\nlisten = \"0.0.0.0:8080\"\n[app]\nreturn_url = \"https://app.example.com/\"\nuser_verify_url = \"https://app.example.com/verify\"\n[[connections]]\nname = \"gmail\"\nprovider = \"google\"\nclient_id = \"c\"\nclient_secret_env = \"SECRET\"\n[metrics]\n{metrics}"
            )
        };
        assert_eq!(from_toml(&document(""), &secrets).unwrap().metrics_listen, None, "off by default");
        let settings = from_toml(&document("listen = \"127.0.0.1:9090\""), &secrets).unwrap();
        assert_eq!(settings.metrics_listen.as_deref(), Some("127.0.0.1:9090"));
        for (line, fragment) in [
            ("listen = \"localhost\"", "metrics.listen \"localhost\" is not a socket address"),
            ("listen = \"0.0.0.0:8080\"", "metrics.listen \"0.0.0.0:8080\" is the same address as listen"),
            ("port = 9090", "unknown field: found `port`"),
        ] {
            let problems = from_toml(&document(line), &secrets).unwrap_err();
            assert_eq!(problems.0.len(), 1, "{problems}");
            assert!(problems.0[0].contains(fragment), "{line}: {problems}");
        }
    }

    #[test]
    fn max_connections_is_at_least_one() {
        let settings = from_toml(&behind("0.0.0.0:8080", ""), &secrets).unwrap();
        assert_eq!(settings.limits.max_connections, 10_000, "the default");
        let settings = from_toml(&behind("0.0.0.0:8080", "max_connections = 50"), &secrets).unwrap();
        assert_eq!(settings.limits.max_connections, 50);
        let problems = from_toml(&behind("0.0.0.0:8080", "max_connections = 0"), &secrets).unwrap_err();
        assert_eq!(problems.0, ["limits.max_connections must be at least 1"]);
    }

    #[test]
    fn return_targets_must_be_https_on_an_allowed_origin() {
        let document = r#"
public_url = "https://app.example.com"
[app]
return_url = "https://app.example.com/"
user_verify_url = "https://app.example.com/verify"
[[connections]]
name = "gmail"
provider = "google"
client_id = "c"
client_secret_env = "SECRET"
"#;
        let settings = from_toml(document, &secrets).unwrap();
        let allowed = |url: &str| settings.is_allowed_return(&Url::parse(url).unwrap());
        assert!(allowed("https://app.example.com/settings"));
        assert!(!allowed("http://app.example.com/settings"));
        assert!(!allowed("http://127.0.0.1/settings"), "loopback http is for development only");
        assert!(!allowed("https://user@app.example.com/"));
        assert!(!allowed("https://app.example.com.evil.example/"));
    }
}

//! The provider catalog: every preset a connection may name, read from `provider/catalog.toml` (compiled into the
//! binary), and the rules that fill a connection's parameters into a preset's URLs.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::Deserialize;

/// The catalog's text, as compiled in.
pub const SOURCE: &str = include_str!("provider/catalog.toml");

/// How a connection's users grant access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// OAuth 2.0 authorization code with PKCE.
    #[serde(rename = "oauth2")]
    OAuth2,
    /// OAuth 2.0 plus OpenID Connect: endpoints discovered from the issuer, ID tokens validated.
    Oidc,
    /// The user pastes an API key on a hosted form.
    ApiKey,
    /// The user gives a username and password (or key and secret) on a hosted form.
    Basic,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OAuth2 => "oauth2",
            Self::Oidc => "oidc",
            Self::ApiKey => "api_key",
            Self::Basic => "basic",
        }
    }

    /// The generic kinds a connection may name instead of a preset.
    pub fn generic(name: &str) -> Option<Self> {
        match name {
            "oauth2" => Some(Self::OAuth2),
            "oidc" => Some(Self::Oidc),
            "api_key" => Some(Self::ApiKey),
            "basic" => Some(Self::Basic),
            _ => None,
        }
    }

    /// Whether users grant access by consenting at the provider (rather than by giving a credential here).
    pub fn is_oauth(self) -> bool {
        matches!(self, Self::OAuth2 | Self::Oidc)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuthMethod {
    /// Client id and secret in the `Authorization: Basic` header (RFC 6749 section 2.3.1).
    ClientSecretBasic,
    /// Client id and secret in the form body.
    ClientSecretPost,
}

impl TokenAuthMethod {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            "client_secret_post" => Some(Self::ClientSecretPost),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
        }
    }
}

/// Provider behaviour that data cannot say, handled where it happens (`provider::quirks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quirk {
    /// The user token under `authed_user`, team and user ids, `ok: false` answers with HTTP 200.
    Slack,
    /// The cloud id and site URL come from `accessible-resources` after consent.
    Atlassian,
    /// Tenant selection; single-tenant apps on the `common` endpoint (AADSTS50194).
    Microsoft,
    /// Calls go to the `instance_url` of the token answer.
    Salesforce,
    /// Workspace and owner in the token answer.
    Notion,
    /// Token errors answered with HTTP 200.
    Github,
}

impl Quirk {
    /// What the service does for it, for the providers guide.
    pub fn description(self) -> &'static str {
        match self {
            Self::Slack => {
                "the user token under `authed_user` (when `authorization_params.user_scope` asks for one); `ok: false` answers with HTTP 200 read as errors at the token endpoint, by `verify` and through the proxy (a refused token is refreshed once and the call retried, then flagged `token_rejected`; `missing_scope` flags `insufficient_scope` with the scopes Slack `needed`); team and user ids kept in `metadata`"
            }
            Self::Atlassian => {
                "after consent, `accessible-resources` is called and the site's cloud id and URL are kept in `metadata`"
            }
            Self::Microsoft => {
                "`params.tenant` chooses the directory (`common`, `organizations`, `consumers`, a tenant id or domain); a single-tenant app on `common` (AADSTS50194) is named `single_tenant_app` with the fix"
            }
            Self::Salesforce => {
                "the token answer's `instance_url` is kept in `metadata` and becomes the proxy's base URL for the account"
            }
            Self::Notion => {
                "the token request authenticates with HTTP Basic; `workspace_id`, `workspace_name`, `bot_id` and the owner are kept in `metadata`"
            }
            Self::Github => "token errors answered with HTTP 200 are read as errors",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Atlassian => "atlassian",
            Self::Microsoft => "microsoft",
            Self::Salesforce => "salesforce",
            Self::Notion => "notion",
            Self::Github => "github",
        }
    }
}

/// One catalog entry. URLs may hold `{param}` placeholders, filled from the connection's `params`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub name: String,
    pub display_name: String,
    pub kind: Kind,
    pub docs: String,
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    pub revocation_url: Option<String>,
    pub issuer: Option<String>,
    pub api_base_url: Option<String>,
    pub probe: Option<String>,
    #[serde(default = "space")]
    pub scope_separator: String,
    #[serde(default = "post")]
    pub token_auth_method: TokenAuthMethod,
    #[serde(default = "yes")]
    pub pkce: bool,
    #[serde(default)]
    pub authorization_params: BTreeMap<String, String>,
    #[serde(default)]
    pub params: Vec<String>,
    #[serde(default)]
    pub param_defaults: BTreeMap<String, String>,
    #[serde(default)]
    pub scope_hints: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub token_types: Vec<String>,
    pub quirk: Option<Quirk>,
    pub credential_header: Option<String>,
    pub credential_prefix: Option<String>,
}

fn space() -> String {
    " ".into()
}

fn post() -> TokenAuthMethod {
    TokenAuthMethod::ClientSecretPost
}

fn yes() -> bool {
    true
}

impl Preset {
    /// Every parameter the preset's URLs may name: the required ones, then those with a default.
    pub fn parameter_names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(String::as_str).chain(self.param_defaults.keys().map(String::as_str))
    }

    /// The preset's URLs with their keys, for checks that look at all of them.
    pub fn urls(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("authorization_url", self.authorization_url.as_deref()),
            ("token_url", self.token_url.as_deref()),
            ("revocation_url", self.revocation_url.as_deref()),
            ("issuer", self.issuer.as_deref()),
            ("api_base_url", self.api_base_url.as_deref()),
            ("probe", self.probe.as_deref().filter(|probe| !probe.starts_with('/'))),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.map(|value| (key, value)))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    provider: Vec<Preset>,
}

static PRESETS: LazyLock<Vec<Preset>> = LazyLock::new(|| match toml::from_str::<File>(SOURCE) {
    Ok(file) => file.provider,
    // The catalog is part of the build, not input: its unit test parses it on every test run.
    Err(err) => panic!("the compiled-in provider catalog does not parse: {err}"),
});

/// Every preset, in catalog order.
pub fn presets() -> &'static [Preset] {
    &PRESETS
}

pub fn preset(name: &str) -> Option<&'static Preset> {
    presets().iter().find(|preset| preset.name == name)
}

/// Up to three preset names closest to a name that matched none, best first, for a "did you mean" line.
pub fn closest(name: &str) -> Vec<&'static str> {
    let wanted = name.to_ascii_lowercase();
    let mut scored: Vec<(f64, &'static str)> = presets()
        .iter()
        .map(|preset| {
            let by_name = strsim::jaro_winkler(&wanted, &preset.name);
            let by_display = strsim::jaro_winkler(&wanted, &preset.display_name.to_ascii_lowercase());
            let contains = preset.name.contains(&wanted) || wanted.contains(preset.name.as_str());
            (by_name.max(by_display) + if contains && wanted.len() >= 3 { 0.2 } else { 0.0 }, preset.name.as_str())
        })
        .filter(|(score, _)| *score >= 0.75)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().take(3).map(|(_, name)| name).collect()
}

/// Whether a connection parameter's value may be put into a URL: letters, digits, '-', '_' and '.', as in a host
/// name label, a tenant id or a shop name. Nothing that could change which host or path a URL names.
pub fn is_valid_param_value(value: &str) -> bool {
    (1..=253).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !value.starts_with(['.', '-'])
        && !value.contains("..")
}

/// Replaces each `{name}` in `template` with its parameter. `Err` names the first placeholder with no value.
pub fn fill(template: &str, params: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return Ok(out);
        };
        let name = &after[..close];
        match params.get(name) {
            Some(value) => out.push_str(value),
            None => return Err(name.to_owned()),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The placeholders a URL template names.
pub fn placeholders(template: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        names.push(&after[..close]);
        rest = &after[close + 1..];
    }
    names
}

/// `docs/providers.md`: every preset in a table, the behaviour handled in code and the scope hints.
pub fn providers_guide() -> String {
    let mut out = String::from(
        "# Provider presets\n\n\
         Generated from `src/provider/catalog.toml` by `UPDATE_DOCS=1 cargo test --test catalog`; do not edit by hand.\n\n\
         Name a preset in a connection with `provider = \"<name>\"`. Every key of a preset may be overridden in the\n\
         connection (`authorization_url`, `token_url`, `revocation_url`, `api_base_url`, `token_auth_method`,\n\
         `scope_separator`, `pkce`, `authorization_params`, `credential_header`, `credential_prefix`, `verify_path`).\n\
         Parameters fill the `{placeholders}` in a preset's URLs: `params = { subdomain = \"acme\" }`.\n\
         `callback-gate providers` prints the same list.\n\n\
         | name | service | kind | parameters | API base | verify probe | checked against |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for preset in presets() {
        let mut params: Vec<String> = preset.params.iter().map(|p| format!("`{p}`")).collect();
        params.extend(preset.param_defaults.iter().map(|(k, v)| format!("`{k}` (default `{v}`)")));
        let cell = |value: Option<&String>| value.map_or_else(|| "–".to_owned(), |v| format!("`{v}`"));
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | [docs]({}) |\n",
            preset.name,
            preset.display_name,
            preset.kind.as_str(),
            if params.is_empty() { "–".to_owned() } else { params.join(", ") },
            cell(preset.api_base_url.as_ref()),
            cell(preset.probe.as_ref()),
            preset.docs,
        ));
    }
    out.push_str("\n## Behaviour handled in code\n\n");
    for preset in presets().iter().filter(|p| p.quirk.is_some()) {
        let what = preset.quirk.map_or("", Quirk::description);
        out.push_str(&format!("- **{}**: {what}.\n", preset.display_name));
    }
    out.push_str("\n## Scope hints\n\n");
    for preset in presets().iter().filter(|p| !p.scope_hints.is_empty()) {
        out.push_str(&format!("- **{}**\n", preset.display_name));
        for (product, scopes) in &preset.scope_hints {
            let scopes: Vec<String> = scopes.iter().map(|s| format!("`{s}`")).collect();
            out.push_str(&format!("  - {product}: {}\n", scopes.join(" ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_parses_and_names_each_preset_once() {
        let names: std::collections::BTreeSet<&str> = presets().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.len(), presets().len(), "duplicate preset names");
        for name in ["google", "microsoft", "slack", "github", "atlassian"] {
            assert!(preset(name).is_some(), "{name}");
        }
        for generic in ["oauth2", "oidc", "api_key", "basic"] {
            assert!(preset(generic).is_none(), "a preset may not take the generic name {generic}");
        }
    }

    #[test]
    fn placeholders_are_filled_and_a_missing_one_is_named() {
        let params = BTreeMap::from([("tenant".to_owned(), "contoso.onmicrosoft.com".to_owned())]);
        assert_eq!(
            fill("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token", &params).as_deref(),
            Ok("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token")
        );
        assert_eq!(fill("https://{subdomain}.zendesk.com", &params), Err("subdomain".to_owned()));
        assert_eq!(placeholders("https://{a}.x/{b}"), vec!["a", "b"]);
    }

    #[test]
    fn parameter_values_cannot_change_the_host_or_path() {
        for good in ["acme", "contoso.onmicrosoft.com", "common", "9188040d-6c67-4c5b-b112-36a304b66dad", "eu_1"] {
            assert!(is_valid_param_value(good), "{good}");
        }
        for bad in ["", "evil.com/x", "a@b", "a:1", "a?b", "a#b", "..", ".acme", "-x", "a b", "a%2fb", "x\u{e9}"] {
            assert!(!is_valid_param_value(bad), "{bad}");
        }
    }

    #[test]
    fn a_misspelt_preset_gets_close_names() {
        assert_eq!(closest("gogle").first(), Some(&"google"));
        assert_eq!(closest("githb").first(), Some(&"github"));
        assert!(closest("zzzzzzzz").is_empty());
    }
}

//! Provider behaviour the catalog's data cannot say, each in one place: where a token answer keeps the token and
//! what else it tells about the account, the call some providers need after consent, and where an account's API
//! calls go when the provider says so per account.
//!
//! - Slack: a user token (asked for with `authorization_params.user_scope`) comes under `authed_user`; team, user
//!   and bot ids come with it. `ok: false` answers with HTTP 200 are errors (read in `exchange`).
//! - Atlassian: the sites a token may reach come from `accessible-resources`, called once after consent.
//! - Salesforce: `instance_url` in the token answer is the account's API host.
//! - Notion: `workspace_id`, `workspace_name`, `bot_id` and the owner come with the token.
//! - Microsoft and GitHub need nothing here: tenant selection is a parameter, AADSTS codes are outcome
//!   recognitions, and GitHub's 200-with-error answers are read like Slack's.

use serde_json::{Map, Value};
use url::Url;

use crate::account::Metadata;
use crate::catalog::Quirk;
use crate::config::ConnectionSettings;
use crate::crypto::Secret;

/// Fields of a token answer that describe the token itself, lifted from Slack's `authed_user`.
const TOKEN_FIELDS: [&str; 5] = ["access_token", "token_type", "scope", "refresh_token", "expires_in"];

/// Whether a Slack connection asks for a user token (its users' own), not only the app's bot token.
pub fn wants_user_token(connection: &ConnectionSettings) -> bool {
    connection.quirk == Some(Quirk::Slack) && connection.authorization_params.iter().any(|(key, _)| key == "user_scope")
}

/// Puts the token where the generic parser reads it. Slack sends a user token under `authed_user`: it becomes the
/// account's token when the connection asks for one, or when the answer has no other.
pub fn normalize(quirk: Option<Quirk>, user_token: bool, fields: &mut Map<String, Value>) {
    if quirk != Some(Quirk::Slack) {
        return;
    }
    let Some(Value::Object(user)) = fields.get("authed_user") else {
        return;
    };
    if user.get("access_token").is_none_or(Value::is_null) || (!user_token && fields.contains_key("access_token")) {
        return;
    }
    let lifted: Vec<(String, Value)> =
        TOKEN_FIELDS.iter().filter_map(|key| user.get(*key).map(|value| ((*key).to_owned(), value.clone()))).collect();
    for key in TOKEN_FIELDS {
        fields.remove(key);
    }
    fields.extend(lifted);
}

/// What a token answer tells about the account, by provider.
pub fn metadata(quirk: Option<Quirk>, fields: &Map<String, Value>) -> Metadata {
    let mut found = Metadata::new();
    let text = |value: Option<&Value>| value.and_then(Value::as_str).filter(|v| !v.is_empty()).map(bounded);
    let at = |path: &[&str]| -> Option<String> {
        let mut value = fields.get(path[0])?;
        for key in &path[1..] {
            value = value.get(key)?;
        }
        text(Some(value))
    };
    let mut put = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            found.insert(name.to_owned(), value);
        }
    };
    match quirk {
        Some(Quirk::Slack) => {
            put("team_id", at(&["team", "id"]));
            put("team_name", at(&["team", "name"]));
            put("enterprise_id", at(&["enterprise", "id"]));
            put("user_id", at(&["authed_user", "id"]));
            put("bot_user_id", at(&["bot_user_id"]));
            put("app_id", at(&["app_id"]));
        }
        Some(Quirk::Salesforce) => {
            put("instance_url", at(&["instance_url"]));
            // `id` is the identity URL: https://login.salesforce.com/id/{organization id}/{user id}
            if let Some(identity) = at(&["id"]) {
                let mut segments = identity.rsplit('/');
                put("user_id", segments.next().map(str::to_owned));
                put("organization_id", segments.next().map(str::to_owned));
                put("identity_url", Some(identity));
            }
        }
        Some(Quirk::Notion) => {
            put("workspace_id", at(&["workspace_id"]));
            put("workspace_name", at(&["workspace_name"]));
            put("bot_id", at(&["bot_id"]));
            put("user_id", at(&["owner", "user", "id"]));
            put("email", at(&["owner", "user", "person", "email"]));
        }
        Some(Quirk::Atlassian | Quirk::Microsoft | Quirk::Github) | None => {}
    }
    // Any provider: who the account is, from the ID token that came with the tokens (Google and Microsoft with
    // `openid`, every OpenID connection). Read straight from the token endpoint over TLS (OpenID Connect Core
    // 3.1.3.7); OpenID connections have also validated it. What a quirk found first stays.
    if let Some(claims) = fields.get("id_token").and_then(Value::as_str).and_then(id_token_claims) {
        for (name, claim) in [("user_id", "sub"), ("email", "email"), ("tenant_id", "tid"), ("hosted_domain", "hd")] {
            if let Some(value) = text(claims.get(claim)) {
                found.entry(name.to_owned()).or_insert(value);
            }
        }
    }
    found
}

/// The claims of a JWT's payload, without checking its signature.
fn id_token_claims(token: &str) -> Option<Map<String, Value>> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(claims) => Some(claims),
        _ => None,
    }
}

/// What a Slack answer with `ok: false` (sent with HTTP 200) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlackError {
    /// The token itself is not (or no longer) good: `invalid_auth`, `token_revoked`, ...
    Refused(String),
    /// The token lacks a scope; `needed` names it.
    MissingScope(Vec<String>),
    /// Any other error: the call itself was wrong, not the token.
    Other(String),
}

/// Slack errors that mean the token is not (or no longer) good.
const SLACK_REFUSALS: [&str; 6] =
    ["invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive", "no_permission"];

/// The error in a Slack answer, if it is one (`ok: false`).
pub fn slack_error(body: &[u8]) -> Option<SlackError> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    if fields.get("ok") != Some(&Value::Bool(false)) {
        return None;
    }
    let error = fields.get("error").and_then(Value::as_str).unwrap_or("unknown").to_owned();
    Some(if SLACK_REFUSALS.contains(&error.as_str()) {
        SlackError::Refused(error)
    } else if error == "missing_scope" {
        let needed = fields.get("needed").and_then(Value::as_str).unwrap_or_default();
        SlackError::MissingScope(
            needed.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        )
    } else {
        SlackError::Other(error)
    })
}

/// Provider text kept as metadata is bounded and has no control characters.
fn bounded(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).take(512).collect()
}

/// Atlassian: the first site the token reaches (`cloud_id`, `site_url`, `site_name`) and how many there are, from
/// `{api_base_url}/oauth/token/accessible-resources`. `Err` says why it could not be read, for the log.
pub async fn atlassian_sites(
    http: &reqwest::Client,
    api_base_url: &Url,
    access_token: &Secret,
) -> Result<Metadata, String> {
    let url = format!("{}/oauth/token/accessible-resources", api_base_url.as_str().trim_end_matches('/'));
    let response = http
        .get(url)
        .bearer_auth(access_token.expose())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|err| super::error_chain(&err.without_url()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("accessible-resources answered HTTP {}", status.as_u16()));
    }
    let body = super::exchange::read_capped(response, 256 * 1024)
        .await
        .map_err(|_| "accessible-resources answered too much or was cut short".to_owned())?;
    let sites: Vec<Value> = serde_json::from_slice(&body).map_err(|err| format!("accessible-resources: {err}"))?;
    let mut found = Metadata::new();
    if let Some(site) = sites.first() {
        for (name, key) in [("cloud_id", "id"), ("site_url", "url"), ("site_name", "name")] {
            if let Some(value) = site.get(key).and_then(Value::as_str) {
                found.insert(name.to_owned(), bounded(value));
            }
        }
    }
    found.insert("site_count".to_owned(), sites.len().to_string());
    Ok(found)
}

/// Hosts a Salesforce `instance_url` may name: Salesforce's own domains, or the host of the configured token URL
/// (a sandbox or a test double). Anything else is ignored, so a token is never sent to a host the provider's
/// answer made up.
const SALESFORCE_DOMAINS: [&str; 4] = [".salesforce.com", ".force.com", ".salesforce.mil", ".cloudforce.com"];

/// Where an account's API calls go when the provider names it per account (Salesforce's `instance_url`), else
/// none: the connection's `api_base_url` then.
pub fn account_api_base(connection: &ConnectionSettings, metadata: &Metadata) -> Option<Url> {
    if connection.quirk != Some(Quirk::Salesforce) {
        return None;
    }
    let url = Url::parse(metadata.get("instance_url")?).ok()?;
    let host = url.host_str()?.to_ascii_lowercase();
    let token_host = connection.token_url.as_ref().and_then(Url::host_str).map(str::to_ascii_lowercase);
    let trusted =
        SALESFORCE_DOMAINS.iter().any(|domain| host.ends_with(domain)) || token_host.as_deref() == Some(&host);
    let scheme_ok = url.scheme() == "https" || url.scheme() == "http" && token_host.as_deref() == Some(&host);
    (trusted && scheme_ok && url.username().is_empty() && url.query().is_none()).then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn slack_user_tokens_are_lifted_from_authed_user() {
        let answer = json!({
            "ok": true, "access_token": "xoxb-bot", "token_type": "bot", "scope": "chat:write",
            "team": { "id": "T1", "name": "Acme" }, "bot_user_id": "UB",
            "authed_user": { "id": "U1", "scope": "search:read", "access_token": "xoxp-user", "token_type": "user" }
        });
        let mut bot = object(answer.clone());
        normalize(Some(Quirk::Slack), false, &mut bot);
        assert_eq!(bot["access_token"], "xoxb-bot");
        let mut user = object(answer.clone());
        normalize(Some(Quirk::Slack), true, &mut user);
        assert_eq!((user["access_token"].as_str(), user["scope"].as_str()), (Some("xoxp-user"), Some("search:read")));
        let mut only_user = object(json!({ "ok": true, "authed_user": { "id": "U1", "access_token": "xoxp-user" } }));
        normalize(Some(Quirk::Slack), false, &mut only_user);
        assert_eq!(only_user["access_token"], "xoxp-user");
        let found = metadata(Some(Quirk::Slack), &object(answer));
        assert_eq!(found.get("team_id").map(String::as_str), Some("T1"));
        assert_eq!(found.get("user_id").map(String::as_str), Some("U1"));
        assert!(!found.values().any(|v| v.starts_with("xox")), "no token in metadata");
    }

    #[test]
    fn salesforce_and_notion_answers_tell_about_the_account() {
        let found = metadata(
            Some(Quirk::Salesforce),
            &object(
                json!({ "instance_url": "https://acme.my.salesforce.com", "id": "https://login.salesforce.com/id/00Dx/005x" }),
            ),
        );
        assert_eq!(found.get("organization_id").map(String::as_str), Some("00Dx"));
        assert_eq!(found.get("user_id").map(String::as_str), Some("005x"));
        let found = metadata(
            Some(Quirk::Notion),
            &object(
                json!({ "workspace_id": "w1", "bot_id": "b1", "owner": { "user": { "id": "u1", "person": { "email": "a@b.c" } } } }),
            ),
        );
        assert_eq!(found.get("email").map(String::as_str), Some("a@b.c"));
        assert_eq!(found.get("workspace_id").map(String::as_str), Some("w1"));
        assert!(metadata(None, &object(json!({ "workspace_id": "w1" }))).is_empty());
    }

    #[test]
    fn slack_errors_are_told_apart() {
        assert_eq!(slack_error(br#"{"ok":true}"#), None);
        assert_eq!(slack_error(b"<html>"), None);
        assert_eq!(
            slack_error(br#"{"ok":false,"error":"token_revoked"}"#),
            Some(SlackError::Refused("token_revoked".into()))
        );
        assert_eq!(
            slack_error(br#"{"ok":false,"error":"missing_scope","needed":"chat:write,files:read","provided":"x"}"#),
            Some(SlackError::MissingScope(vec!["chat:write".into(), "files:read".into()]))
        );
        assert_eq!(
            slack_error(br#"{"ok":false,"error":"channel_not_found"}"#),
            Some(SlackError::Other("channel_not_found".into()))
        );
    }

    #[test]
    fn an_id_token_tells_who_the_account_is() {
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({ "sub": "1234", "email": "ada@example.com", "tid": "t-9" }).to_string());
        let found = metadata(None, &object(json!({ "id_token": format!("e30.{payload}.sig") })));
        assert_eq!(found.get("user_id").map(String::as_str), Some("1234"));
        assert_eq!(found.get("email").map(String::as_str), Some("ada@example.com"));
        assert_eq!(found.get("tenant_id").map(String::as_str), Some("t-9"));
        assert!(metadata(None, &object(json!({ "id_token": "not-a-jwt" }))).is_empty());
        let slack = metadata(
            Some(Quirk::Slack),
            &object(json!({ "authed_user": { "id": "U1" }, "id_token": format!("e30.{payload}.sig") })),
        );
        assert_eq!(slack.get("user_id").map(String::as_str), Some("U1"), "the quirk's own id stays");
    }
}

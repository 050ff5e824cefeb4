//! The provider catalog: every entry is complete and usable as written, `check` accepts each preset with a client
//! id and secret (and its required parameters) alone, and `docs/providers.md` is generated from it.
//! Regenerate the guide with `UPDATE_DOCS=1 cargo test --test catalog`.

use std::path::PathBuf;

use callback_gate::catalog::{self, Kind};
use callback_gate::config;

fn secrets(name: &str) -> Option<String> {
    match name {
        "CALLBACK_GATE_SECRET_KEY" => Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()),
        "CALLBACK_GATE_API_KEYS" => Some("0123456789abcdef0123".into()),
        "CLIENT_SECRET" => Some("client-secret".into()),
        _ => None,
    }
}

/// A production config with one connection of `provider`, and the given extra lines.
fn config_with(provider: &str, extra: &str) -> String {
    format!(
        r#"
public_url = "https://app.example.com"
[app]
return_url = "https://app.example.com/"
user_verify_url = "https://app.example.com/verify"
[[connections]]
name = "conn"
provider = "{provider}"
{extra}
"#
    )
}

fn client_lines(kind: Kind) -> &'static str {
    if kind.is_oauth() { "client_id = \"client-id\"\nclient_secret_env = \"CLIENT_SECRET\"\n" } else { "" }
}

#[test]
fn the_catalog_has_at_least_fifty_presets_including_the_named_ones() {
    let presets = catalog::presets();
    assert!(presets.len() >= 50, "only {} presets", presets.len());
    for name in [
        "google",
        "microsoft",
        "slack",
        "github",
        "atlassian",
        "notion",
        "salesforce",
        "hubspot",
        "linear",
        "asana",
        "airtable",
        "dropbox",
        "box",
        "zoom",
        "gitlab",
        "figma",
        "discord",
        "zendesk",
        "intercom",
        "shopify",
        "xero",
        "quickbooks",
    ] {
        assert!(catalog::preset(name).is_some(), "no preset named {name}");
    }
}

#[test]
fn every_entry_is_complete_with_https_urls() {
    for preset in catalog::presets() {
        let name = &preset.name;
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{name}: a name is a-z, 0-9 and '-'"
        );
        assert!(!preset.display_name.trim().is_empty(), "{name}: display_name");
        assert!(preset.docs.starts_with("https://"), "{name}: docs must link the provider's page");
        let filled: std::collections::BTreeMap<String, String> =
            preset.parameter_names().map(|p| (p.to_owned(), "acme".to_owned())).collect();
        for (key, template) in preset.urls() {
            for placeholder in catalog::placeholders(template) {
                assert!(
                    preset.parameter_names().any(|p| p == placeholder),
                    "{name}: {key} names {{{placeholder}}}, which is neither in params nor in param_defaults"
                );
            }
            let url = catalog::fill(template, &filled).unwrap_or_else(|p| panic!("{name}: {key} misses {p}"));
            let parsed = url::Url::parse(&url).unwrap_or_else(|err| panic!("{name}: {key} {url}: {err}"));
            assert_eq!(parsed.scheme(), "https", "{name}: {key}");
            assert!(parsed.fragment().is_none(), "{name}: {key} has a fragment");
            if key != "authorization_url" && key != "probe" {
                assert!(parsed.query().is_none(), "{name}: {key} has a query");
            }
        }
        if let Some(probe) = &preset.probe {
            assert!(probe.starts_with('/') || probe.starts_with("https://"), "{name}: probe is a path or https URL");
            if probe.starts_with('/') {
                assert!(preset.api_base_url.is_some(), "{name}: a probe path needs api_base_url");
            }
        }
        if let Some(base) = &preset.api_base_url {
            assert!(!base.ends_with('/'), "{name}: api_base_url without a trailing slash");
        }
        match preset.kind {
            Kind::OAuth2 | Kind::Oidc => {
                assert!(preset.authorization_url.is_some() && preset.token_url.is_some(), "{name}: oauth endpoints");
                if preset.kind == Kind::Oidc {
                    assert!(preset.issuer.is_some(), "{name}: an oidc preset names its issuer");
                }
            }
            Kind::ApiKey | Kind::Basic => {
                assert!(preset.authorization_url.is_none() && preset.token_url.is_none(), "{name}: no oauth endpoints");
                assert!(preset.api_base_url.is_some(), "{name}: a credential preset names where calls go");
            }
        }
        assert!(matches!(preset.scope_separator.as_str(), " " | ","), "{name}: scope_separator");
        for (key, value) in &preset.authorization_params {
            assert!(!key.is_empty() && !value.is_empty(), "{name}: authorization_params");
        }
    }
}

#[test]
fn check_accepts_every_preset_with_a_client_and_its_required_parameters_alone() {
    for preset in catalog::presets() {
        let mut extra = client_lines(preset.kind).to_owned();
        if !preset.params.is_empty() {
            let values: Vec<String> = preset.params.iter().map(|p| format!("{p} = \"acme\"")).collect();
            extra.push_str(&format!("params = {{ {} }}\n", values.join(", ")));
        }
        let settings = config::from_toml(&config_with(&preset.name, &extra), &secrets)
            .unwrap_or_else(|problems| panic!("{}: {problems}", preset.name));
        let connection = &settings.connections[0];
        assert_eq!(connection.kind, preset.kind, "{}", preset.name);
        assert_eq!(connection.display_name, preset.display_name);
        if preset.kind.is_oauth() {
            let authorization = connection.authorization_url.as_ref().expect("authorization_url");
            assert!(!authorization.as_str().contains('{'), "{}: {authorization} left a placeholder", preset.name);
        }
        if preset.probe.is_some() {
            let probe = connection.probe.as_ref().unwrap_or_else(|| panic!("{}: probe", preset.name));
            assert_eq!(probe.scheme(), "https");
        }
    }
}

#[test]
fn a_missing_required_parameter_is_one_line_naming_it() {
    let preset = catalog::presets().iter().find(|p| !p.params.is_empty()).expect("a preset with a required parameter");
    let problems = config::from_toml(&config_with(&preset.name, client_lines(preset.kind)), &secrets).unwrap_err();
    let wanted = format!("needs params.{}", preset.params[0]);
    assert_eq!(problems.0.iter().filter(|p| p.contains(&wanted)).count(), 1, "{problems}");
    assert_eq!(problems.0.len(), preset.params.len(), "nothing else is reported: {problems}");
}

#[test]
fn a_parameter_value_that_could_change_the_host_is_refused() {
    let document =
        config_with("microsoft", &format!("{}params = {{ tenant = \"evil.com/x?\" }}", client_lines(Kind::OAuth2)));
    let problems = config::from_toml(&document, &secrets).unwrap_err();
    assert!(problems.0.iter().any(|p| p.contains("params.tenant")), "{problems}");
    let document = config_with("microsoft", &format!("{}params = {{ region = \"eu\" }}", client_lines(Kind::OAuth2)));
    let problems = config::from_toml(&document, &secrets).unwrap_err();
    assert!(
        problems.0.iter().any(|p| p.contains("params.region is not a parameter") && p.contains("tenant")),
        "{problems}"
    );
}

#[test]
fn microsoft_defaults_to_the_common_tenant_and_takes_another() {
    let settings = config::from_toml(&config_with("microsoft", client_lines(Kind::OAuth2)), &secrets).unwrap();
    let connection = &settings.connections[0];
    assert_eq!(
        connection.authorization_url.as_ref().map(url::Url::as_str),
        Some("https://login.microsoftonline.com/common/oauth2/v2.0/authorize")
    );
    let extra = format!("{}params = {{ tenant = \"contoso.onmicrosoft.com\" }}", client_lines(Kind::OAuth2));
    let settings = config::from_toml(&config_with("microsoft", &extra), &secrets).unwrap();
    assert_eq!(
        settings.connections[0].token_url.as_ref().map(url::Url::as_str),
        Some("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token")
    );
}

#[test]
fn a_misspelt_preset_is_answered_with_the_closest_names() {
    let problems = config::from_toml(&config_with("hubspt", client_lines(Kind::OAuth2)), &secrets).unwrap_err();
    assert!(
        problems.0.iter().any(|p| p.contains("unknown provider \"hubspt\"") && p.contains("did you mean hubspot")),
        "{problems}"
    );
}

#[test]
fn a_connections_keys_override_its_presets() {
    let extra = format!(
        "{}api_base_url = \"https://gmail.googleapis.com\"\nauthorization_params = {{ prompt = \"select_account\", login_hint = \"x\" }}\ntoken_auth_method = \"client_secret_basic\"",
        client_lines(Kind::OAuth2)
    );
    let settings = config::from_toml(&config_with("google", &extra), &secrets).unwrap();
    let connection = &settings.connections[0];
    assert_eq!(connection.api_base_url.as_ref().map(url::Url::as_str), Some("https://gmail.googleapis.com/"));
    let params: std::collections::BTreeMap<_, _> = connection.authorization_params.iter().cloned().collect();
    assert_eq!(params.get("prompt").map(String::as_str), Some("select_account"));
    assert_eq!(params.get("access_type").map(String::as_str), Some("offline"), "the preset's other parameters stay");
    assert_eq!(params.get("login_hint").map(String::as_str), Some("x"));
    assert_eq!(connection.authorization_params.iter().filter(|(k, _)| k == "prompt").count(), 1);
    assert_eq!(connection.token_auth_method, Some(catalog::TokenAuthMethod::ClientSecretBasic));
    let reserved = format!("{}authorization_params = {{ state = \"fixed\" }}", client_lines(Kind::OAuth2));
    let problems = config::from_toml(&config_with("google", &reserved), &secrets).unwrap_err();
    assert!(problems.0.iter().any(|p| p.contains("authorization_params.state")), "{problems}");
}

#[test]
fn an_api_key_connection_needs_no_client_and_refuses_oauth_keys() {
    let settings = config::from_toml(
        &config_with("api_key", "api_base_url = \"https://api.zoominfo.com\"\nverify_path = \"/me\""),
        &secrets,
    )
    .unwrap();
    let connection = &settings.connections[0];
    assert_eq!(connection.kind, Kind::ApiKey);
    assert_eq!(connection.probe.as_ref().map(url::Url::as_str), Some("https://api.zoominfo.com/me"));
    assert_eq!(
        (connection.credential_header.as_str(), connection.credential_prefix.as_str()),
        ("Authorization", "Bearer ")
    );
    let settings =
        config::from_toml(&config_with("basic", "api_base_url = \"https://api.example.com/v2\""), &secrets).unwrap();
    assert_eq!(settings.connections[0].credential_prefix, "Basic ");

    let problems = config::from_toml(
        &config_with("api_key", "client_id = \"x\"\napi_base_url = \"https://api.example.com\"\ncredential_header = \"Host\"\nverify_path = \"me\""),
        &secrets,
    )
    .unwrap_err();
    for wanted in ["client_id is not used", "credential_header", "verify_path \"me\""] {
        assert!(problems.0.iter().any(|p| p.contains(wanted)), "{wanted}: {problems}");
    }
}

#[test]
fn a_salesforce_instance_url_is_used_only_on_salesforces_own_hosts() {
    let settings = config::from_toml(&config_with("salesforce", client_lines(Kind::OAuth2)), &secrets).unwrap();
    let connection = &settings.connections[0];
    let with = |url: &str| {
        let metadata = callback_gate::account::Metadata::from([("instance_url".to_owned(), url.to_owned())]);
        callback_gate::provider::quirks::account_api_base(connection, &metadata).map(|u| u.to_string())
    };
    assert_eq!(with("https://acme.my.salesforce.com").as_deref(), Some("https://acme.my.salesforce.com/"));
    assert_eq!(with("https://evil.example.com"), None);
    assert_eq!(with("http://acme.my.salesforce.com"), None);
    assert_eq!(with("https://salesforce.com.evil.example"), None);
}

#[test]
fn the_providers_guide_matches_the_catalog() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/providers.md");
    let generated = catalog::providers_guide();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(current == generated, "docs/providers.md is stale: run `UPDATE_DOCS=1 cargo test --test catalog`");
}

//! `docs/outcomes.md` is generated from the outcome catalog; this test fails when it is stale.
//! Regenerate with `UPDATE_DOCS=1 cargo test --test docs`.

use std::path::PathBuf;

#[test]
fn the_troubleshooting_guide_matches_the_catalog() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/outcomes.md");
    let generated = callback_gate::outcome::troubleshooting_guide();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(current == generated, "docs/outcomes.md is stale: run `UPDATE_DOCS=1 cargo test --test docs`");
}

#[test]
fn every_code_of_the_contract_has_a_row() {
    let codes = [
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
        "state_missing",
        "state_invalid",
        "session_expired",
        "browser_mismatch",
        "flow_already_used",
        "code_missing",
        "issuer_mismatch",
        "failed_to_exchange_token",
        "user_verify_url_not_configured",
        "insufficient_scope",
        "link_expired",
        "link_invalid",
        "connection_unknown",
        "internal_error",
        "unknown_provider_error",
    ];
    for code in codes {
        assert!(callback_gate::outcome::CATALOG.iter().any(|e| e.code == code), "{code} has no catalog row");
    }
    for cause in [
        "invalid_grant",
        "invalid_client",
        "redirect_uri_mismatch",
        "timeout",
        "provider_unavailable",
        "malformed_response",
        "post_auth_hook",
    ] {
        assert!(
            callback_gate::outcome::CATALOG
                .iter()
                .any(|e| e.code == "failed_to_exchange_token" && e.cause == Some(cause)),
            "failed_to_exchange_token has no row for cause {cause}"
        );
    }
}

#[test]
fn the_english_outcome_messages_match_the_catalog() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("locales/en/outcomes.ftl");
    let generated = callback_gate::i18n::english_outcomes();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(current == generated, "locales/en/outcomes.ftl is stale: run `UPDATE_DOCS=1 cargo test --test docs`");
}

/// Every message of every page and outcome exists in every language.
#[test]
fn every_language_has_every_message() {
    use callback_gate::i18n::{LANGUAGES, Language, outcome_ids};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("locales/en");
    let mut ids: Vec<String> = Vec::new();
    for file in ["pages.ftl", "outcomes.ftl"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        ids.extend(
            text.lines()
                .filter(|line| !line.starts_with([' ', '#']) && (line.contains(" = ") || line.ends_with(" =")))
                .map(|line| line.split(" =").next().unwrap().trim().to_owned()),
        );
    }
    for entry in callback_gate::outcome::CATALOG {
        let (title, message) = outcome_ids(entry.code, entry.cause);
        assert!(ids.contains(&title) && ids.contains(&message), "{} has no English messages", entry.code);
    }
    let mut missing = Vec::new();
    for tag in LANGUAGES {
        let language = Language::negotiate(Some(tag));
        assert_eq!(language.tag(), tag);
        for id in &ids {
            if language.exact(id).is_none_or(|text| text.trim().is_empty()) {
                missing.push(format!("{tag}: {id}"));
            }
        }
    }
    assert!(missing.is_empty(), "messages missing:\n{}", missing.join("\n"));
}

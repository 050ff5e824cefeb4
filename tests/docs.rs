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

//! Pages people trust: in the user's language, branded like the app, and served with cacheable static files.

use reqwest::StatusCode;
use reqwest::header::{ACCEPT_ENCODING, ACCEPT_LANGUAGE, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE};

use crate::helpers::{Browser, CONNECTION, Options, TestApp, code_on, spawn_app, spawn_with};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

async fn failure_page_in(app: &TestApp, accept_language: &str) -> String {
    app.api
        .get(app.url(&format!("/connect/callback/{CONNECTION}?code=c&state=unknown")))
        .header(ACCEPT_LANGUAGE, accept_language)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn pages_speak_the_language_the_browser_asks_for() {
    let app = spawn_app().await;
    for (accept, lang) in [
        ("fr-FR,fr;q=0.9,en;q=0.5", "fr"),
        ("de", "de"),
        ("es-MX", "es"),
        ("ja,en;q=0.1", "ja"),
        ("zz", "en"),
        ("", "en"),
    ] {
        let page = failure_page_in(&app, accept).await;
        assert!(page.contains(&format!("<html lang=\"{lang}\">")), "{accept}: {page}");
        let language = callback_gate::i18n::Language::negotiate(Some(lang));
        let title = language.text("outcome-state_invalid-title");
        let escaped = title.replace('\'', "&#39;").replace('"', "&#34;");
        assert!(page.contains(&escaped), "{accept}: the {lang} title {title:?} is on the page");
        assert_eq!(code_on(&page), "state_invalid");
    }
    let english = failure_page_in(&app, "en").await;
    assert!(english.contains("This connection link is not valid"));
    let french = failure_page_in(&app, "fr").await;
    assert!(!french.contains("This connection link is not valid"));
}

#[tokio::test]
async fn refusals_before_any_handler_are_translated_too() {
    let app = spawn_app().await;
    let response = app
        .api
        .get(app.url(&format!("/connect/callback/{CONNECTION}?state={}", "A".repeat(10_000))))
        .header(ACCEPT_LANGUAGE, "de")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::URI_TOO_LONG);
    assert!(response.text().await.unwrap().contains("<html lang=\"de\">"));
    let missing = app.api.get(app.url("/nowhere")).header(ACCEPT_LANGUAGE, "ja").send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.text().await.unwrap().contains("<html lang=\"ja\">"));
}

#[tokio::test]
async fn static_files_have_hashed_names_long_lifetimes_and_compression() {
    let app = spawn_app().await;
    let page = failure_page_in(&app, "en").await;
    let href = page.split("<link rel=\"stylesheet\" href=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    assert!(
        href.starts_with("/static/style.") && href.ends_with(".css") && href.len() > "/static/style..css".len() + 8,
        "{href}"
    );
    let response = app.api.get(app.url(&href)).header(ACCEPT_ENCODING, "gzip").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CACHE_CONTROL], "public, max-age=31536000, immutable");
    assert!(response.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/css"));
    assert_eq!(response.headers()[CONTENT_ENCODING], "gzip");
    let missing = app.api.get(app.url("/static/style.0000000000.css")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn branding_sets_name_logo_accent_and_stylesheet() {
    let branding = format!(
        "[branding]\nname = \"Acme Agents\"\nlogo = \"{}\"\naccent_color = \"#5b21b6\"\naccent_color_dark = \"#c4b5fd\"\nstylesheet = \"{}\"\n",
        fixture("logo.svg"),
        fixture("custom.css")
    );
    let app = spawn_with(Options { extra_config: branding, ..Options::default() }).await;
    let page = failure_page_in(&app, "en").await;
    assert!(page.contains("alt=\"Acme Agents\""), "{page}");
    assert!(page.contains("· Acme Agents</title>"));
    let sheets: Vec<&str> =
        page.split("<link rel=\"stylesheet\" href=\"").skip(1).map(|rest| rest.split('"').next().unwrap()).collect();
    assert_eq!(sheets.len(), 3, "built-in, accent and custom stylesheets: {sheets:?}");
    let accent = app.api.get(app.url(sheets[1])).send().await.unwrap().text().await.unwrap();
    assert!(accent.contains("--accent: #5b21b6; --accent-text: #ffffff;"), "{accent}");
    assert!(accent.contains("prefers-color-scheme: dark") && accent.contains("#c4b5fd"));
    let custom = app.api.get(app.url(sheets[2])).send().await.unwrap().text().await.unwrap();
    assert!(custom.contains("border-width: 2px"));
    let logo = page.split("<img class=\"logo\" src=\"").nth(1).unwrap().split('"').next().unwrap();
    let response = app.api.get(app.url(logo)).send().await.unwrap();
    assert_eq!(response.headers()[CONTENT_TYPE], "image/svg+xml");
    assert!(response.text().await.unwrap().contains("<svg"));
}

#[tokio::test]
async fn a_logo_url_on_the_app_origin_is_allowed_by_the_csp() {
    let branding = "[branding]\nlogo = \"https://app.example.com/brand/logo.png\"\n".to_owned();
    let app = spawn_with(Options { extra_config: branding, ..Options::default() }).await;
    let response = Browser::new().get(&app.url("/connect/callback/mock?code=c&state=unknown")).await;
    let csp = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("img-src 'self' https://app.example.com;"), "{csp}");
    assert!(response.text().await.unwrap().contains("src=\"https://app.example.com/brand/logo.png\""));
}

#[test]
fn check_refuses_low_contrast_accents_and_foreign_logos() {
    let document = |branding: &str| {
        format!(
            "public_url = \"https://app.example.com\"\n[app]\nreturn_url = \"https://app.example.com/\"\nuser_verify_url = \"https://app.example.com/v\"\n[[connections]]\nname = \"gmail\"\nprovider = \"google\"\nclient_id = \"c\"\nclient_secret_env = \"S\"\n[branding]\n{branding}"
        )
    };
    let secrets = |name: &str| match name {
        "S" => Some("s".to_owned()),
        "CALLBACK_GATE_API_KEYS" => Some("0123456789abcdef0123".to_owned()),
        "CALLBACK_GATE_SECRET_KEY" => Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned()),
        _ => None,
    };
    let problems = |branding: &str| {
        callback_gate::config::from_toml(&document(branding), &secrets)
            .err()
            .map(|p| p.0.join("\n"))
            .unwrap_or_default()
    };
    assert!(problems("accent_color = \"#ffcc00\"").contains("WCAG AA"));
    assert!(problems("accent_color_dark = \"#333333\"").contains("dark page background"));
    assert!(problems("accent_color = \"blue\"").contains("not a colour"));
    assert!(problems("logo = \"https://cdn.example.net/logo.png\"").contains("allowed_return_origins"));
    assert!(problems("logo = \"/no/such/logo.png\"").contains("not a readable file"));
    assert!(problems("logo = \"logo.gif\"").contains(".png, .svg, .jpg or .webp"));
    assert!(problems("accent_color = \"#0b57d0\"").is_empty());
}

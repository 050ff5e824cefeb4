//! Languages: every text a user reads comes from the Fluent files under `locales/`, compiled into the binary, in
//! the language negotiated from `Accept-Language`, with English as the fallback.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::RwLock;

use fluent_langneg::{NegotiationStrategy, accepted_languages, negotiate_languages};
use fluent_templates::fluent_bundle::FluentValue;
use fluent_templates::{LanguageIdentifier, Loader};

fluent_templates::static_loader! {
    static LOCALES = {
        locales: "./locales",
        fallback_language: "en",
        // Pages are HTML with a `lang` attribute; Unicode isolation marks around variables would only get in the way
        // of copying a reference.
        customise: |bundle| bundle.set_use_isolating(false),
    };
}

/// The languages every message exists in (a test fails when one misses a message).
pub const LANGUAGES: [&str; 5] = ["en", "es", "fr", "de", "ja"];

/// [`LANGUAGES`] parsed once, for negotiation on every request.
static AVAILABLE: std::sync::LazyLock<Vec<LanguageIdentifier>> =
    std::sync::LazyLock::new(|| LANGUAGES.iter().filter_map(|tag| tag.parse().ok()).collect());

/// Longest `Accept-Language` header considered; the rest is ignored.
const MAX_ACCEPT_LANGUAGE: usize = 256;

/// The language a page is written in: one of [`LANGUAGES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Language {
    id: LanguageIdentifier,
    /// Its place in [`LANGUAGES`], which is also its place in [`PLAIN_TEXTS`].
    index: usize,
}

/// Messages without variables, per language, as formatted the first time a page asked for them: every page asks
/// for the same few, and formatting one through Fluent costs more than a lookup here.
static PLAIN_TEXTS: std::sync::LazyLock<[RwLock<HashMap<String, String>>; LANGUAGES.len()]> =
    std::sync::LazyLock::new(|| std::array::from_fn(|_| RwLock::default()));

/// Message ids come from the code, never from a request; this bounds the cache all the same.
const MAX_PLAIN_TEXTS: usize = 1024;

impl Default for Language {
    fn default() -> Self {
        Self::at(0)
    }
}

impl Language {
    fn at(index: usize) -> Self {
        Self { id: AVAILABLE.get(index).cloned().unwrap_or_default(), index }
    }

    /// The best supported language for an `Accept-Language` header (RFC 9110 section 12.5.4), English otherwise.
    pub fn negotiate(accept_language: Option<&str>) -> Self {
        let Some(header) = accept_language.filter(|header| !header.is_empty()) else {
            return Self::default();
        };
        let header = header.get(..MAX_ACCEPT_LANGUAGE).unwrap_or(header);
        let requested = accepted_languages::parse(header);
        let chosen = negotiate_languages(&requested, &AVAILABLE, AVAILABLE.first(), NegotiationStrategy::Lookup)
            .first()
            .copied();
        chosen
            .and_then(|id| AVAILABLE.iter().position(|available| available == id))
            .map_or_else(Self::default, Self::at)
    }

    pub fn from_headers(headers: &axum::http::HeaderMap) -> Self {
        Self::negotiate(headers.get(axum::http::header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()))
    }

    /// Its place in [`LANGUAGES`]: a language's pages are the same whatever `Accept-Language` chose it.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The BCP 47 tag, for `<html lang>`.
    pub fn tag(&self) -> String {
        LANGUAGES.get(self.index).map_or_else(|| self.id.to_string(), |tag| (*tag).to_owned())
    }

    /// A message with no variables.
    pub fn text(&self, id: &str) -> String {
        self.kept(id, || LOCALES.lookup(&self.id, id))
    }

    /// A message whose variables come from the configuration (the app's name), never from a request: kept, like a
    /// message without variables, after it is first formatted.
    pub fn text_with_configured(&self, id: &str, args: &[(&'static str, &str)]) -> String {
        let mut key = String::from(id);
        for (name, value) in args {
            key.extend(['\u{1f}'].into_iter().chain(name.chars()).chain(['=']).chain(value.chars()));
        }
        self.kept(&key, || self.text_with(id, args))
    }

    /// The text kept under `key` in this language, formatted by `format` the first time.
    fn kept(&self, key: &str, format: impl FnOnce() -> String) -> String {
        let Some(cache) = PLAIN_TEXTS.get(self.index) else {
            return format();
        };
        if let Some(text) = cache.read().ok().and_then(|texts| texts.get(key).cloned()) {
            return text;
        }
        let text = format();
        if let Ok(mut texts) = cache.write()
            && texts.len() < MAX_PLAIN_TEXTS
        {
            texts.insert(key.to_owned(), text.clone());
        }
        text
    }

    /// A message with variables.
    pub fn text_with(&self, id: &str, args: &[(&'static str, &str)]) -> String {
        let args: HashMap<Cow<'static, str>, FluentValue<'_>> =
            args.iter().map(|(name, value)| (Cow::Borrowed(*name), FluentValue::from(*value))).collect();
        LOCALES.lookup_with_args(&self.id, id, &args)
    }

    /// A message in exactly this language, without falling back to English (for completeness checks). Every
    /// variable a page passes is given a sample value.
    pub fn exact(&self, id: &str) -> Option<String> {
        let samples: HashMap<&str, FluentValue<'_>> = ["app", "connection", "reference", "time"]
            .into_iter()
            .map(|name| (name, FluentValue::from("sample")))
            .collect();
        LOCALES.lookup_no_default_fallback(&self.id, id, Some(&samples))
    }
}

/// Message ids of an outcome's title and message.
pub fn outcome_ids(code: &str, cause: Option<&str>) -> (String, String) {
    let base = match cause {
        Some(cause) => format!("{code}-{cause}"),
        None => code.to_owned(),
    };
    (format!("outcome-{base}-title"), format!("outcome-{base}-message"))
}

/// `locales/en/outcomes.ftl`, generated from the catalog so the English texts cannot drift from it.
pub fn english_outcomes() -> String {
    let mut out = String::from(
        "# Titles and messages of every outcome, generated from src/outcome.rs by `UPDATE_DOCS=1 cargo test --test docs`.\n\
         # Translate these in the other languages' outcomes.ftl; do not edit this file by hand.\n",
    );
    for entry in crate::outcome::CATALOG {
        let (title, message) = outcome_ids(entry.code, entry.cause);
        out.push_str(&format!("\n{title} = {}\n{message} = {}\n", entry.title, entry.message));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_best_supported_language() {
        assert_eq!(Language::negotiate(Some("fr-CA,fr;q=0.9,en;q=0.8")).tag(), "fr");
        assert_eq!(Language::negotiate(Some("de-DE")).tag(), "de");
        assert_eq!(Language::negotiate(Some("ja")).tag(), "ja");
        assert_eq!(Language::negotiate(Some("pt-BR,es;q=0.5")).tag(), "es");
        assert_eq!(Language::negotiate(Some("zz, xx;q=0.1")).tag(), "en");
        assert_eq!(Language::negotiate(None).tag(), "en");
        assert_eq!(Language::negotiate(Some(&"a,".repeat(10_000))).tag(), "en");
    }

    #[test]
    fn variables_are_filled_in() {
        let english = Language::default();
        assert_eq!(english.text_with("back-to-app", &[("app", "Acme")]), "Back to Acme");
    }

    #[test]
    fn kept_messages_are_kept_per_language_and_value() {
        let (english, french) = (Language::default(), Language::negotiate(Some("fr")));
        for _ in 0..2 {
            assert_eq!(english.text_with_configured("back-to-app", &[("app", "Acme")]), "Back to Acme");
            assert_eq!(english.text_with_configured("back-to-app", &[("app", "Globex")]), "Back to Globex");
            assert_eq!(
                french.text_with_configured("back-to-app", &[("app", "Acme")]),
                french.text_with("back-to-app", &[("app", "Acme")])
            );
            assert_eq!(french.text("try-again"), french.exact("try-again").unwrap());
        }
        assert_ne!(french.text("try-again"), english.text("try-again"));
    }
}

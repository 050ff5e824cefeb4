//! Static files: the stylesheet compiled into the binary, and the branding built from the config (accent colours,
//! logo, extra stylesheet). Each is served under a content-hashed name with a year-long, immutable cache lifetime,
//! so a new release or a new logo is never hidden by a browser cache.

use std::collections::HashMap;

use axum::body::Bytes;
use sha2::{Digest, Sha256};

use crate::config::{Branding, Logo};

const STYLE: &str = include_str!("../static/style.css");

/// One file served under `/static/`.
#[derive(Debug, Clone)]
pub struct Asset {
    pub content_type: &'static str,
    /// Shared, so serving a file does not copy it.
    pub bytes: Bytes,
    /// Whether the name carries a content hash (and so may be cached forever).
    pub immutable: bool,
}

/// Every static file, and the links pages use to reach them.
#[derive(Debug, Clone, Default)]
pub struct Assets {
    files: HashMap<String, Asset>,
    /// Stylesheets, in the order pages link them.
    pub stylesheets: Vec<String>,
    /// Where the logo is loaded from: one of our own files, or the app's https URL.
    pub logo: Option<String>,
}

fn hashed_name(stem: &str, extension: &str, bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("{stem}.{hash}.{extension}")
}

impl Assets {
    pub fn build(branding: &Branding) -> Self {
        let mut assets = Self::default();
        assets.add("style", "css", "text/css; charset=utf-8", STYLE.as_bytes().to_vec(), true);
        // The unhashed name stays reachable for anyone who links it directly.
        assets.files.insert(
            "style.css".into(),
            Asset {
                content_type: "text/css; charset=utf-8",
                bytes: Bytes::from_static(STYLE.as_bytes()),
                immutable: false,
            },
        );
        if branding.accent.is_some() || branding.accent_dark.is_some() {
            let css = accent_stylesheet(branding);
            assets.add("brand", "css", "text/css; charset=utf-8", css.into_bytes(), true);
        }
        if let Some(custom) = &branding.stylesheet {
            assets.add("custom", "css", "text/css; charset=utf-8", custom.as_bytes().to_vec(), true);
        }
        assets.logo = match &branding.logo {
            Some(Logo::File { bytes, content_type, extension }) => {
                Some(format!("/static/{}", assets.add("logo", extension, content_type, bytes.clone(), false)))
            }
            Some(Logo::Url(url)) => Some(url.to_string()),
            None => None,
        };
        assets
    }

    /// Adds a file under its hashed name; stylesheets are also linked from every page.
    fn add(&mut self, stem: &str, extension: &str, content_type: &'static str, bytes: Vec<u8>, link: bool) -> String {
        let name = hashed_name(stem, extension, &bytes);
        if link {
            self.stylesheets.push(format!("/static/{name}"));
        }
        self.files.insert(name.clone(), Asset { content_type, bytes: Bytes::from(bytes), immutable: true });
        name
    }

    pub fn get(&self, name: &str) -> Option<&Asset> {
        self.files.get(name)
    }
}

/// The accent colours as CSS custom properties, with a readable text colour on each.
fn accent_stylesheet(branding: &Branding) -> String {
    let mut css = String::from("/* Generated from [branding] in the config. */\n");
    if let Some(accent) = branding.accent {
        css.push_str(&format!(":root {{ --accent: {}; --accent-text: {}; }}\n", accent.hex(), accent.text_on().hex()));
    }
    if let Some(accent) = branding.accent_dark {
        css.push_str(&format!(
            "@media (prefers-color-scheme: dark) {{ :root {{ --accent: {}; --accent-text: {}; }} }}\n",
            accent.hex(),
            accent.text_on().hex()
        ));
    }
    css
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rgb;

    #[test]
    fn names_change_with_content() {
        let plain = Assets::build(&Branding::default());
        assert_eq!(plain.stylesheets.len(), 1);
        let branded = Assets::build(&Branding { accent: Some(Rgb(0x11, 0x22, 0x33)), ..Branding::default() });
        assert_eq!(branded.stylesheets.len(), 2);
        let other = Assets::build(&Branding { accent: Some(Rgb(0x33, 0x22, 0x11)), ..Branding::default() });
        assert_ne!(branded.stylesheets[1], other.stylesheets[1]);
        assert_eq!(branded.stylesheets[0], plain.stylesheets[0]);
        let brand = branded.get(branded.stylesheets[1].trim_start_matches("/static/")).unwrap();
        assert!(String::from_utf8_lossy(&brand.bytes).contains("--accent: #112233; --accent-text: #ffffff;"));
    }
}

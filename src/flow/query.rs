//! The callback's query string, parsed strictly: each parameter this service reads may appear once,
//! percent-encoding must be valid and the decoded text UTF-8, and the provider's error fields are checked against
//! RFC 6749's character sets. A lenient parser (first value wins, invalid bytes replaced) is what makes parameter
//! pollution and log or page injection possible, so nothing here is lenient.

use std::borrow::Cow;

use crate::crypto::Secret;

pub use crate::outcome::{interpretable, is_rfc6749_text};

/// The callback's query, parsed strictly: each parameter this service reads may appear once, percent-encoding
/// must be valid and the decoded text UTF-8. Unknown parameters are ignored.
#[derive(Debug, Default)]
pub struct CallbackQuery {
    pub state: Option<Secret>,
    pub code: Option<Secret>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub error_uri: Option<String>,
    pub iss: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("parameter `{0}` appears more than once")]
    Repeated(&'static str),
    #[error("the query has invalid percent-encoding or is not UTF-8")]
    Encoding,
}

impl CallbackQuery {
    pub fn parse(raw: Option<&str>) -> Result<Self, QueryError> {
        let mut query = Self::default();
        for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode_component(key)?;
            let slot_name: &'static str = match &*key {
                "state" => "state",
                "code" => "code",
                "error" => "error",
                "error_description" => "error_description",
                "error_uri" => "error_uri",
                "iss" => "iss",
                _ => continue,
            };
            let value = decode_component(value)?.into_owned();
            let taken = match slot_name {
                "state" => query.state.replace(Secret::new(value)).is_some(),
                "code" => query.code.replace(Secret::new(value)).is_some(),
                "error" => query.error.replace(value).is_some(),
                "error_description" => query.error_description.replace(value).is_some(),
                "error_uri" => query.error_uri.replace(value).is_some(),
                _ => query.iss.replace(value).is_some(),
            };
            if taken {
                return Err(QueryError::Repeated(slot_name));
            }
        }
        Ok(query)
    }
}

/// Decodes one `application/x-www-form-urlencoded` component, refusing what a lenient decoder would paper over.
fn decode_component(raw: &str) -> Result<Cow<'_, str>, QueryError> {
    // Most components (every key, a state, a code) have nothing encoded: they are used as they are.
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' {
            let valid = bytes.get(i + 1..i + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit));
            if !valid {
                return Err(QueryError::Encoding);
            }
        }
    }
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| Cow::Owned(s.into_owned()))
        .map_err(|_| QueryError::Encoding)
}

/// RFC 6749 appendix A.9: `error_uri` is a URI reference of `%x21 / %x23-5B / %x5D-7E`.
pub fn is_rfc6749_uri(c: char) -> bool {
    c != ' ' && is_rfc6749_text(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused() {
        assert_eq!(CallbackQuery::parse(Some("state=a&state=b")).unwrap_err(), QueryError::Repeated("state"));
        assert_eq!(CallbackQuery::parse(Some("code=a&code=a")).unwrap_err(), QueryError::Repeated("code"));
        assert!(CallbackQuery::parse(Some("state=a&code=b&extra=1&extra=2")).is_ok());
    }

    #[test]
    fn bad_encoding_is_refused_not_replaced() {
        assert_eq!(CallbackQuery::parse(Some("state=%zz")).unwrap_err(), QueryError::Encoding);
        assert_eq!(CallbackQuery::parse(Some("state=%ff%fe")).unwrap_err(), QueryError::Encoding);
        assert_eq!(CallbackQuery::parse(Some("state=%4")).unwrap_err(), QueryError::Encoding);
        let query = CallbackQuery::parse(Some("error=access_denied&error_description=User+said+no%21")).unwrap();
        assert_eq!(query.error_description.as_deref(), Some("User said no!"));
    }

    #[test]
    fn plain_and_encoded_components_decode_alike() {
        let query = CallbackQuery::parse(Some("st%61te=a%2Bb+c&code=plain-Code_1.~&iss=https%3A%2F%2Fidp")).unwrap();
        assert_eq!(query.state.as_ref().map(Secret::expose), Some("a+b c"));
        assert_eq!(query.code.as_ref().map(Secret::expose), Some("plain-Code_1.~"));
        assert_eq!(query.iss.as_deref(), Some("https://idp"));
        assert_eq!(CallbackQuery::parse(Some("state=a&st%61te=b")).unwrap_err(), QueryError::Repeated("state"));
    }

    #[test]
    fn rfc6749_character_sets() {
        assert!("access_denied".chars().all(is_rfc6749_text));
        assert!(!"a\"b".chars().all(is_rfc6749_text));
        assert!(!"a\\b".chars().all(is_rfc6749_text));
        assert!(!"é".chars().all(is_rfc6749_text));
        assert!(!"a b".chars().all(is_rfc6749_uri));
        assert_eq!(interpretable("AADSTS65001: consent.\r\nTrace ID: 1"), "AADSTS65001: consent.");
    }
}

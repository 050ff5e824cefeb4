//! Connected accounts: the identifier an app gives its end user, the account's status, and its public view.
//!
//! Values are parsed once at the edge (the API) into types that cannot hold invalid data.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// The app's id for its end user: 1 to 255 bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Identifier(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentifierError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most 255 bytes")]
    TooLong,
    #[error("must not contain control characters")]
    ControlCharacter,
}

impl Identifier {
    pub const MAX_BYTES: usize = 255;

    pub fn parse(value: &str) -> Result<Self, IdentifierError> {
        if value.is_empty() {
            return Err(IdentifierError::Empty);
        }
        if value.len() > Self::MAX_BYTES {
            return Err(IdentifierError::TooLong);
        }
        if value.chars().any(crate::telemetry::is_hidden_char) {
            return Err(IdentifierError::ControlCharacter);
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a connected account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccountStatus {
    /// A link was minted; the user has not finished a flow yet.
    PendingAuth,
    /// The flow succeeded; the app has not yet confirmed that the right user finished it.
    PendingVerification,
    /// Tokens are stored and usable.
    Active,
    /// Tokens expired and could not be refreshed.
    Expired,
    /// The account was disconnected.
    Disconnected,
}

impl AccountStatus {
    pub const ALL: [AccountStatus; 5] =
        [Self::PendingAuth, Self::PendingVerification, Self::Active, Self::Expired, Self::Disconnected];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingAuth => "PENDING_AUTH",
            Self::PendingVerification => "PENDING_VERIFICATION",
            Self::Active => "ACTIVE",
            Self::Expired => "EXPIRED",
            Self::Disconnected => "DISCONNECTED",
        }
    }
}

impl FromStr for AccountStatus {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|status| status.as_str().eq_ignore_ascii_case(value)).ok_or(())
    }
}

impl fmt::Display for AccountStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last failure recorded for an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LastError {
    /// The outcome code of the failure.
    pub code: String,
    pub reference: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// A connected account as the API shows it. Tokens are never part of this view.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConnectedAccount {
    pub connection: String,
    pub identifier: String,
    pub status: AccountStatus,
    pub scopes: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub last_error: Option<LastError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked_at_the_edge() {
        assert!(Identifier::parse("user_123").is_ok());
        assert_eq!(Identifier::parse(""), Err(IdentifierError::Empty));
        assert_eq!(Identifier::parse(&"a".repeat(256)), Err(IdentifierError::TooLong));
        assert!(Identifier::parse(&"a".repeat(255)).is_ok());
        assert_eq!(Identifier::parse("a\nb"), Err(IdentifierError::ControlCharacter));
        assert_eq!(Identifier::parse("a\u{1b}[31m"), Err(IdentifierError::ControlCharacter));
        assert_eq!(Identifier::parse("a\u{202e}b"), Err(IdentifierError::ControlCharacter));
        assert!(Identifier::parse("élodie@example.com").is_ok());
    }

    #[test]
    fn statuses_are_upper_case() {
        assert_eq!(serde_json::to_string(&AccountStatus::PendingAuth).unwrap(), "\"PENDING_AUTH\"");
        assert_eq!("active".parse::<AccountStatus>(), Ok(AccountStatus::Active));
    }
}

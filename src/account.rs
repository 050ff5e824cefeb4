//! Connected accounts: the identifier an app gives its end user, the account's status, and its public view.
//!
//! Values are parsed once at the edge (the API) into types that cannot hold invalid data.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

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
    /// Scopes the connection asks for that this account was not granted: configured after it connected, or named
    /// by the provider when it refused an API call for a missing scope. Empty when nothing is missing; a new
    /// authorization link lets the user grant them.
    pub missing_scopes: Vec<String>,
    /// What the provider told about the account besides its tokens: e.g. `cloud_id` and `site_url` (Atlassian),
    /// `team_id` (Slack), `workspace_id` (Notion), `instance_url` (Salesforce), `user_id` and `email`.
    pub metadata: Metadata,
}

/// Provider facts about a connected account, by name.
pub type Metadata = std::collections::BTreeMap<String, String>;

/// OpenID scopes that providers expand or leave out of the granted list; their absence is not a narrower grant.
pub const IMPLICIT_SCOPES: [&str; 6] = ["openid", "offline_access", "email", "profile", "address", "phone"];

impl ConnectedAccount {
    /// Adds the scopes `required` (the connection's configured scopes) holds and this account was not granted,
    /// for accounts that hold tokens.
    pub fn with_required_scopes(mut self, required: &[String]) -> Self {
        if matches!(self.status, AccountStatus::Active | AccountStatus::Expired) {
            for scope in required {
                let implicit = IMPLICIT_SCOPES.contains(&scope.as_str());
                if !implicit && !self.scopes.contains(scope) && !self.missing_scopes.contains(scope) {
                    self.missing_scopes.push(scope.clone());
                }
            }
        }
        self
    }
}

/// The most time before expiry at which tokens are refreshed: they are renewed when less than half their lifetime,
/// and at most this, remains.
pub const REFRESH_WINDOW: Duration = Duration::from_secs(5 * 60);

/// When the background refresher should renew tokens issued at `now` that expire at `expires_at` (unix seconds):
/// once less than half their lifetime, at most [`REFRESH_WINDOW`], remains, less a random part of a tenth of that
/// window, so accounts connected together are not all refreshed in the same second. Tokens that cannot be
/// refreshed are due when they expire (the account becomes EXPIRED then); tokens without an expiry never are.
pub fn refresh_due(now: OffsetDateTime, expires_at: Option<i64>, refreshable: bool) -> Option<OffsetDateTime> {
    let expires_at = OffsetDateTime::from_unix_timestamp(expires_at?).ok()?;
    if !refreshable {
        return Some(expires_at);
    }
    let lifetime = (expires_at - now).max(time::Duration::ZERO);
    let most = time::Duration::try_from(REFRESH_WINDOW).unwrap_or(time::Duration::ZERO);
    let window = (lifetime / 2_i32).min(most);
    let jitter = (window / 10_i32) * crate::crypto::random_fraction();
    Some(expires_at - window - jitter)
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
    fn tokens_are_due_when_less_than_half_their_lifetime_and_at_most_five_minutes_remain() {
        let now = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let at = |seconds: i64| Some(1_000_000 + seconds);
        for _ in 0..100 {
            // An hour-long token: due between 5 minutes and 5.5 minutes before it expires.
            let due = refresh_due(now, at(3600), true).unwrap();
            let before_expiry = (now + time::Duration::seconds(3600) - due).whole_seconds();
            assert!((300..=330).contains(&before_expiry), "{before_expiry}");
            // A two-minute token: due once half its lifetime is left, give or take the jitter.
            let due = refresh_due(now, at(120), true).unwrap();
            let before_expiry = (now + time::Duration::seconds(120) - due).whole_milliseconds();
            assert!((60_000..=66_000).contains(&before_expiry), "{before_expiry}");
        }
        assert_eq!(refresh_due(now, at(3600), false), Some(now + time::Duration::seconds(3600)), "due at expiry");
        assert_eq!(refresh_due(now, None, true), None, "no expiry, never due");
        assert!(refresh_due(now, at(-10), true).unwrap() <= now, "already expired: due now");
    }

    #[test]
    fn statuses_are_upper_case() {
        assert_eq!(serde_json::to_string(&AccountStatus::PendingAuth).unwrap(), "\"PENDING_AUTH\"");
        assert_eq!("active".parse::<AccountStatus>(), Ok(AccountStatus::Active));
    }
}

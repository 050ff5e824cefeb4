//! Webhooks: the app hears about every change to its accounts and flows without polling.
//!
//! Events are written to the store's outbox by the store itself, in the same transaction as the change that causes
//! them (triggers on the accounts, flows and outcome events; see `migrations/*/…webhooks.sql`), so an event exists
//! exactly when its change does. This module delivers them: a background worker in every instance claims due events
//! (each claim is a lease one worker wins, so two instances never run the same attempt at once), signs each with
//! every configured key as Standard Webhooks specifies, POSTs it, and records the answer. Anything but a 2xx, or no
//! answer in time, is retried with exponential backoff and jitter for at least a day, then marked failed.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::config::{WebhookKey, WebhookSettings};
use crate::context::Context;
use crate::crypto;
use crate::store::{DeliveryEnd, DeliveryRecord, StoreError};

/// How long one attempt may take, the receiver's answer included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most of a receiver's answer read (and then dropped): it is only its status that counts.
const MAX_ANSWER_BYTES: usize = 4 * 1024;
/// How long a claim lasts: longer than an attempt can take, so it ends early only when its worker died.
const LEASE: Duration = Duration::from_secs(30);
/// How many events one pass claims, and so attempts at once, per instance.
pub const BATCH: u32 = 16;
/// How often the worker looks for due events.
pub const DELIVER_EVERY: Duration = Duration::from_millis(250);
/// How long an event is retried before it is marked failed.
pub const RETRY_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// The wait before attempt `n + 1`, after `n` failed attempts: 5 s, 30 s, 2 min, 5 min, 15 min, 30 min, 1 h,
/// 2 h, 4 h, then every 8 hours, less up to a fifth at random so that a receiver coming back is not met by every
/// event at once.
pub fn backoff(failed_attempts: i64) -> Duration {
    const SCHEDULE: [u64; 10] = [5, 30, 120, 300, 900, 1800, 3600, 7200, 14_400, 28_800];
    let index = usize::try_from(failed_attempts.max(1) - 1).unwrap_or(0).min(SCHEDULE.len() - 1);
    let full = Duration::from_secs(SCHEDULE[index]);
    full.mul_f64(1.0 - crypto::random_fraction() / 5.0)
}

/// The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` for each key, separated
/// by spaces (Standard Webhooks), so a receiver that knows any one of the keys verifies it during a rotation.
///
/// Written on `hmac` and `sha2` rather than a Standard Webhooks crate: the signing is these few lines, and the tests
/// verify it with the published `standardwebhooks` implementation, which they could not do against itself.
pub fn signature(keys: &[WebhookKey], id: &str, timestamp: i64, body: &str) -> String {
    keys.iter()
        .filter_map(|key| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key.bytes()).ok()?;
            mac.update(format!("{id}.{timestamp}.").as_bytes());
            mac.update(body.as_bytes());
            Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One pass of the worker: claims the due events and attempts each once. Returns how many it attempted.
pub async fn deliver_due(state: &Context, settings: &WebhookSettings) -> Result<usize, StoreError> {
    let lease = crypto::random_token::<16>();
    let now = OffsetDateTime::now_utc();
    let claimed = state.store.claim_deliveries(&lease, now + LEASE, now, BATCH).await?;
    let attempted = claimed.len();
    let attempts = claimed.into_iter().map(|delivery| {
        let lease = lease.clone();
        async move {
            let end = attempt(state, settings, &delivery).await;
            let result = match &end {
                DeliveryEnd::Delivered { .. } => "delivered",
                DeliveryEnd::Retry { .. } => "retried",
                DeliveryEnd::Failed { .. } => "failed",
            };
            state.metrics.record_delivery(result);
            log(&delivery, &end);
            if let Err(err) = state.store.end_delivery(&delivery.id, &lease, end, OffsetDateTime::now_utc()).await {
                // The claim runs out and the event is attempted again: at least once, never lost.
                tracing::warn!(target: "callback_gate::webhooks", id = %delivery.id, error = %err, "could not record a delivery attempt");
            }
        }
    });
    futures_util::future::join_all(attempts).await;
    Ok(attempted)
}

/// One attempt: a signed POST of the event's body, exactly as stored.
async fn attempt(state: &Context, settings: &WebhookSettings, delivery: &DeliveryRecord) -> DeliveryEnd {
    let timestamp = OffsetDateTime::now_utc().unix_timestamp();
    let sent = state
        .providers
        .http
        .post(settings.url.clone())
        .timeout(ATTEMPT_TIMEOUT)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &delivery.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature(&settings.keys, &delivery.id, timestamp, &delivery.payload))
        .body(delivery.payload.clone())
        .send()
        .await;
    let (status, error) = match sent {
        Ok(response) => {
            let status = response.status();
            // The answer's body does not matter; it is read (to reuse the connection) up to a bound.
            let _ = crate::provider::exchange::read_capped(response, MAX_ANSWER_BYTES).await;
            if status.is_success() {
                return DeliveryEnd::Delivered { status: i64::from(status.as_u16()) };
            }
            let error = if status.is_redirection() {
                format!("HTTP {}: redirects are not followed", status.as_u16())
            } else {
                format!("HTTP {}", status.as_u16())
            };
            (Some(i64::from(status.as_u16())), error)
        }
        Err(err) if err.is_timeout() => (None, format!("no answer within {} seconds", ATTEMPT_TIMEOUT.as_secs())),
        Err(err) => (None, crate::provider::error_chain(&err.without_url())),
    };
    let failed_attempts = delivery.attempts + 1;
    let next_at = OffsetDateTime::now_utc() + backoff(failed_attempts);
    if next_at - delivery.created_at > RETRY_FOR {
        DeliveryEnd::Failed { status, error }
    } else {
        DeliveryEnd::Retry { status, error, next_at }
    }
}

fn log(delivery: &DeliveryRecord, end: &DeliveryEnd) {
    let latency_ms = (OffsetDateTime::now_utc() - delivery.created_at).whole_milliseconds();
    match end {
        DeliveryEnd::Delivered { status } => tracing::info!(
            target: "callback_gate::webhooks",
            id = %delivery.id,
            event = %delivery.event_type,
            attempt = delivery.attempts + 1,
            status,
            since_event_ms = latency_ms,
            "webhook delivered"
        ),
        DeliveryEnd::Retry { status, error, next_at } => tracing::warn!(
            target: "callback_gate::webhooks",
            id = %delivery.id,
            event = %delivery.event_type,
            attempt = delivery.attempts + 1,
            status,
            error = %crate::telemetry::escape_bounded(error),
            next_attempt = %crate::telemetry::rfc3339(*next_at),
            "webhook not delivered; will retry"
        ),
        DeliveryEnd::Failed { status, error } => tracing::error!(
            target: "callback_gate::webhooks",
            id = %delivery.id,
            event = %delivery.event_type,
            attempts = delivery.attempts + 1,
            status,
            error = %crate::telemetry::escape_bounded(error),
            "webhook given up after a day of attempts"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_standard_webhooks_v1_for_every_key() {
        // The example of the Standard Webhooks specification.
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let keys = [crate::config::WebhookKey::for_tests(key.clone()), crate::config::WebhookKey::for_tests(key)];
        let body = r#"{"test": 2432232314}"#;
        let signed = signature(&keys, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(signed, format!("{expected} {expected}"));
    }

    #[test]
    fn retries_back_off_and_span_more_than_a_day() {
        for _ in 0..50 {
            let first = backoff(1);
            assert!(first <= Duration::from_secs(5) && first >= Duration::from_secs(4), "{first:?}");
        }
        assert!(backoff(2) > backoff(1) * 4);
        assert!(backoff(100) <= Duration::from_secs(8 * 3600));
        let mut waited = Duration::ZERO;
        let mut attempts = 0;
        while waited < RETRY_FOR {
            attempts += 1;
            waited += backoff(attempts);
        }
        assert!((10..=16).contains(&attempts), "a day is {attempts} attempts");
    }
}

//! Rules both adapters share, so that they agree to the byte: timestamp keys, TTL expiry,
//! FIFO message groups, and the SQS limits the embedded queue copies.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// SQS returns at most 10 messages per receive; the embedded queue does the same.
pub(crate) const MAX_BATCH: usize = 10;

/// SQS's longest visibility timeout (12 hours).
pub(crate) const MAX_VISIBILITY_S: u64 = 43_200;

/// Fixed-width UTC timestamp (nanoseconds) whose byte order is its time order.
pub(crate) fn sortable_ts(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

/// TTL rule of both adapters: an item is gone from the millisecond its `expires_at` names.
pub(crate) fn is_expired(expires_at: &DateTime<Utc>, now: &DateTime<Utc>) -> bool {
    expires_at.timestamp_millis() <= now.timestamp_millis()
}

/// Visibility timeouts are whole seconds on SQS: round up, and cap at SQS's maximum.
pub(crate) fn visibility_secs(d: Duration) -> u64 {
    let whole = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    whole.min(MAX_VISIBILITY_S)
}

/// Clamp a requested batch size to what SQS allows.
pub(crate) fn batch_size(max: usize) -> usize {
    max.min(MAX_BATCH)
}

/// Make `s` a valid SQS FIFO id (`MessageGroupId` / `MessageDeduplicationId`: 1–128 printable
/// ASCII characters). Valid ids are kept; anything else becomes a SHA-256 hex digest of it.
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
pub(crate) fn fifo_id(s: &str) -> Cow<'_, str> {
    let valid = !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(hex::encode(Sha256::digest(s.as_bytes())))
    }
}

#[derive(serde::Deserialize)]
struct GroupKeys<'a> {
    #[serde(borrow, default)]
    tenant: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    call_id: Option<Cow<'a, str>>,
}

/// FIFO message group of a queued body.
///
/// Messages about one call (a JSON object with string `tenant` and `call_id`, as
/// `CallEventEnvelope` is) share a group, so they are delivered in order and one at a time;
/// different calls are processed in parallel. Any other body gets a group of its own (its
/// dedupe id, or a fresh id), which imposes no ordering.
pub(crate) fn message_group(body: &str, dedupe_id: Option<&str>) -> String {
    if let Ok(GroupKeys {
        tenant: Some(tenant),
        call_id: Some(call_id),
    }) = serde_json::from_str::<GroupKeys<'_>>(body)
    {
        let mut h = Sha256::new();
        h.update(tenant.as_bytes());
        h.update([0]);
        h.update(call_id.as_bytes());
        return format!("call-{}", hex::encode(&h.finalize()[..16]));
    }
    match dedupe_id {
        Some(id) => format!("msg-{}", hex::encode(&Sha256::digest(id.as_bytes())[..16])),
        None => format!("msg-{}", uuid::Uuid::new_v4().simple()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sortable_ts_orders_like_time() {
        let a = DateTime::from_timestamp(1_700_000_000, 5).unwrap_or_default();
        let b = DateTime::from_timestamp(1_700_000_000, 40).unwrap_or_default();
        let c = DateTime::from_timestamp(1_700_000_001, 0).unwrap_or_default();
        assert!(sortable_ts(&a) < sortable_ts(&b));
        assert!(sortable_ts(&b) < sortable_ts(&c));
        assert_eq!(sortable_ts(&c), "2023-11-14T22:13:21.000000000Z");
    }

    #[test]
    fn visibility_rounds_up_and_caps() {
        assert_eq!(visibility_secs(Duration::ZERO), 0);
        assert_eq!(visibility_secs(Duration::from_millis(1)), 1);
        assert_eq!(visibility_secs(Duration::from_secs(2)), 2);
        assert_eq!(visibility_secs(Duration::from_millis(2001)), 3);
        assert_eq!(
            visibility_secs(Duration::from_secs(u64::MAX)),
            MAX_VISIBILITY_S
        );
    }

    #[test]
    fn expiry_is_inclusive_at_the_millisecond() {
        let t = DateTime::from_timestamp(100, 0).unwrap_or_default();
        assert!(is_expired(&t, &t));
        assert!(!is_expired(&t, &(t - chrono::Duration::milliseconds(1))));
    }

    #[test]
    fn groups_follow_the_call() {
        let a = message_group(r#"{"v":1,"tenant":"t","call_id":"c","x":[1,2]}"#, None);
        let b = message_group(r#"{"call_id":"c","tenant":"t"}"#, Some("zzz"));
        let c = message_group(r#"{"call_id":"d","tenant":"t"}"#, None);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // tenant/call_id boundaries are unambiguous
        let d = message_group(r#"{"tenant":"t\u0000c","call_id":""}"#, None);
        assert_ne!(a, d);
        // other bodies: by dedupe id, else unique
        assert_eq!(
            message_group("plain", Some("x")),
            message_group("other", Some("x"))
        );
        assert_ne!(message_group("plain", None), message_group("plain", None));
        assert!(fifo_id(&a).len() <= 128);
    }

    #[test]
    fn fifo_ids_are_valid() {
        assert_eq!(fifo_id("abc-1:2"), "abc-1:2");
        assert_eq!(fifo_id("").len(), 64);
        assert_eq!(fifo_id("has space").len(), 64);
        assert_eq!(fifo_id(&"x".repeat(129)).len(), 64);
        assert_eq!(fifo_id("é").len(), 64);
    }

    proptest! {
        #[test]
        fn message_group_never_panics_and_is_a_valid_fifo_id(body in ".*", id in proptest::option::of(".*")) {
            let g = message_group(&body, id.as_deref());
            prop_assert_eq!(fifo_id(&g), g.as_str());
        }

        #[test]
        fn fifo_id_is_always_valid(s in ".*") {
            let id = fifo_id(&s);
            prop_assert!(!id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()));
        }
    }
}

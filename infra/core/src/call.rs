//! The call state machine.
//!
//! Providers retry webhooks and deliver them out of order (Twilio says so and sends
//! `SequenceNumber`; Exotel retries; Telnyx makes no ordering promise). So `apply` is:
//! - **monotonic**: a status only moves forward (`initiated → ringing → in_progress → terminal`);
//!   a late `ringing` never overwrites `completed`, and the first terminal status wins;
//! - **idempotent**: applying the same event twice changes nothing the second time;
//! - **order-independent for status**: any delivery order of a call's events ends in the same status.
//!
//! Details (duration, price, recording …) are merged: a field the call lacks is filled from any
//! event, and a field it has is replaced only by an event that ranks at least as high (later
//! status, then higher sequence, then later timestamp).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vaani_events::{CallEvent, CallStatus, Direction};

/// What the store keeps about a call's lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallState {
    pub status: CallStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billed_duration_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
    /// Rank key of the event the details were last taken from (see module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail_key: Option<EventRank>,
    /// Number of status transitions applied (not counting ignored or detail-only events).
    #[serde(default)]
    pub transitions: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
}

/// Ordering key of an event: status stage, then provider sequence, then timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EventRank {
    pub stage: u8,
    pub sequence: u64,
    pub at_ms: i64,
}

impl CallState {
    pub fn new(status: CallStatus) -> Self {
        CallState {
            status,
            direction: None,
            from: None,
            to: None,
            duration_s: None,
            billed_duration_s: None,
            price: None,
            currency: None,
            recording_url: None,
            answered_by: None,
            detail_key: None,
            transitions: 0,
            answered_at: None,
            ended_at: None,
        }
    }
}

impl Default for CallState {
    fn default() -> Self {
        CallState::new(CallStatus::Initiated)
    }
}

/// Stage of a status: later stages win. All terminal statuses share the last stage.
pub fn stage(status: CallStatus) -> u8 {
    match status {
        CallStatus::Initiated => 0,
        CallStatus::Ringing => 1,
        CallStatus::InProgress => 2,
        _ => 3,
    }
}

fn rank(ev: &CallEvent, fallback_stage: u8) -> EventRank {
    EventRank {
        stage: ev.status.map(stage).unwrap_or(fallback_stage),
        sequence: ev.sequence.unwrap_or(0),
        at_ms: ev.occurred_at.map(|t| t.timestamp_millis()).unwrap_or(0),
    }
}

/// Outcome of applying one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The status changed.
    Status { from: CallStatus, to: CallStatus },
    /// The status stayed; some details were added or updated.
    Details,
    /// Nothing changed (duplicate, or stale and carrying nothing new).
    Unchanged,
}

/// Apply `ev` to `state`, returning the new state and what changed. Pure.
pub fn apply(state: &CallState, ev: &CallEvent) -> (CallState, Transition) {
    let mut next = state.clone();
    let mut transition = Transition::Unchanged;

    if let Some(to) = ev.status {
        let from = state.status;
        let advances = stage(to) > stage(from);
        if advances {
            next.status = to;
            next.transitions = next.transitions.saturating_add(1);
            transition = Transition::Status { from, to };
        }
        if stage(to) >= 2 && next.answered_at.is_none() && to == CallStatus::InProgress {
            next.answered_at = ev.occurred_at;
        }
        if to.is_terminal() && next.ended_at.is_none() && next.status == to {
            next.ended_at = ev.occurred_at;
        }
    }

    let key = rank(ev, stage(state.status));
    let overwrite = next.detail_key.is_none_or(|k| key >= k);
    let price = ev.price.map(|p| p.normalize().to_string());
    let mut changed = false;
    merge(&mut next.direction, ev.direction, overwrite, &mut changed);
    merge(&mut next.from, ev.from.clone(), overwrite, &mut changed);
    merge(&mut next.to, ev.to.clone(), overwrite, &mut changed);
    merge(&mut next.duration_s, ev.duration_s, overwrite, &mut changed);
    merge(
        &mut next.billed_duration_s,
        ev.billed_duration_s,
        overwrite,
        &mut changed,
    );
    merge(&mut next.price, price, overwrite, &mut changed);
    merge(
        &mut next.currency,
        ev.currency.clone(),
        overwrite,
        &mut changed,
    );
    merge(
        &mut next.recording_url,
        ev.recording_url.clone(),
        overwrite,
        &mut changed,
    );
    merge(
        &mut next.answered_by,
        ev.answered_by.clone(),
        overwrite,
        &mut changed,
    );
    if overwrite && next.detail_key != Some(key) {
        next.detail_key = Some(key);
    }
    if changed && transition == Transition::Unchanged {
        transition = Transition::Details;
    }
    (next, transition)
}

fn merge<T: PartialEq>(
    slot: &mut Option<T>,
    value: Option<T>,
    overwrite: bool,
    changed: &mut bool,
) {
    let Some(v) = value else { return };
    if slot.is_none() || (overwrite && slot.as_ref() != Some(&v)) {
        *slot = Some(v);
        *changed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vaani_events::Provider;

    fn ev(status: CallStatus, seq: u64) -> CallEvent {
        let mut e = CallEvent::new(Provider::Twilio, "CA1");
        e.status = Some(status);
        e.sequence = Some(seq);
        e
    }

    #[test]
    fn late_ringing_never_overwrites_completed() {
        let s = CallState::default();
        let (s, t) = apply(&s, &ev(CallStatus::Completed, 3));
        assert_eq!(
            t,
            Transition::Status {
                from: CallStatus::Initiated,
                to: CallStatus::Completed
            }
        );
        let (s, t) = apply(&s, &ev(CallStatus::Ringing, 1));
        assert_eq!(s.status, CallStatus::Completed);
        assert_eq!(t, Transition::Unchanged);
    }

    #[test]
    fn first_terminal_wins() {
        let (s, _) = apply(&CallState::default(), &ev(CallStatus::Busy, 2));
        let (s, t) = apply(&s, &ev(CallStatus::Completed, 3));
        assert_eq!(s.status, CallStatus::Busy);
        assert_eq!(t, Transition::Unchanged);
    }

    #[test]
    fn stale_event_fills_missing_details_only() {
        let mut done = ev(CallStatus::Completed, 4);
        done.duration_s = Some(42);
        let (s, _) = apply(&CallState::default(), &done);
        let mut early = ev(CallStatus::Ringing, 1);
        early.duration_s = Some(0);
        early.from = Some("+919876543210".into());
        let (s, t) = apply(&s, &early);
        assert_eq!(s.duration_s, Some(42));
        assert_eq!(s.from.as_deref(), Some("+919876543210"));
        assert_eq!(t, Transition::Details);
    }

    fn status_strategy() -> impl Strategy<Value = CallStatus> {
        prop::sample::select(CallStatus::ALL.to_vec())
    }

    /// A plausible lifecycle: some of initiated/ringing/in_progress then one terminal status.
    fn lifecycle() -> impl Strategy<Value = Vec<CallEvent>> {
        (
            prop::collection::vec(0u8..3, 0..4),
            status_strategy().prop_filter("terminal", |s| s.is_terminal()),
            prop::option::of(0u64..600),
        )
            .prop_map(|(pre, terminal, dur)| {
                let mut pre = pre;
                pre.sort();
                let mut out: Vec<CallEvent> = pre
                    .into_iter()
                    .enumerate()
                    .map(|(i, st)| {
                        let s = [
                            CallStatus::Initiated,
                            CallStatus::Ringing,
                            CallStatus::InProgress,
                        ][st as usize];
                        ev(s, i as u64 + 1)
                    })
                    .collect();
                let mut t = ev(terminal, out.len() as u64 + 1);
                t.duration_s = dur;
                out.push(t);
                out
            })
    }

    fn run(events: &[CallEvent]) -> CallState {
        events
            .iter()
            .fold(CallState::default(), |s, e| apply(&s, e).0)
    }

    proptest! {
        #[test]
        fn any_order_with_duplicates_ends_in_the_same_state(
            events in lifecycle(),
            shuffle_seed in any::<u64>(),
            dups in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let in_order = run(&events);
            let mut delivered = events.clone();
            for d in &dups {
                let e = d.get(&events).clone();
                delivered.push(e);
            }
            // Deterministic Fisher-Yates from the seed.
            let mut x = shuffle_seed | 1;
            for i in (1..delivered.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                delivered.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let shuffled = run(&delivered);
            prop_assert_eq!(shuffled.status, in_order.status);
            prop_assert_eq!(shuffled.duration_s, in_order.duration_s);
            prop_assert!(shuffled.status.is_terminal());
        }

        #[test]
        fn apply_is_idempotent(events in lifecycle(), i in any::<prop::sample::Index>()) {
            let s = run(&events);
            let e = i.get(&events);
            let (once, _) = apply(&s, e);
            let (twice, t) = apply(&once, e);
            prop_assert_eq!(&once, &twice);
            prop_assert_eq!(t, Transition::Unchanged);
        }

        #[test]
        fn status_never_moves_backwards(statuses in prop::collection::vec(status_strategy(), 1..12)) {
            let mut s = CallState::default();
            for (i, st) in statuses.iter().enumerate() {
                let before = stage(s.status);
                let (n, _) = apply(&s, &ev(*st, i as u64));
                prop_assert!(stage(n.status) >= before);
                if s.status.is_terminal() { prop_assert_eq!(n.status, s.status); }
                s = n;
            }
        }
    }
}

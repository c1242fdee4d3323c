//! Media-node choice for a new call: a live (recent heartbeat), non-draining node with the
//! most free capacity; ties go to the lexically smallest id so the choice is deterministic.

use chrono::{DateTime, Duration, Utc};

/// What node selection needs to know about a registry entry.
pub trait NodeLoad {
    fn id(&self) -> &str;
    fn capacity(&self) -> u32;
    fn active_calls(&self) -> u32;
    fn draining(&self) -> bool;
    fn last_heartbeat(&self) -> DateTime<Utc>;
}

/// A heartbeat older than this means the node is gone (it beats every few seconds).
pub const DEFAULT_MAX_HEARTBEAT_AGE: Duration = Duration::seconds(30);

/// Pick the node for a new call, or `None` when no node can take one.
pub fn pick<N: NodeLoad>(nodes: &[N], now: DateTime<Utc>, max_age: Duration) -> Option<&N> {
    nodes
        .iter()
        .filter(|n| !n.draining())
        .filter(|n| now - n.last_heartbeat() <= max_age)
        .filter(|n| n.active_calls() < n.capacity())
        .max_by(|a, b| {
            let fa = a.capacity() - a.active_calls();
            let fb = b.capacity() - b.active_calls();
            fa.cmp(&fb).then_with(|| b.id().cmp(a.id()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct N(&'static str, u32, u32, bool, i64);
    impl NodeLoad for N {
        fn id(&self) -> &str {
            self.0
        }
        fn capacity(&self) -> u32 {
            self.1
        }
        fn active_calls(&self) -> u32 {
            self.2
        }
        fn draining(&self) -> bool {
            self.3
        }
        fn last_heartbeat(&self) -> DateTime<Utc> {
            DateTime::from_timestamp(self.4, 0).unwrap_or_default()
        }
    }

    #[test]
    fn picks_most_free_live_undrained() {
        let now = DateTime::from_timestamp(1000, 0).unwrap_or_default();
        let nodes = [
            N("a", 100, 90, false, 995),
            N("b", 100, 10, true, 995),  // draining
            N("c", 100, 20, false, 900), // stale
            N("d", 50, 30, false, 999),
            N("e", 100, 100, false, 999), // full
        ];
        assert_eq!(
            pick(&nodes, now, DEFAULT_MAX_HEARTBEAT_AGE).map(|n| n.id()),
            Some("d")
        );
        assert!(pick(&nodes[1..3], now, DEFAULT_MAX_HEARTBEAT_AGE).is_none());
    }

    #[test]
    fn ties_break_by_id() {
        let now = DateTime::from_timestamp(1000, 0).unwrap_or_default();
        let nodes = [N("z", 10, 0, false, 1000), N("m", 10, 0, false, 1000)];
        assert_eq!(
            pick(&nodes, now, DEFAULT_MAX_HEARTBEAT_AGE).map(|n| n.id()),
            Some("m")
        );
    }
}

//! A small reorder window for media frames that may arrive out of order (Telnyx: "Media frame
//! order is not guaranteed. Use media.chunk, media.timestamp, and sequence_number to order
//! frames").
//!
//! Frames are keyed by the provider's counter and released in key order. A missing frame is
//! waited for while at most `window` later frames are held (20 ms each, so the default of 5
//! adds at most 100 ms while a frame is missing and nothing when frames arrive in order); then
//! the gap is skipped. Frames older than the last one released, and duplicates, are dropped
//! and counted.

use std::collections::BTreeMap;

use super::Media;

/// The first counter value providers use (Twilio and Telnyx count chunks from 1).
const FIRST_KEY: u64 = 1;

#[derive(Debug)]
pub(crate) struct Reorder {
    window: usize,
    next: Option<u64>,
    released_any: bool,
    pending: BTreeMap<u64, Media>,
    /// Late or duplicate frames dropped.
    pub(crate) dropped: u64,
    /// Keys skipped because a frame never arrived within the window.
    pub(crate) skipped: u64,
}

impl Reorder {
    pub(crate) fn new(window: usize) -> Self {
        Reorder {
            window,
            next: None,
            released_any: false,
            pending: BTreeMap::new(),
            dropped: 0,
            skipped: 0,
        }
    }

    /// Add a frame with counter `key`; push the frames now in order onto `out`.
    pub(crate) fn push(&mut self, key: Option<u64>, media: Media, out: &mut Vec<Media>) {
        let Some(key) = key else {
            out.push(media);
            return;
        };
        if !self.released_any {
            // Until something is released, an earlier first frame may still come.
            self.next = Some(self.next.unwrap_or(FIRST_KEY).min(key));
        }
        let next = self.next.unwrap_or(key);
        if key < next || self.pending.contains_key(&key) {
            self.dropped += 1;
            return;
        }
        self.pending.insert(key, media);
        self.release_contiguous(out);
        while self.pending.len() > self.window {
            let Some((k, m)) = self.pending.pop_first() else {
                break;
            };
            let expected = self.next.unwrap_or(k);
            self.skipped += k.saturating_sub(expected);
            out.push(m);
            self.released_any = true;
            self.next = Some(k.saturating_add(1));
            self.release_contiguous(out);
        }
    }

    /// Release everything held, in order (end of stream).
    pub(crate) fn flush(&mut self, out: &mut Vec<Media>) {
        while let Some((k, m)) = self.pending.pop_first() {
            out.push(m);
            self.released_any = true;
            self.next = Some(k.saturating_add(1));
        }
    }

    fn release_contiguous(&mut self, out: &mut Vec<Media>) {
        while let Some(next) = self.next {
            match self.pending.remove(&next) {
                Some(m) => {
                    out.push(m);
                    self.released_any = true;
                    self.next = Some(next.saturating_add(1));
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(k: u64) -> Media {
        Media {
            payload: vec![k as u8],
            timestamp_ms: None,
            chunk: Some(k),
            sequence: None,
        }
    }

    fn run(keys: &[u64], window: usize) -> (Vec<u64>, Reorder) {
        let mut r = Reorder::new(window);
        let mut out = Vec::new();
        for &k in keys {
            r.push(Some(k), m(k), &mut out);
        }
        r.flush(&mut out);
        (out.iter().filter_map(|m| m.chunk).collect(), r)
    }

    #[test]
    fn in_order_frames_pass_straight_through() {
        let mut r = Reorder::new(3);
        let mut out = Vec::new();
        for k in 1..=4 {
            r.push(Some(k), m(k), &mut out);
            assert_eq!(out.len() as u64, k);
        }
    }

    #[test]
    fn swapped_frames_are_put_back_in_order() {
        let (order, r) = run(&[2, 1, 3, 5, 4, 6], 4);
        assert_eq!(order, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!((r.dropped, r.skipped), (0, 0));
    }

    #[test]
    fn a_lost_frame_is_skipped_once_the_window_fills() {
        let mut r = Reorder::new(2);
        let mut out = Vec::new();
        for k in [1, 3, 4] {
            r.push(Some(k), m(k), &mut out);
        }
        assert_eq!(out.len(), 1, "3 and 4 wait for 2");
        r.push(Some(5), m(5), &mut out);
        let order: Vec<u64> = out.iter().filter_map(|m| m.chunk).collect();
        assert_eq!(order, vec![1, 3, 4, 5]);
        assert_eq!(r.skipped, 1);
        // 2 arrives too late.
        r.push(Some(2), m(2), &mut out);
        assert_eq!(r.dropped, 1);
    }

    #[test]
    fn duplicates_are_dropped() {
        let (order, r) = run(&[1, 2, 2, 3, 1], 4);
        assert_eq!(order, vec![1, 2, 3]);
        assert_eq!(r.dropped, 2);
    }

    #[test]
    fn frames_without_a_counter_pass_through() {
        let mut r = Reorder::new(2);
        let mut out = Vec::new();
        r.push(None, m(9), &mut out);
        assert_eq!(out.len(), 1);
    }
}

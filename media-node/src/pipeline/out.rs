//! The agent's audio on its way to the caller: 20 ms frames queued by the pipeline and taken
//! one per tick by the call's media driver (so the driver's own queue stays one frame deep
//! and a barge-in stops the agent within a frame). Each frame belongs to a segment (one
//! synthesised chunk of text), so after a barge-in the pipeline knows how much of each
//! chunk the caller actually heard.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::codec::FRAME_SAMPLES;

/// One thing the media driver takes from the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// 20 ms of agent audio (16 kHz).
    Audio(Vec<i16>),
    /// Drop whatever the transport still buffers (barge-in).
    Clear,
    /// End the call after the audio before it has played.
    Hangup(String),
    /// Transfer the caller to this target after the audio before it has played.
    Transfer(String),
}

/// What the media side reports back to the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Played {
    /// The first frame of a reply went out.
    ReplyStarted { reply: u32, at: Instant },
    /// Every queued frame has gone out.
    Drained { at: Instant },
}

enum Item {
    Frame {
        pcm: Vec<i16>,
        reply: u32,
        segment: u64,
    },
    Hangup(String),
    Transfer(String),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SegmentCount {
    pub queued: u32,
    pub played: u32,
}

struct Inner {
    items: VecDeque<Item>,
    clear: bool,
    segments: HashMap<u64, SegmentCount>,
    /// Replies whose first frame has gone out.
    started: Option<u32>,
    /// Whether the last take found audio (to report `Drained` once).
    was_playing: bool,
}

/// The queue shared by a call's pipeline and media driver.
pub struct OutQueue {
    inner: Mutex<Inner>,
    played: mpsc::UnboundedSender<Played>,
}

impl OutQueue {
    pub fn new(played: mpsc::UnboundedSender<Played>) -> Self {
        OutQueue {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                clear: false,
                segments: HashMap::new(),
                started: None,
                was_playing: false,
            }),
            played,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Queue audio of `segment` (any length; cut into frames, the last padded with silence
    /// only when `last` says the segment is complete). Returns samples kept back (less than a
    /// frame) for the next call.
    pub fn push_audio(&self, reply: u32, segment: u64, pcm: &[i16], last: bool) -> Vec<i16> {
        let mut chunks = pcm.chunks_exact(FRAME_SAMPLES);
        let frames: Vec<Vec<i16>> = chunks.by_ref().map(<[i16]>::to_vec).collect();
        let mut rest = chunks.remainder().to_vec();
        let mut frames = frames;
        if last && !rest.is_empty() {
            rest.resize(FRAME_SAMPLES, 0);
            frames.push(std::mem::take(&mut rest));
        }
        self.with(|q| {
            let n = u32::try_from(frames.len()).unwrap_or(u32::MAX);
            q.segments.entry(segment).or_default().queued += n;
            for pcm in frames {
                q.items.push_back(Item::Frame {
                    pcm,
                    reply,
                    segment,
                });
            }
        });
        rest
    }

    pub fn push_hangup(&self, reason: String) {
        self.with(|q| q.items.push_back(Item::Hangup(reason)));
    }

    pub fn push_transfer(&self, target: String) {
        self.with(|q| q.items.push_back(Item::Transfer(target)));
    }

    /// Drop everything queued (barge-in); the driver is told to clear its transport too.
    /// Returns how much of each segment was queued and played.
    pub fn clear(&self) -> HashMap<u64, SegmentCount> {
        self.with(|q| {
            q.items.clear();
            q.clear = true;
            q.was_playing = false;
            std::mem::take(&mut q.segments)
        })
    }

    /// Counts of one segment so far.
    pub fn segment(&self, segment: u64) -> SegmentCount {
        self.with(|q| q.segments.get(&segment).copied().unwrap_or_default())
    }

    /// Forget the counts of finished segments.
    pub fn forget(&self, segment: u64) {
        self.with(|q| {
            q.segments.remove(&segment);
        });
    }

    /// Whether agent audio is waiting to play.
    pub fn is_playing(&self) -> bool {
        self.with(|q| q.items.iter().any(|i| matches!(i, Item::Frame { .. })))
    }

    /// The media driver's tick: what to send now (a pending clear first, then at most one
    /// frame, or a control once the audio before it has gone out).
    pub fn take(&self, now: Instant) -> Option<Outgoing> {
        let (out, report) = self.with(|q| {
            if std::mem::take(&mut q.clear) {
                return (Some(Outgoing::Clear), None);
            }
            match q.items.pop_front() {
                Some(Item::Frame {
                    pcm,
                    reply,
                    segment,
                }) => {
                    if let Some(c) = q.segments.get_mut(&segment) {
                        c.played += 1;
                    }
                    q.was_playing = true;
                    let report = (q.started != Some(reply)).then(|| {
                        q.started = Some(reply);
                        Played::ReplyStarted { reply, at: now }
                    });
                    (Some(Outgoing::Audio(pcm)), report)
                }
                Some(Item::Hangup(r)) => (Some(Outgoing::Hangup(r)), None),
                Some(Item::Transfer(t)) => (Some(Outgoing::Transfer(t)), None),
                None if std::mem::take(&mut q.was_playing) => {
                    (None, Some(Played::Drained { at: now }))
                }
                None => (None, None),
            }
        });
        if let Some(r) = report {
            // The pipeline may be gone (call ending): nothing to tell.
            let _ = self.played.send(r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_play_in_order_and_are_counted() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let q = OutQueue::new(tx);
        let t = Instant::now();
        let rest = q.push_audio(1, 7, &vec![1i16; FRAME_SAMPLES * 2 + 10], false);
        assert_eq!(rest.len(), 10);
        q.push_audio(1, 7, &rest, true);
        q.push_hangup("done".into());
        assert!(q.is_playing());
        assert!(matches!(q.take(t), Some(Outgoing::Audio(_))));
        assert_eq!(
            rx.try_recv().unwrap(),
            Played::ReplyStarted { reply: 1, at: t }
        );
        assert!(matches!(q.take(t), Some(Outgoing::Audio(_))));
        assert_eq!(
            q.segment(7),
            SegmentCount {
                queued: 3,
                played: 2
            }
        );
        let Some(Outgoing::Audio(last)) = q.take(t) else {
            panic!()
        };
        assert_eq!(&last[..10], &[1; 10]);
        assert_eq!(&last[10..], &[0; FRAME_SAMPLES - 10]);
        assert_eq!(q.take(t), Some(Outgoing::Hangup("done".into())));
        assert_eq!(q.take(t), None);
        assert_eq!(rx.try_recv().unwrap(), Played::Drained { at: t });
        assert_eq!(q.take(t), None);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn clear_drops_the_rest_and_reports_what_played() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let q = OutQueue::new(tx);
        let t = Instant::now();
        q.push_audio(1, 1, &vec![0i16; FRAME_SAMPLES * 5], true);
        q.take(t);
        q.take(t);
        let counts = q.clear();
        assert_eq!(
            counts[&1],
            SegmentCount {
                queued: 5,
                played: 2
            }
        );
        assert_eq!(q.take(t), Some(Outgoing::Clear));
        assert_eq!(q.take(t), None);
        assert!(!q.is_playing());
    }
}

//! Turn taking, pure and in virtual time: from per-frame voice activity (and, when the STT
//! gives them, interim word counts) it decides when the caller started and finished a turn,
//! and whether speech while the agent talks is an interruption (barge-in) or a backchannel
//! ("mhm", a cough) to ignore.
//!
//! - Speech starts after [`START_FRAMES`] consecutive voiced frames (clicks don't count).
//! - A turn ends after `end_of_turn_silence_ms` without voice.
//! - While the agent is audible, caller speech interrupts only once it has lasted
//!   `min_interruption_ms` **and** (if the STT reports words) has at least
//!   `min_interruption_words` words that are not backchannels. Speech that ends before that
//!   is a backchannel: no interruption, no turn.

use crate::agent::TurnSettings;

/// Voiced frames in a row that start speech.
pub const START_FRAMES: u32 = 3;
/// Frame length.
pub const FRAME_MS: u64 = 20;

/// Words that acknowledge without taking the turn.
pub const BACKCHANNELS: &[&str] = &[
    "mhm", "mm", "hmm", "uh", "huh", "um", "uhhuh", "okay", "ok", "yeah", "yes", "right", "sure",
    "ah", "oh", "achha", "haan", "ji",
];

/// What the detector decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEvent {
    /// The caller started speaking (at ms).
    SpeechStarted { at: u64 },
    /// The caller's speech while the agent talks is an interruption: stop the agent.
    Interrupt { at: u64 },
    /// The caller finished a turn: `speech_end` is the end of their last voiced frame.
    EndOfTurn { speech_start: u64, speech_end: u64 },
    /// Speech during the agent's audio ended without interrupting (ignore what was heard).
    Backchannel { speech_start: u64, speech_end: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Silent {
        voiced_run: u32,
        run_start: u64,
    },
    Speaking {
        start: u64,
        last_voice_end: u64,
        /// Began while the agent was audible and has not interrupted (yet).
        over_agent: bool,
    },
}

/// The turn detector of one call.
#[derive(Debug, Clone)]
pub struct TurnDetector {
    settings: TurnSettings,
    state: State,
    /// Non-backchannel words in the current speech, from the STT's interims (`None`: the STT
    /// has not said anything for this speech).
    words: Option<u32>,
}

/// Content words of an interim transcript (backchannels don't count).
pub fn content_words(text: &str) -> u32 {
    let n = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .filter(|w| !BACKCHANNELS.contains(&w.to_lowercase().as_str()))
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl TurnDetector {
    pub fn new(settings: TurnSettings) -> Self {
        TurnDetector {
            settings,
            state: State::Silent {
                voiced_run: 0,
                run_start: 0,
            },
            words: None,
        }
    }

    pub fn settings(&self) -> &TurnSettings {
        &self.settings
    }

    /// Whether the caller is speaking now.
    pub fn caller_speaking(&self) -> bool {
        matches!(self.state, State::Speaking { .. })
    }

    /// The STT's latest interim for the current speech.
    pub fn on_interim(&mut self, text: &str) {
        if self.caller_speaking() {
            self.words = Some(content_words(text));
        }
    }

    /// One 20 ms frame starting at `now` ms: voiced or not, and whether agent audio is
    /// playing to the caller during it.
    pub fn on_frame(&mut self, now: u64, voiced: bool, agent_audible: bool) -> Option<TurnEvent> {
        let frame_end = now + FRAME_MS;
        match self.state {
            State::Silent {
                voiced_run,
                run_start,
            } => {
                if !voiced {
                    self.state = State::Silent {
                        voiced_run: 0,
                        run_start: 0,
                    };
                    return None;
                }
                let run_start = if voiced_run == 0 { now } else { run_start };
                let voiced_run = voiced_run + 1;
                if voiced_run < START_FRAMES {
                    self.state = State::Silent {
                        voiced_run,
                        run_start,
                    };
                    return None;
                }
                self.words = None;
                self.state = State::Speaking {
                    start: run_start,
                    last_voice_end: frame_end,
                    over_agent: agent_audible,
                };
                // With no minimum at all, speech over the agent interrupts at once.
                if agent_audible && self.interrupts(frame_end - run_start) {
                    self.state = State::Speaking {
                        start: run_start,
                        last_voice_end: frame_end,
                        over_agent: false,
                    };
                    return Some(TurnEvent::Interrupt { at: frame_end });
                }
                Some(TurnEvent::SpeechStarted { at: run_start })
            }
            State::Speaking {
                start,
                last_voice_end,
                over_agent,
            } => {
                let last_voice_end = if voiced { frame_end } else { last_voice_end };
                if over_agent && voiced && self.interrupts(frame_end - start) {
                    self.state = State::Speaking {
                        start,
                        last_voice_end,
                        over_agent: false,
                    };
                    return Some(TurnEvent::Interrupt { at: frame_end });
                }
                let silence = frame_end.saturating_sub(last_voice_end);
                if silence >= u64::from(self.settings.end_of_turn_silence_ms) {
                    self.state = State::Silent {
                        voiced_run: 0,
                        run_start: 0,
                    };
                    self.words = None;
                    return Some(if over_agent {
                        TurnEvent::Backchannel {
                            speech_start: start,
                            speech_end: last_voice_end,
                        }
                    } else {
                        TurnEvent::EndOfTurn {
                            speech_start: start,
                            speech_end: last_voice_end,
                        }
                    });
                }
                self.state = State::Speaking {
                    start,
                    last_voice_end,
                    over_agent,
                };
                None
            }
        }
    }

    fn interrupts(&self, speech_ms: u64) -> bool {
        speech_ms >= u64::from(self.settings.min_interruption_ms)
            && self
                .words
                .is_none_or(|w| w >= self.settings.min_interruption_words)
    }

    /// The agent started talking over speech that was a turn: treat the rest of it as
    /// speech over the agent (used when the agent speaks first, e.g. the greeting).
    pub fn agent_started(&mut self) {
        if let State::Speaking {
            start,
            last_voice_end,
            ..
        } = self.state
        {
            self.state = State::Speaking {
                start,
                last_voice_end,
                over_agent: true,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TurnSettings {
        TurnSettings {
            end_of_turn_silence_ms: 600,
            min_interruption_ms: 400,
            min_interruption_words: 2,
        }
    }

    /// Feed `ms` of frames; returns the events with their frame times.
    fn run(
        d: &mut TurnDetector,
        t: &mut u64,
        ms: u64,
        voiced: bool,
        agent: bool,
    ) -> Vec<TurnEvent> {
        let mut out = Vec::new();
        for _ in 0..ms / FRAME_MS {
            out.extend(d.on_frame(*t, voiced, agent));
            *t += FRAME_MS;
        }
        out
    }

    #[test]
    fn a_turn_ends_after_the_silence_threshold() {
        let mut d = TurnDetector::new(settings());
        let mut t = 0;
        assert!(run(&mut d, &mut t, 200, false, false).is_empty());
        let ev = run(&mut d, &mut t, 1000, true, false);
        assert_eq!(ev, vec![TurnEvent::SpeechStarted { at: 200 }]);
        // A short pause inside the turn does not end it.
        assert!(run(&mut d, &mut t, 400, false, false).is_empty());
        assert!(run(&mut d, &mut t, 200, true, false).is_empty());
        let ev = run(&mut d, &mut t, 600, false, false);
        assert_eq!(
            ev,
            vec![TurnEvent::EndOfTurn {
                speech_start: 200,
                speech_end: 1800
            }]
        );
        // Exactly 600 ms after the last voiced frame.
        assert_eq!(t, 2400);
    }

    #[test]
    fn clicks_are_not_speech() {
        let mut d = TurnDetector::new(settings());
        let mut t = 0;
        for _ in 0..20 {
            assert!(run(&mut d, &mut t, 40, true, false).is_empty());
            assert!(run(&mut d, &mut t, 40, false, false).is_empty());
        }
    }

    #[test]
    fn backchannels_do_not_interrupt() {
        let mut d = TurnDetector::new(settings());
        let mut t = 0;
        // "mhm" for 300 ms while the agent talks.
        let ev = run(&mut d, &mut t, 300, true, true);
        assert_eq!(ev, vec![TurnEvent::SpeechStarted { at: 0 }]);
        let ev = run(&mut d, &mut t, 700, false, true);
        assert_eq!(
            ev,
            vec![TurnEvent::Backchannel {
                speech_start: 0,
                speech_end: 300
            }]
        );
        // Long enough, but the STT heard only backchannel words.
        let mut t = 2000;
        run(&mut d, &mut t, 100, true, true);
        d.on_interim("okay yeah");
        let ev = run(&mut d, &mut t, 600, true, true);
        assert!(ev.is_empty(), "{ev:?}");
        let ev = run(&mut d, &mut t, 600, false, true);
        assert!(matches!(ev[..], [TurnEvent::Backchannel { .. }]), "{ev:?}");
    }

    #[test]
    fn real_speech_interrupts_then_ends_a_turn() {
        let mut d = TurnDetector::new(settings());
        let mut t = 0;
        run(&mut d, &mut t, 200, true, true);
        d.on_interim("wait I need");
        let ev = run(&mut d, &mut t, 400, true, true);
        assert_eq!(ev, vec![TurnEvent::Interrupt { at: 400 }]);
        // The agent went quiet; the caller finishes.
        let ev = run(&mut d, &mut t, 400, true, false);
        assert!(ev.is_empty());
        let ev = run(&mut d, &mut t, 600, false, false);
        assert_eq!(
            ev,
            vec![TurnEvent::EndOfTurn {
                speech_start: 0,
                speech_end: 1000
            }]
        );
    }

    #[test]
    fn without_interims_duration_alone_decides() {
        let mut d = TurnDetector::new(settings());
        let mut t = 0;
        let ev = run(&mut d, &mut t, 500, true, true);
        assert_eq!(
            ev,
            vec![
                TurnEvent::SpeechStarted { at: 0 },
                TurnEvent::Interrupt { at: 400 }
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn events_are_well_ordered(frames in proptest::collection::vec((proptest::bool::ANY, proptest::bool::ANY), 0..400)) {
            let mut d = TurnDetector::new(settings());
            let mut speaking = false;
            for (i, (v, a)) in frames.into_iter().enumerate() {
                match d.on_frame(i as u64 * FRAME_MS, v, a) {
                    Some(TurnEvent::SpeechStarted { .. }) => { proptest::prop_assert!(!speaking); speaking = true; }
                    Some(TurnEvent::Interrupt { .. }) => { proptest::prop_assert!(speaking || d.caller_speaking()); speaking = true; }
                    Some(TurnEvent::EndOfTurn { speech_start, speech_end }) | Some(TurnEvent::Backchannel { speech_start, speech_end }) => {
                        proptest::prop_assert!(speaking);
                        proptest::prop_assert!(speech_start < speech_end);
                        speaking = false;
                    }
                    None => {}
                }
                proptest::prop_assert_eq!(speaking, d.caller_speaking());
            }
        }
    }
}

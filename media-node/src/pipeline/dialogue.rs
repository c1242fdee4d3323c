//! The embedded dialogue engine: the offline "LLM" driven by the agent spec. It matches what
//! the caller said (or keyed) to an intent by its example phrases, fills the intent's slots
//! (asking for each one), and answers with the intent's reply template, then continues,
//! transfers or hangs up. Pure and synchronous: the pipeline wraps it as an engine.

use crate::agent::{AgentSpec, Intent, IntentAction, SlotKind};

/// What the agent does after a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    Listen,
    Hangup,
    Transfer(String),
}

/// One reply of the dialogue engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub next: NextStep,
    /// The intent this reply belongs to, if any.
    pub intent: Option<String>,
}

/// One call's dialogue state.
#[derive(Debug, Clone)]
pub struct Dialogue {
    spec: AgentSpec,
    /// An intent waiting for slots, with the values so far.
    pending: Option<(usize, Vec<(String, String)>)>,
    /// Consecutive silence timeouts.
    silences: u32,
    /// Consecutive turns nothing matched.
    misses: u32,
}

/// Words of `s`, lower-case, letters/digits only.
pub fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Digits spoken or typed in `s` ("one two three", "4 5", "oh") → "12345".
pub fn spoken_digits(s: &str) -> String {
    let mut out = String::new();
    for w in words(s) {
        let d = match w.as_str() {
            "zero" | "oh" | "o" => Some('0'),
            "one" => Some('1'),
            "two" | "to" | "too" => Some('2'),
            "three" => Some('3'),
            "four" | "for" => Some('4'),
            "five" => Some('5'),
            "six" => Some('6'),
            "seven" => Some('7'),
            "eight" => Some('8'),
            "nine" => Some('9'),
            _ => None,
        };
        match d {
            Some(d) => out.push(d),
            None if w.bytes().all(|b| b.is_ascii_digit()) => out.push_str(&w),
            None => {}
        }
    }
    out
}

fn yes_no(s: &str) -> Option<bool> {
    let w = words(s);
    let has = |set: &[&str]| w.iter().any(|x| set.contains(&x.as_str()));
    match (
        has(&[
            "yes", "yeah", "yep", "sure", "correct", "right", "okay", "ok",
        ]),
        has(&["no", "nope", "not", "don't", "wrong"]),
    ) {
        (true, false) => Some(true),
        (false, true) => Some(false),
        _ => None,
    }
}

/// Words too common to tell intents apart.
const STOP: &[&str] = &[
    "i", "a", "an", "the", "my", "is", "to", "about", "have", "please", "can", "you", "me", "it",
    "so", "and", "of", "would", "like", "want", "do", "what", "why", "with", "for", "on", "in",
];

/// How well `heard` matches `example`, 0..=1: the share of the example's content words
/// heard, with a bonus when the whole example appears verbatim.
fn score(heard: &[String], example: &str) -> f32 {
    let ex = words(example);
    if ex.is_empty() || heard.is_empty() {
        return 0.0;
    }
    let heard_text = format!(" {} ", heard.join(" "));
    if heard_text.contains(&format!(" {} ", ex.join(" "))) {
        // Longer verbatim matches win over short ones ("yes" inside "yes please check…").
        return 1.0 + ex.len() as f32 / 100.0;
    }
    let content: Vec<&String> = ex.iter().filter(|w| !STOP.contains(&w.as_str())).collect();
    let pool: Vec<&String> = if content.is_empty() {
        ex.iter().collect()
    } else {
        content
    };
    let hit = pool.iter().filter(|w| heard.contains(w)).count();
    hit as f32 / pool.len() as f32
}

/// The least score that counts as understanding.
const MATCH_THRESHOLD: f32 = 0.6;

impl Dialogue {
    pub fn new(spec: AgentSpec) -> Self {
        Dialogue {
            spec,
            pending: None,
            silences: 0,
            misses: 0,
        }
    }

    pub fn spec(&self) -> &AgentSpec {
        &self.spec
    }

    /// The greeting.
    pub fn greeting(&self) -> Reply {
        Reply {
            text: self.spec.greeting.clone(),
            next: NextStep::Listen,
            intent: None,
        }
    }

    /// The best intent for `text`, with its score.
    pub fn classify(&self, text: &str) -> Option<(usize, f32)> {
        let heard = words(text);
        let mut best: Option<(usize, f32)> = None;
        for (i, intent) in self.spec.intents.iter().enumerate() {
            let s = intent
                .examples
                .iter()
                .map(|e| score(&heard, e))
                .fold(0.0f32, f32::max);
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((i, s));
            }
        }
        best.filter(|&(_, s)| s >= MATCH_THRESHOLD)
    }

    /// The caller said `text` (a final transcript).
    pub fn on_utterance(&mut self, text: &str) -> Reply {
        self.silences = 0;
        if let Some((idx, mut filled)) = self.pending.take() {
            // Filling a slot: the answer is for the first empty one, unless the caller
            // clearly changed the subject.
            let intent = &self.spec.intents[idx];
            if let Some(slot) = intent.slots.get(filled.len()) {
                let value = match slot.kind {
                    SlotKind::Digits => Some(spoken_digits(text)).filter(|d| !d.is_empty()),
                    SlotKind::YesNo => yes_no(text).map(|b| if b { "yes" } else { "no" }.into()),
                    SlotKind::Text => Some(text.trim().to_string()).filter(|t| !t.is_empty()),
                };
                if let Some(v) = value {
                    filled.push((slot.name.clone(), v));
                    return self.advance(idx, filled);
                }
                if let Some((other, _)) = self.classify(text).filter(|&(o, _)| o != idx) {
                    return self.advance(other, Vec::new());
                }
                let prompt = slot.prompt.clone();
                self.pending = Some((idx, filled));
                return Reply {
                    text: prompt,
                    next: NextStep::Listen,
                    intent: Some(intent.name.clone()),
                };
            }
        }
        match self.classify(text) {
            Some((idx, _)) => {
                self.misses = 0;
                // Words said with the intent may already fill its first slot.
                let mut filled = Vec::new();
                if let Some(slot) = self.spec.intents[idx].slots.first() {
                    if slot.kind == SlotKind::Digits {
                        let d = spoken_digits(text);
                        if d.len() >= 3 {
                            filled.push((slot.name.clone(), d));
                        }
                    }
                }
                self.advance(idx, filled)
            }
            None => {
                self.misses += 1;
                Reply {
                    text: self.spec.fallback_reply.clone(),
                    next: NextStep::Listen,
                    intent: None,
                }
            }
        }
    }

    /// A key press.
    pub fn on_dtmf(&mut self, digit: char) -> Reply {
        self.silences = 0;
        // Keys fill a pending digits slot (`#` ends nothing here: one key per turn is the
        // pipeline's business; it collects keys into one string before calling).
        if let Some((idx, mut filled)) = self.pending.take() {
            let intent = &self.spec.intents[idx];
            if let Some(slot) = intent.slots.get(filled.len()) {
                if slot.kind == SlotKind::Digits && digit.is_ascii_digit() {
                    filled.push((slot.name.clone(), digit.to_string()));
                    return self.advance(idx, filled);
                }
            }
            self.pending = Some((idx, filled));
        }
        let target = self
            .spec
            .dtmf
            .get(digit.to_string().as_str())
            .and_then(|name| self.spec.intents.iter().position(|i| &i.name == name));
        match target {
            Some(idx) => self.advance(idx, Vec::new()),
            None => Reply {
                text: self.spec.fallback_reply.clone(),
                next: NextStep::Listen,
                intent: None,
            },
        }
    }

    /// Keys entered together (e.g. an account number ended by `#`) for a pending digits slot.
    pub fn on_digits(&mut self, digits: &str) -> Reply {
        if let Some((idx, mut filled)) = self.pending.take() {
            let intent = &self.spec.intents[idx];
            if let Some(slot) = intent.slots.get(filled.len()) {
                if slot.kind == SlotKind::Digits {
                    filled.push((slot.name.clone(), digits.to_string()));
                    return self.advance(idx, filled);
                }
            }
            self.pending = Some((idx, filled));
        }
        match digits.chars().next() {
            Some(d) => self.on_dtmf(d),
            None => self.on_utterance(""),
        }
    }

    /// Whether a digits slot is waiting (keys should then be collected, not routed).
    pub fn wants_digits(&self) -> bool {
        self.pending.as_ref().is_some_and(|(idx, filled)| {
            self.spec.intents[*idx]
                .slots
                .get(filled.len())
                .is_some_and(|s| s.kind == SlotKind::Digits)
        })
    }

    /// The caller has been silent for the agent's silence timeout.
    pub fn on_silence(&mut self) -> Reply {
        self.silences += 1;
        if self.silences >= 2 {
            Reply {
                text: "I have not heard anything, so I will end the call now. Goodbye!".into(),
                next: NextStep::Hangup,
                intent: None,
            }
        } else {
            Reply {
                text: "Are you still there?".into(),
                next: NextStep::Listen,
                intent: None,
            }
        }
    }

    fn advance(&mut self, idx: usize, filled: Vec<(String, String)>) -> Reply {
        let intent: &Intent = &self.spec.intents[idx];
        if let Some(slot) = intent.slots.get(filled.len()) {
            let prompt = slot.prompt.clone();
            let name = intent.name.clone();
            self.pending = Some((idx, filled));
            return Reply {
                text: prompt,
                next: NextStep::Listen,
                intent: Some(name),
            };
        }
        let mut text = intent.reply.replace("{agent}", &self.spec.name);
        for (name, value) in &filled {
            // Digits are read one by one.
            let spoken = if value.bytes().all(|b| b.is_ascii_digit()) {
                value
                    .chars()
                    .map(String::from)
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                value.clone()
            };
            text = text.replace(&format!("{{{name}}}"), &spoken);
        }
        let next = match intent.action {
            IntentAction::Continue => NextStep::Listen,
            IntentAction::Hangup => NextStep::Hangup,
            IntentAction::Transfer => {
                NextStep::Transfer(intent.transfer_to.clone().unwrap_or_default())
            }
        };
        Reply {
            text,
            next,
            intent: Some(intent.name.clone()),
        }
    }
}

/// The embedded dialogue engine as an [`LlmEngine`](super::engines::LlmEngine): each reply
/// is streamed word by word, as an LLM would, followed by the next step.
pub struct EmbeddedLlm {
    spec: std::sync::Arc<AgentSpec>,
}

impl EmbeddedLlm {
    pub fn new(spec: AgentSpec) -> Self {
        EmbeddedLlm {
            spec: std::sync::Arc::new(spec),
        }
    }
}

impl super::engines::LlmEngine for EmbeddedLlm {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn session(&self) -> Result<Box<dyn super::engines::LlmSession>, super::engines::EngineError> {
        Ok(Box::new(EmbeddedSession(Dialogue::new(
            (*self.spec).clone(),
        ))))
    }
}

struct EmbeddedSession(Dialogue);

impl super::engines::LlmSession for EmbeddedSession {
    fn respond(
        &mut self,
        input: super::engines::LlmInput,
    ) -> tokio::sync::mpsc::Receiver<Result<super::engines::LlmEvent, super::engines::EngineError>>
    {
        use super::engines::{LlmEvent, LlmInput};
        let reply = match input {
            LlmInput::Start => self.0.greeting(),
            LlmInput::Utterance(text) => self.0.on_utterance(&text),
            LlmInput::Dtmf(keys) if keys.chars().count() == 1 => {
                self.0.on_dtmf(keys.chars().next().unwrap_or('#'))
            }
            LlmInput::Dtmf(keys) => self.0.on_digits(&keys),
            LlmInput::Silence => self.0.on_silence(),
        };
        let words: Vec<&str> = reply.text.split_inclusive(' ').collect();
        let (tx, rx) = tokio::sync::mpsc::channel(words.len() + 2);
        for w in words {
            let _ = tx.try_send(Ok(LlmEvent::Text(w.to_string())));
        }
        let _ = tx.try_send(Ok(LlmEvent::Next(reply.next)));
        rx
    }

    fn truncate_last(&mut self, _spoken: &str) {
        // The scripted dialogue does not depend on what was said before.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Dialogue {
        Dialogue::new(AgentSpec::parse(include_str!("../../../agents/sample.toml")).unwrap())
    }

    #[test]
    fn understands_the_billing_question() {
        let mut d = sample();
        let r = d.on_utterance("I have a question about my bill");
        assert_eq!(r.intent.as_deref(), Some("billing"));
        assert!(r.text.contains("bill"));
        assert_eq!(r.next, NextStep::Listen);
        // Recogniser output without the small words still matches.
        assert_eq!(
            d.on_utterance("question bill").intent.as_deref(),
            Some("billing")
        );
    }

    #[test]
    fn fills_slots_from_speech_and_keys() {
        let mut d = sample();
        let r = d.on_utterance("check my balance");
        assert_eq!(r.text, "Please say or key in your account number.");
        assert!(d.wants_digits());
        let r = d.on_utterance("one two three four");
        assert!(r.text.contains("account 1 2 3 4"), "{}", r.text);
        assert!(!d.wants_digits());
        // By keys.
        let r = d.on_dtmf('2');
        assert_eq!(r.intent.as_deref(), Some("balance"));
        let r = d.on_digits("5678");
        assert!(r.text.contains("5 6 7 8"), "{}", r.text);
        // Said together with the intent.
        let r = d.on_utterance("check my balance for account four four four");
        assert!(r.text.contains("4 4 4"), "{}", r.text);
    }

    #[test]
    fn routes_keys_hangs_up_and_transfers() {
        let mut d = sample();
        assert_eq!(d.on_dtmf('1').intent.as_deref(), Some("billing"));
        assert_eq!(d.on_dtmf('9').next, NextStep::Hangup);
        assert_eq!(
            d.on_utterance("can I talk to a person").next,
            NextStep::Transfer("sip:support@127.0.0.1:5099".into())
        );
        assert_eq!(d.on_utterance("goodbye").next, NextStep::Hangup);
        let r = d.on_dtmf('7');
        assert_eq!(r.intent, None);
    }

    #[test]
    fn unknown_speech_gets_the_fallback_and_silence_ends_the_call() {
        let mut d = sample();
        let r = d.on_utterance("the weather on mars");
        assert_eq!(r.intent, None);
        assert!(r.text.starts_with("Sorry"));
        assert_eq!(d.on_silence().next, NextStep::Listen);
        assert_eq!(d.on_silence().next, NextStep::Hangup);
    }

    #[test]
    fn digits_from_words() {
        assert_eq!(spoken_digits("one two oh 4 five"), "12045");
        assert_eq!(spoken_digits("nothing here"), "");
    }

    proptest::proptest! {
        #[test]
        fn any_input_never_panics(text in "\\PC{0,200}", key in proptest::char::any()) {
            let mut d = sample();
            let _ = d.on_utterance(&text);
            let _ = d.on_dtmf(key);
            let _ = d.on_digits(&text);
            let _ = d.on_utterance(&text);
        }
    }
}

//! Cuts streamed LLM text into speakable chunks for TTS as it arrives: a chunk ends at a
//! sentence end (`.`, `!`, `?`, `…`, and their CJK/Devanagari forms) followed by a space, or,
//! when a sentence runs long, at a clause break (`,`, `;`, `:`, `—`). Abbreviations ("Mr.",
//! "e.g.") and numbers ("3.5") do not end sentences. The first chunk may be cut earlier, at
//! a clause break after a few words, so the first audio starts sooner.

/// Splits a token stream into chunks.
#[derive(Debug, Default)]
pub struct SentenceSplitter {
    buf: String,
    emitted: usize,
}

const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "no", "approx",
    "dept", "inc", "ltd", "co",
];

/// A clause break is used for chunks longer than this (bytes).
const LONG_CHUNK: usize = 120;
/// The first chunk may end at a clause break once it has this many bytes.
const FIRST_CHUNK_MIN: usize = 24;

fn is_terminal(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '।' | '。' | '！' | '？')
}

fn is_clause(c: char) -> bool {
    matches!(c, ',' | ';' | ':' | '—' | '–')
}

impl SentenceSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add streamed text; returns the chunks it completes.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        while let Some(end) = self.find_break() {
            let chunk: String = self.buf.drain(..end).collect();
            let chunk = chunk.trim();
            if !chunk.is_empty() {
                out.push(chunk.to_string());
                self.emitted += 1;
            }
        }
        out
    }

    /// The stream ended: whatever is left.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| {
            self.emitted += 1;
            rest.to_string()
        })
    }

    /// Byte index just after a break (including the following whitespace), if one is
    /// certain already.
    fn find_break(&self) -> Option<usize> {
        let b = &self.buf;
        let chars: Vec<(usize, char)> = b.char_indices().collect();
        let mut clause_at = None;
        for (k, &(i, c)) in chars.iter().enumerate() {
            let next = chars.get(k + 1).map(|&(_, n)| n);
            // A break needs what follows to be known: whitespace after it.
            let Some(next) = next else { break };
            if !next.is_whitespace() {
                continue;
            }
            let end = i + c.len_utf8();
            if is_terminal(c) {
                if c == '.' && self.is_abbreviation_or_number(i) {
                    continue;
                }
                return Some(end + next.len_utf8());
            }
            if is_clause(c) {
                clause_at = Some(end + next.len_utf8());
                let first = self.emitted == 0 && end >= FIRST_CHUNK_MIN;
                if first || end >= LONG_CHUNK {
                    return clause_at;
                }
            }
        }
        // A run-on sentence with no clause break: cut at the last space past the limit.
        if b.len() > LONG_CHUNK * 2 {
            let mut limit = LONG_CHUNK * 2;
            while !b.is_char_boundary(limit) {
                limit -= 1;
            }
            return clause_at.or_else(|| b[..limit].rfind(' ').map(|i| i + 1));
        }
        None
    }

    fn is_abbreviation_or_number(&self, dot: usize) -> bool {
        let before = &self.buf[..dot];
        let word: String = before
            .chars()
            .rev()
            .take_while(|c| c.is_alphanumeric() || *c == '.')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if word.is_empty() {
            return false;
        }
        let lower = word.to_lowercase();
        if ABBREVIATIONS.contains(&lower.as_str()) {
            return true;
        }
        // Single letters ("J. Smith") and dotted initials ("U.S.").
        word.chars().count() == 1 && word.chars().all(char::is_alphabetic)
            || lower.contains('.') && lower.len() <= 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(tokens: &[&str]) -> Vec<String> {
        let mut s = SentenceSplitter::new();
        let mut out = Vec::new();
        for t in tokens {
            out.extend(s.push(t));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn sentences_come_out_as_soon_as_they_end() {
        let mut s = SentenceSplitter::new();
        assert!(s.push("Sure, I").is_empty());
        assert!(
            s.push(" can help.").is_empty(),
            "the end needs the next space"
        );
        assert_eq!(s.push(" What"), vec!["Sure, I can help."]);
        assert!(s.push(" is your number?").is_empty());
        assert_eq!(s.finish().as_deref(), Some("What is your number?"));
    }

    #[test]
    fn abbreviations_and_numbers_do_not_end_sentences() {
        assert_eq!(
            split(&["Dr. Rao said the fee is 3.5 rupees. ", "Thanks!"]),
            vec!["Dr. Rao said the fee is 3.5 rupees.", "Thanks!"]
        );
        assert_eq!(
            split(&["Call e.g. the U.S. office. Then wait."]),
            vec!["Call e.g. the U.S. office.", "Then wait."]
        );
    }

    #[test]
    fn a_long_first_clause_is_cut_early() {
        let out = split(&[
            "The most common reason for a higher bill is roaming, or a plan change. Okay?",
        ]);
        assert_eq!(
            out,
            vec![
                "The most common reason for a higher bill is roaming,",
                "or a plan change.",
                "Okay?"
            ]
        );
    }

    #[test]
    fn run_on_text_is_cut_at_a_space() {
        let long = "word ".repeat(100);
        let out = split(&[&long]);
        assert!(out.len() >= 2);
        assert!(out.iter().all(|c| c.len() <= LONG_CHUNK * 2));
        assert_eq!(out.join(" ").split_whitespace().count(), 100);
    }

    proptest::proptest! {
        #[test]
        fn nothing_is_lost(tokens in proptest::collection::vec("\\PC{0,12}", 0..40)) {
            let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
            let out = split(&refs);
            let a: Vec<String> = tokens.concat().split_whitespace().map(String::from).collect();
            let b: Vec<String> = out.join(" ").split_whitespace().map(String::from).collect();
            proptest::prop_assert_eq!(a, b);
        }
    }
}

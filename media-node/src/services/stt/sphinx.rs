//! pocketsphinx through a small hand-written FFI.
//!
//! Debian 12's `libpocketsphinx` is the 0.8+5prealpha API (`ps_init` over a `cmd_ln_t`,
//! searches set by name). We declare the dozen functions we call below; nothing is generated.
//!
//! # Two modes
//!
//! - **Grammar** ([`Grammar::from_phrases`]): the phrases an agent expects (intent examples,
//!   yes/no, digits) become one JSGF rule, `public <utterance> = phrase | phrase | …;`. The
//!   decoder then only ever answers one of those phrases, which is what makes a 2015 acoustic
//!   model usable on the phone: ~0 % WER on the phrases it was given (measured: see
//!   `bench/README.md`, "Offline speech engines"). A grammar decoder is built with a
//!   dictionary of just the grammar's words (added with `ps_add_word`), so it starts in ~20 ms
//!   and costs ~10 MB instead of ~25 MB with the full 134 k-word dictionary.
//! - **Open vocabulary** ([`SphinxModel::stream`] with no grammar): the full dictionary and the
//!   generic trigram model `en-us.lm.bin`. Slow to start (~0.5 s, ~100 MB) and inaccurate on
//!   telephone speech (DESIGN.md §4 measured ~60 % WER); a last resort when an agent expects
//!   nothing in particular.
//!
//! # Rejection
//!
//! A grammar decoder forces every utterance onto *some* phrase: "the cat sat on the mat" comes
//! out as "no", with the rest of the audio written off as noise. A stream in grammar mode
//! therefore runs a second, grammar-free decoder beside it on the same audio: a loop over the
//! acoustic model's context-independent phones (pocketsphinx's allphone search, no phone
//! language model), which explains any speech about as well as the model can. Two measures
//! against it make [`Recognized::confidence`]:
//!
//! - **coverage**: frames the phrase's words span ÷ frames the phone loop spent in speech
//!   phones. Measured on synthesized speech: 0.91–1.22 for the grammar's own phrases, 0.12–0.41
//!   for unrelated sentences forced onto a phrase. This is the strong one.
//! - **fit**: the per-frame gap between the grammar path's score and the phone loop's, through
//!   a logistic (−7 … −21 for the phrases, −21 … −31 for forced ones: weaker, it only sharpens).
//!
//! [`SphinxStream::finish`] drops results under [`SphinxConfig::min_confidence`]. A garbage
//! loop of common words inside the grammar was tried first and rejected: with the grammar's
//! flat transition probabilities it swallowed half of the real phrases.
//!
//! The phone loop costs a second small decoder and roughly doubles decoding time (still far
//! below real time).
//!
//! # Threads and cost
//!
//! A decoder is not thread-safe, so each [`SphinxStream`] owns one; streams are `Send` (a
//! decoder may move between threads, never be used from two at once). Building one is the
//! expensive part (reading the acoustic model: see above), so [`SphinxModel`] keeps a small
//! pool of idle decoders per grammar and hands them to new streams; [`SphinxModel::prewarm`]
//! fills it ahead of calls. Decoder construction is serialised by a lock (sphinxbase's grammar
//! compiler and logging have process-wide state); decoding runs in parallel.
//!
//! sphinxbase logs to stderr by default; we switch its logging off once per process.

#![allow(unsafe_code)] // This module is the FFI boundary; every unsafe block carries its SAFETY argument.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{c_char, c_int, CStr, CString};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard, Once};

use super::SttError;

/// Where Debian's `pocketsphinx-en-us` puts the US English model.
pub const DEBIAN_MODEL_DIR: &str = "/usr/share/pocketsphinx/model/en-us";

/// The default [`SphinxConfig::min_confidence`].
pub const DEFAULT_MIN_CONFIDENCE: f64 = 0.6;

/// The most phrases a grammar may hold.
pub const MAX_PHRASES: usize = 5_000;
/// The most words one phrase may hold (longer ones are cut).
pub const MAX_PHRASE_WORDS: usize = 40;

/// The hand-written subset of `pocketsphinx.h`, `ps_search.h`, `cmd_ln.h` and `err.h`
/// (Debian 12, 0.8+5prealpha).
mod ffi {
    use std::ffi::{c_char, c_int, c_void};

    /// `cmd_ln_t`.
    #[repr(C)]
    pub struct CmdLn {
        _private: [u8; 0],
    }
    /// `arg_t`.
    #[repr(C)]
    pub struct Arg {
        _private: [u8; 0],
    }
    /// `ps_seg_t`.
    #[repr(C)]
    pub struct Seg {
        _private: [u8; 0],
    }
    /// `ps_decoder_t`.
    #[repr(C)]
    pub struct Decoder {
        _private: [u8; 0],
    }

    #[link(name = "pocketsphinx")]
    extern "C" {
        pub fn ps_args() -> *const Arg;
        pub fn ps_init(config: *mut CmdLn) -> *mut Decoder;
        pub fn ps_free(ps: *mut Decoder) -> c_int;
        pub fn ps_add_word(
            ps: *mut Decoder,
            word: *const c_char,
            phones: *const c_char,
            update: c_int,
        ) -> c_int;
        pub fn ps_set_jsgf_string(
            ps: *mut Decoder,
            name: *const c_char,
            jsgf: *const c_char,
        ) -> c_int;
        pub fn ps_set_search(ps: *mut Decoder, name: *const c_char) -> c_int;
        pub fn ps_set_allphone_file(
            ps: *mut Decoder,
            name: *const c_char,
            path: *const c_char,
        ) -> c_int;
        pub fn ps_start_utt(ps: *mut Decoder) -> c_int;
        pub fn ps_process_raw(
            ps: *mut Decoder,
            data: *const i16,
            n_samples: usize,
            no_search: c_int,
            full_utt: c_int,
        ) -> c_int;
        pub fn ps_end_utt(ps: *mut Decoder) -> c_int;
        pub fn ps_get_hyp(ps: *mut Decoder, out_best_score: *mut i32) -> *const c_char;
        pub fn ps_get_in_speech(ps: *mut Decoder) -> u8;
        pub fn ps_get_n_frames(ps: *mut Decoder) -> c_int;
        pub fn ps_seg_iter(ps: *mut Decoder) -> *mut Seg;
        pub fn ps_seg_next(seg: *mut Seg) -> *mut Seg;
        pub fn ps_seg_word(seg: *mut Seg) -> *const c_char;
        pub fn ps_seg_frames(seg: *mut Seg, out_sf: *mut c_int, out_ef: *mut c_int);
    }

    #[link(name = "sphinxbase")]
    extern "C" {
        /// Variadic: `name, value` C-string pairs, then NULL.
        pub fn cmd_ln_init(inout: *mut CmdLn, defn: *const Arg, strict: c_int, ...) -> *mut CmdLn;
        pub fn cmd_ln_free_r(config: *mut CmdLn) -> c_int;
        /// `FILE *`; NULL switches logging off.
        pub fn err_set_logfp(stream: *mut c_void);
    }
}

/// Serialises decoder construction and the one-time logging switch (see the module docs).
static BUILD: Mutex<()> = Mutex::new(());
static QUIET: Once = Once::new();

fn build_lock() -> MutexGuard<'static, ()> {
    BUILD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Paths to a pocketsphinx model. [`SphinxConfig::default`] is Debian's `pocketsphinx-en-us`.
#[derive(Debug, Clone, PartialEq)]
pub struct SphinxConfig {
    /// The acoustic model directory (holds `mdef`, `means`, `feat.params`, …). It must be a
    /// 16 kHz model: the node feeds 16 kHz audio.
    pub acoustic_model: PathBuf,
    /// The pronouncing dictionary (CMUdict format: `word PH ON ES`, variants as `word(2)`).
    pub dictionary: PathBuf,
    /// The n-gram language model for open-vocabulary recognition (`.lm.bin` or ARPA).
    pub language_model: PathBuf,
    /// How many idle decoders the model keeps for reuse, over all grammars.
    pub max_idle_decoders: usize,
    /// Grammar results below this [`Recognized::confidence`] are dropped (0 keeps all).
    pub min_confidence: f64,
}

impl SphinxConfig {
    /// The model files in `dir` with the Debian package's layout (`en-us/`,
    /// `cmudict-en-us.dict`, `en-us.lm.bin`).
    pub fn from_dir(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        SphinxConfig {
            acoustic_model: dir.join("en-us"),
            dictionary: dir.join("cmudict-en-us.dict"),
            language_model: dir.join("en-us.lm.bin"),
            max_idle_decoders: 8,
            min_confidence: DEFAULT_MIN_CONFIDENCE,
        }
    }
}

impl Default for SphinxConfig {
    fn default() -> Self {
        SphinxConfig::from_dir(DEBIAN_MODEL_DIR)
    }
}

/// A loaded model: the configuration, the dictionary (for checking grammar words) and the
/// pool of idle decoders. Cheap to clone (shared); `Send + Sync`.
#[derive(Clone)]
pub struct SphinxModel {
    inner: Arc<ModelInner>,
}

struct ModelInner {
    config: SphinxConfig,
    /// word → its pronunciations (one phone string per variant, first = primary).
    dictionary: HashMap<String, Vec<String>>,
    idle: Mutex<Vec<(SearchKey, Decoder)>>,
}

impl fmt::Debug for SphinxModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SphinxModel")
            .field("config", &self.inner.config)
            .field("words", &self.inner.dictionary.len())
            .finish()
    }
}

impl SphinxModel {
    /// Loads the dictionary and checks the acoustic model is there. Decoders are built on
    /// demand (or by [`prewarm`](Self::prewarm)).
    pub fn load(config: SphinxConfig) -> Result<Self, SttError> {
        for file in ["mdef", "means", "variances", "transition_matrices"] {
            let path = config.acoustic_model.join(file);
            if !path.is_file() {
                return Err(SttError::ModelMissing(path));
            }
        }
        let text = std::fs::read(&config.dictionary)
            .map_err(|_| SttError::ModelMissing(config.dictionary.clone()))?;
        let dictionary = parse_dictionary(&String::from_utf8_lossy(&text));
        if dictionary.is_empty() {
            return Err(SttError::ModelMissing(config.dictionary.clone()));
        }
        Ok(SphinxModel {
            inner: Arc::new(ModelInner {
                config,
                dictionary,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Debian's `pocketsphinx-en-us` ([`SphinxConfig::default`]).
    pub fn load_default() -> Result<Self, SttError> {
        SphinxModel::load(SphinxConfig::default())
    }

    /// The configuration it was loaded with.
    pub fn config(&self) -> &SphinxConfig {
        &self.inner.config
    }

    /// Whether `word` (lowercase) is in the dictionary.
    pub fn knows(&self, word: &str) -> bool {
        self.inner.dictionary.contains_key(word)
    }

    /// A recognition stream: with a grammar, it answers only the grammar's phrases (or
    /// nothing); without, it is open vocabulary (needs the language model). Reuses idle
    /// decoders when there are some.
    pub fn stream(&self, grammar: Option<&Grammar>) -> Result<SphinxStream, SttError> {
        let key = SearchKey::of(grammar);
        let main = self.decoder(&key, grammar)?;
        let reference = match grammar {
            Some(_) => Some(self.decoder(&SearchKey::PhoneLoop, None)?),
            None => None,
        };
        Ok(SphinxStream {
            model: self.clone(),
            main: Some((key, main)),
            reference,
            in_utterance: false,
            samples: 0,
            noise: 0x2545_f491,
            dithered: Vec::with_capacity(crate::codec::FRAME_SAMPLES),
        })
    }

    /// Builds decoders until `count` streams for `grammar` (or open vocabulary) can start
    /// without construction delay (bounded by [`SphinxConfig::max_idle_decoders`]).
    pub fn prewarm(&self, grammar: Option<&Grammar>, count: usize) -> Result<(), SttError> {
        let count = count.min(self.inner.config.max_idle_decoders);
        let mut keys = vec![SearchKey::of(grammar)];
        if grammar.is_some() {
            keys.push(SearchKey::PhoneLoop);
        }
        for key in keys {
            loop {
                let have = self.idle().iter().filter(|(k, _)| *k == key).count();
                if have >= count {
                    break;
                }
                let decoder = self.build(&key, grammar)?;
                self.give_back(key.clone(), decoder);
            }
        }
        Ok(())
    }

    fn decoder(&self, key: &SearchKey, grammar: Option<&Grammar>) -> Result<Decoder, SttError> {
        match self.take_idle(key) {
            Some(decoder) => Ok(decoder),
            None => self.build(key, grammar),
        }
    }

    /// Idle decoders in the pool (all grammars).
    pub fn idle_decoders(&self) -> usize {
        self.idle().len()
    }

    fn idle(&self) -> MutexGuard<'_, Vec<(SearchKey, Decoder)>> {
        self.inner
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take_idle(&self, key: &SearchKey) -> Option<Decoder> {
        let mut idle = self.idle();
        let at = idle.iter().rposition(|(k, _)| k == key)?;
        Some(idle.remove(at).1)
    }

    fn give_back(&self, key: SearchKey, decoder: Decoder) {
        let mut idle = self.idle();
        if self.inner.config.max_idle_decoders == 0 {
            return;
        }
        if idle.len() >= self.inner.config.max_idle_decoders {
            // Evict the oldest: it belongs to the grammar least recently used.
            idle.remove(0);
        }
        idle.push((key, decoder));
    }

    /// Builds a decoder for `key`: the acoustic model, then the grammar's words and the
    /// grammar; or the full dictionary and the language model; or the phone loop.
    fn build(&self, key: &SearchKey, grammar: Option<&Grammar>) -> Result<Decoder, SttError> {
        let config = &self.inner.config;
        let hmm = path_arg(&config.acoustic_model)?;
        let mut args: Vec<(&CStr, CString)> = vec![(c"-hmm", hmm)];
        let grammar = match (key, grammar) {
            (SearchKey::Grammar(_), Some(g)) => Some(g),
            (SearchKey::Grammar(_), None) => {
                return Err(SttError::Grammar("grammar key without a grammar".into()))
            }
            (SearchKey::OpenVocabulary, _) => {
                if !config.language_model.is_file() {
                    return Err(SttError::ModelMissing(config.language_model.clone()));
                }
                args.push((c"-dict", path_arg(&config.dictionary)?));
                args.push((c"-lm", path_arg(&config.language_model)?));
                None
            }
            (SearchKey::PhoneLoop, _) => {
                args.push((c"-allphone_ci", CString::from(c"yes")));
                None
            }
        };
        let _lock = build_lock();
        QUIET.call_once(|| {
            // SAFETY: NULL is the documented "logging off" value; called once, under the
            // build lock, before the first decoder exists.
            unsafe { ffi::err_set_logfp(std::ptr::null_mut()) }
        });
        let decoder = Decoder::init(&args)?;
        if let Some(grammar) = grammar {
            let last = grammar.inner.lexicon.len().saturating_sub(1);
            for (i, (word, phones)) in grammar.inner.lexicon.iter().enumerate() {
                let (w, p) = (c_string(word)?, c_string(phones)?);
                // SAFETY: valid decoder (built above, owned here); NUL-terminated strings that
                // outlive the call (the library copies them). `update` only on the last word.
                let rc = unsafe {
                    ffi::ps_add_word(
                        decoder.ptr(),
                        w.as_ptr(),
                        p.as_ptr(),
                        c_int::from(i == last),
                    )
                };
                if rc < 0 {
                    return Err(SttError::Grammar(format!("cannot add word {word:?}")));
                }
            }
            let jsgf = c_string(&grammar.inner.jsgf)?;
            // SAFETY: as above; the library parses and copies the grammar text.
            let rc =
                unsafe { ffi::ps_set_jsgf_string(decoder.ptr(), SEARCH.as_ptr(), jsgf.as_ptr()) };
            if rc < 0 {
                return Err(SttError::Grammar(
                    "pocketsphinx rejected the JSGF grammar".into(),
                ));
            }
        } else if *key == SearchKey::PhoneLoop {
            // SAFETY: valid decoder; NULL = no phone language model (uniform phone loop).
            let rc = unsafe {
                ffi::ps_set_allphone_file(decoder.ptr(), SEARCH.as_ptr(), std::ptr::null())
            };
            if rc < 0 {
                return Err(SttError::Init("cannot set up the phone loop".into()));
            }
        }
        if grammar.is_some() || *key == SearchKey::PhoneLoop {
            // SAFETY: valid decoder; the search named SEARCH was just added.
            if unsafe { ffi::ps_set_search(decoder.ptr(), SEARCH.as_ptr()) } < 0 {
                return Err(SttError::Init("cannot activate the search".into()));
            }
        }
        Ok(decoder)
    }
}

/// The name we give the one search we add to a decoder.
const SEARCH: &CStr = c"vaani";

/// Which search a decoder was built for: decoders are pooled per key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SearchKey {
    OpenVocabulary,
    Grammar(Arc<str>),
    PhoneLoop,
}

impl SearchKey {
    fn of(grammar: Option<&Grammar>) -> SearchKey {
        match grammar {
            None => SearchKey::OpenVocabulary,
            Some(g) => SearchKey::Grammar(g.inner.jsgf.clone()),
        }
    }
}

fn path_arg(path: &Path) -> Result<CString, SttError> {
    path.to_str()
        .and_then(|s| CString::new(s).ok())
        .ok_or_else(|| SttError::ModelMissing(path.to_path_buf()))
}

fn c_string(s: &str) -> Result<CString, SttError> {
    CString::new(s).map_err(|_| SttError::Grammar("text contains NUL".into()))
}

/// One pocketsphinx decoder, owned.
struct Decoder(NonNull<ffi::Decoder>);

// SAFETY: a decoder is a self-contained heap object graph (its own acoustic model copy,
// dictionary, searches, feature buffers); pocketsphinx documents one decoder per thread, not
// per-thread affinity. We never share it: all access goes through `&mut` (SphinxStream) or
// the pool's mutex, so moving it between threads is sound. Not `Sync`.
unsafe impl Send for Decoder {}

impl Decoder {
    /// `cmd_ln_init` + `ps_init`. Call with the build lock held.
    fn init(args: &[(&CStr, CString)]) -> Result<Decoder, SttError> {
        // cmd_ln_init is variadic over `name, value` pairs ended by NULL; we pass at most three
        // pairs, so spell the call out per count.
        let p = |i: usize| args.get(i).map(|(n, v)| (n.as_ptr(), v.as_ptr()));
        let null = std::ptr::null::<c_char>();
        // SAFETY: ps_args() returns the library's static argument table. Every string pointer
        // is NUL-terminated and alive (borrowed from `args`) for the call, which copies them;
        // the list is NULL-terminated as the variadic contract requires; strict = 1.
        let config = unsafe {
            let defn = ffi::ps_args();
            let none = std::ptr::null_mut();
            match (p(0), p(1), p(2)) {
                (Some(a), None, _) => ffi::cmd_ln_init(none, defn, 1, a.0, a.1, null),
                (Some(a), Some(b), None) => {
                    ffi::cmd_ln_init(none, defn, 1, a.0, a.1, b.0, b.1, null)
                }
                (Some(a), Some(b), Some(c)) => {
                    ffi::cmd_ln_init(none, defn, 1, a.0, a.1, b.0, b.1, c.0, c.1, null)
                }
                _ => std::ptr::null_mut(),
            }
        };
        if config.is_null() {
            return Err(SttError::Init("cmd_ln_init failed".into()));
        }
        // SAFETY: `config` is the valid configuration just made; ps_init retains it on success,
        // so we drop our reference either way.
        let ps = unsafe {
            let ps = ffi::ps_init(config);
            ffi::cmd_ln_free_r(config);
            ps
        };
        NonNull::new(ps)
            .map(Decoder)
            .ok_or_else(|| SttError::Init("ps_init failed (acoustic model unreadable?)".into()))
    }

    fn ptr(&self) -> *mut ffi::Decoder {
        self.0.as_ptr()
    }

    fn start(&mut self) -> Result<(), SttError> {
        // SAFETY: valid decoder, exclusively borrowed; no utterance open (callers track it).
        if unsafe { ffi::ps_start_utt(self.ptr()) } < 0 {
            return Err(SttError::Decode("ps_start_utt failed".into()));
        }
        Ok(())
    }

    fn process(&mut self, pcm: &[i16]) -> Result<(), SttError> {
        // SAFETY: valid decoder with an open utterance; `pcm` is a live slice of that many
        // samples, only read during the call. no_search = 0, full_utt = 0 (streaming).
        if unsafe { ffi::ps_process_raw(self.ptr(), pcm.as_ptr(), pcm.len(), 0, 0) } < 0 {
            return Err(SttError::Decode("ps_process_raw failed".into()));
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), SttError> {
        // SAFETY: valid decoder with an open utterance.
        if unsafe { ffi::ps_end_utt(self.ptr()) } < 0 {
            return Err(SttError::Decode("ps_end_utt failed".into()));
        }
        Ok(())
    }

    /// The best hypothesis and its path score, `None` when it has no words.
    fn hypothesis(&mut self) -> Option<(String, i32)> {
        let mut score: i32 = 0;
        // SAFETY: valid decoder; the returned string belongs to the decoder and stays valid
        // until the next call into it, so it is copied out at once.
        let raw = unsafe {
            let hyp = ffi::ps_get_hyp(self.ptr(), &mut score);
            if hyp.is_null() {
                return None;
            }
            CStr::from_ptr(hyp).to_string_lossy().into_owned()
        };
        let words: Vec<&str> = raw.split_whitespace().collect();
        (!words.is_empty()).then(|| (words.join(" "), score))
    }

    /// Frames of the best path spent in words (or phones) rather than in silence and noise
    /// fillers (`<sil>`, `[NOISE]`, `SIL`, `+NSN+`, …).
    fn word_frames(&mut self) -> usize {
        let mut total = 0usize;
        // SAFETY: valid decoder with a finished utterance. The iterator is walked to its end,
        // where ps_seg_next frees it and returns NULL (so no ps_seg_free is needed); each
        // word string is read before the next ps_seg_next, as the header requires.
        unsafe {
            let mut seg = ffi::ps_seg_iter(self.ptr());
            while !seg.is_null() {
                let word = ffi::ps_seg_word(seg);
                let filler = word.is_null() || {
                    let w = CStr::from_ptr(word).to_bytes();
                    w.first().is_some_and(|c| matches!(c, b'<' | b'[' | b'+')) || w == b"SIL"
                };
                if !filler {
                    let (mut sf, mut ef): (c_int, c_int) = (0, 0);
                    ffi::ps_seg_frames(seg, &mut sf, &mut ef);
                    total += usize::try_from(ef - sf + 1).unwrap_or(0);
                }
                seg = ffi::ps_seg_next(seg);
            }
        }
        total
    }

    /// 10 ms frames searched in the current (or last) utterance.
    fn frames(&self) -> usize {
        // SAFETY: valid decoder; a plain getter.
        usize::try_from(unsafe { ffi::ps_get_n_frames(self.ptr()) }).unwrap_or(0)
    }

    fn in_speech(&self) -> bool {
        // SAFETY: valid decoder; a plain getter.
        unsafe { ffi::ps_get_in_speech(self.ptr()) != 0 }
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: we own the only reference (never `ps_retain`ed); freed exactly once.
        unsafe {
            ffi::ps_free(self.ptr());
        }
    }
}

/// What a stream recognized in one utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Recognized {
    /// The words, lowercase, separated by single spaces; with a grammar, exactly one of
    /// [`Grammar::phrases`].
    pub text: String,
    /// The decoder's path score (pocketsphinx's scaled log-likelihood; higher is better).
    /// Comparable only between hypotheses for the same audio.
    pub score: i32,
    /// With a grammar: how well the phrase explains the audio compared with the free phone
    /// loop, 0–1 (see "Rejection" in the module docs). Open vocabulary: always 1 (not
    /// measured).
    pub confidence: f64,
    /// With a grammar: frames the phrase's words span over frames the phone loop spent in
    /// speech phones (≈ 1 when the phrase accounts for all the speech; ≪ 1 when the decoder
    /// matched a short phrase and wrote the rest off as noise). 1 in open vocabulary.
    pub coverage: f64,
    /// With a grammar: the path score minus the phone loop's, per 10 ms frame (≤ 0 in
    /// practice; more negative = worse fit). 0 in open vocabulary.
    pub gap_per_frame: f64,
}

/// Streaming recognition: push 16 kHz audio as it arrives, read partial hypotheses,
/// [`finish`](Self::finish) at the end of the caller's turn. After `finish` the next
/// [`push`](Self::push) starts a new utterance, so one stream serves a whole call. On drop the
/// decoders go back to the model's pool.
pub struct SphinxStream {
    model: SphinxModel,
    /// Always `Some` until drop.
    main: Option<(SearchKey, Decoder)>,
    /// The phone loop beside a grammar decoder.
    reference: Option<Decoder>,
    in_utterance: bool,
    samples: u64,
    /// Noise generator state and buffer for dithering (see [`SphinxStream::push`]).
    noise: u32,
    dithered: Vec<i16>,
}

impl fmt::Debug for SphinxStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SphinxStream")
            .field("grammar", &self.reference.is_some())
            .field("in_utterance", &self.in_utterance)
            .field("samples", &self.samples)
            .finish()
    }
}

impl SphinxStream {
    fn main(&mut self) -> Result<&mut Decoder, SttError> {
        self.main
            .as_mut()
            .map(|(_, d)| d)
            .ok_or_else(|| SttError::Decode("stream has no decoder".into()))
    }

    /// Feeds 16 kHz mono audio (any length; typically one 20 ms frame).
    pub fn push(&mut self, pcm16k: &[i16]) -> Result<(), SttError> {
        if !self.in_utterance {
            self.main()?.start()?;
            if let Some(reference) = self.reference.as_mut() {
                reference.start()?;
            }
            self.in_utterance = true;
            self.samples = 0;
        }
        if pcm16k.is_empty() {
            return Ok(());
        }
        // Telephone audio (G.711, 8 kHz) upsampled to 16 kHz has nothing above 4 kHz, which
        // the 16 kHz model's filter bank turns into extreme log energies: recognition then
        // fails on words it gets right with full-band audio. A little noise (about -48 dBFS)
        // in every band fixes that and changes nothing audible.
        self.dithered.clear();
        self.dithered.extend(pcm16k.iter().map(|&s| {
            self.noise = self
                .noise
                .wrapping_mul(1_664_525)
                .wrapping_add(1_013_904_223);
            s.saturating_add(((self.noise >> 16) as u16 as i16) / 256)
        }));
        let audio = std::mem::take(&mut self.dithered);
        let result = self.main().and_then(|d| d.process(&audio));
        let result = result.and_then(|()| match self.reference.as_mut() {
            Some(reference) => reference.process(&audio),
            None => Ok(()),
        });
        self.dithered = audio;
        result?;
        self.samples += pcm16k.len() as u64;
        Ok(())
    }

    /// The best hypothesis so far in the current utterance (`None` before any words).
    pub fn partial(&mut self) -> Option<String> {
        if !self.in_utterance {
            return None;
        }
        self.main().ok()?.hypothesis().map(|(text, _)| text)
    }

    /// Whether pocketsphinx's own voice detector currently hears speech.
    pub fn in_speech(&self) -> bool {
        self.in_utterance && self.main.as_ref().is_some_and(|(_, d)| d.in_speech())
    }

    /// Audio pushed into the current (or last) utterance, in milliseconds.
    pub fn utterance_ms(&self) -> u64 {
        self.samples / 16
    }

    /// Ends the utterance and returns what was said: `None` for silence, or with a grammar
    /// when the best phrase's confidence is under [`SphinxConfig::min_confidence`].
    pub fn finish(&mut self) -> Result<Option<Recognized>, SttError> {
        let Some(recognized) = self.finish_unfiltered()? else {
            return Ok(None);
        };
        let min = self.model.inner.config.min_confidence;
        Ok((recognized.confidence >= min).then_some(recognized))
    }

    /// [`finish`](Self::finish) without the confidence threshold: the best phrase whatever
    /// its confidence (for tuning and measurement).
    pub fn finish_unfiltered(&mut self) -> Result<Option<Recognized>, SttError> {
        if !self.in_utterance {
            return Ok(None);
        }
        self.in_utterance = false;
        let Some((_, main)) = self.main.as_mut() else {
            return Err(SttError::Decode("stream has no decoder".into()));
        };
        main.end()?;
        let Some((text, score)) = main.hypothesis() else {
            if let Some(reference) = self.reference.as_mut() {
                reference.end()?;
            }
            return Ok(None);
        };
        let frames = main.frames().max(1);
        let (confidence, coverage, gap_per_frame) = match self.reference.as_mut() {
            None => (1.0, 1.0, 0.0),
            Some(reference) => {
                reference.end()?;
                let loop_score = reference.hypothesis().map_or(score, |(_, s)| s);
                let per_frame = (f64::from(score) - f64::from(loop_score)) / frames as f64;
                let coverage = main.word_frames() as f64 / reference.word_frames().max(1) as f64;
                (confidence_of(coverage, per_frame), coverage, per_frame)
            }
        };
        Ok(Some(Recognized {
            text,
            score,
            confidence,
            coverage,
            gap_per_frame,
        }))
    }
}

/// Confidence from the two measures against the phone loop (see "Rejection" in the module
/// docs): the share of speech the phrase's words cover (capped at 1), times a logistic of the
/// per-frame score gap centred on [`GAP_MIDPOINT`]. Calibration in `bench/README.md`.
fn confidence_of(coverage: f64, gap_per_frame: f64) -> f64 {
    let x = (gap_per_frame - GAP_MIDPOINT) / GAP_SCALE;
    let fit = 1.0 / (1.0 + (-x).exp());
    let confidence = coverage.clamp(0.0, 1.0) * fit;
    if confidence.is_nan() {
        0.0
    } else {
        confidence.clamp(0.0, 1.0)
    }
}

/// Per-frame gap at which confidence is 0.5.
const GAP_MIDPOINT: f64 = -40.0;
/// Width of the logistic.
const GAP_SCALE: f64 = 8.0;

impl Drop for SphinxStream {
    fn drop(&mut self) {
        let in_utterance = self.in_utterance;
        let reusable = |decoder: &mut Decoder| !in_utterance || decoder.end().is_ok();
        if let Some((key, mut decoder)) = self.main.take() {
            if reusable(&mut decoder) {
                self.model.give_back(key, decoder);
            }
        }
        if let Some(mut decoder) = self.reference.take() {
            if reusable(&mut decoder) {
                self.model.give_back(SearchKey::PhoneLoop, decoder);
            }
        }
    }
}

/// A phrase list compiled for pocketsphinx: normalised phrases, the JSGF text and the
/// pronunciations of every word it uses. Cheap to clone.
#[derive(Clone)]
pub struct Grammar {
    inner: Arc<GrammarInner>,
}

struct GrammarInner {
    phrases: Vec<String>,
    unknown: Vec<String>,
    jsgf: Arc<str>,
    /// (dictionary entry as the decoder will know it, phones).
    lexicon: Vec<(String, String)>,
}

impl fmt::Debug for Grammar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grammar")
            .field("phrases", &self.inner.phrases)
            .field("unknown", &self.inner.unknown)
            .finish()
    }
}

impl PartialEq for Grammar {
    fn eq(&self, other: &Self) -> bool {
        self.inner.jsgf == other.inner.jsgf
    }
}

impl Hash for Grammar {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.jsgf.hash(state);
    }
}

impl Grammar {
    /// Compiles `phrases` against `model`'s dictionary.
    ///
    /// Each phrase is normalised: lowercase; split on anything but letters, digits and
    /// apostrophes; digit strings spoken digit by digit ("42" → "four two"); words the
    /// dictionary lacks are dropped from the phrase and listed in
    /// [`unknown_words`](Self::unknown_words). Phrases left empty, and duplicates, are dropped.
    /// Errors when nothing is left, or on more than [`MAX_PHRASES`] phrases.
    pub fn from_phrases<S: AsRef<str>>(
        model: &SphinxModel,
        phrases: &[S],
    ) -> Result<Grammar, SttError> {
        if phrases.len() > MAX_PHRASES {
            return Err(SttError::Grammar(format!(
                "{} phrases, at most {MAX_PHRASES}",
                phrases.len()
            )));
        }
        let dict = &model.inner.dictionary;
        let mut kept: Vec<String> = Vec::new();
        let mut unknown = BTreeSet::new();
        let mut used = BTreeSet::new();
        for phrase in phrases {
            let mut words = Vec::new();
            for word in normalize(phrase.as_ref())
                .into_iter()
                .take(MAX_PHRASE_WORDS)
            {
                if dict.contains_key(&word) {
                    used.insert(word.clone());
                    words.push(word);
                } else {
                    unknown.insert(word);
                }
            }
            let joined = words.join(" ");
            if !joined.is_empty() && !kept.contains(&joined) {
                kept.push(joined);
            }
        }
        if kept.is_empty() {
            return Err(SttError::Grammar(
                "no phrase has a word the dictionary knows".into(),
            ));
        }
        let mut lexicon = Vec::new();
        for word in &used {
            for (i, phones) in dict.get(word).into_iter().flatten().enumerate() {
                let entry = if i == 0 {
                    word.clone()
                } else {
                    format!("{word}({})", i + 1)
                };
                lexicon.push((entry, phones.clone()));
            }
        }
        let mut jsgf = String::from("#JSGF V1.0;\ngrammar vaani;\npublic <utterance> = ");
        jsgf.push_str(&kept.join(" | "));
        jsgf.push_str(";\n");
        Ok(Grammar {
            inner: Arc::new(GrammarInner {
                phrases: kept,
                unknown: unknown.into_iter().collect(),
                jsgf: jsgf.into(),
                lexicon,
            }),
        })
    }

    /// The phrases it recognizes, normalised, in the order given.
    pub fn phrases(&self) -> &[String] {
        &self.inner.phrases
    }

    /// Words dropped because the dictionary lacks them (sorted, unique).
    pub fn unknown_words(&self) -> &[String] {
        &self.inner.unknown
    }

    /// The JSGF text handed to pocketsphinx.
    pub fn jsgf(&self) -> &str {
        &self.inner.jsgf
    }
}

/// Lowercase words of `text`: split on anything but letters, digits and apostrophes, outer
/// apostrophes trimmed, digit strings spelled digit by digit.
pub fn normalize(text: &str) -> Vec<String> {
    const DIGITS: [&str; 10] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    let mut out = Vec::new();
    for token in text.split(|c: char| !(c.is_alphanumeric() || c == '\'')) {
        let token = token.trim_matches('\'');
        if token.is_empty() {
            continue;
        }
        if token.bytes().all(|b| b.is_ascii_digit()) {
            out.extend(
                token
                    .bytes()
                    .map(|b| DIGITS[usize::from(b - b'0')].to_string()),
            );
        } else {
            out.push(token.to_lowercase());
        }
    }
    out
}

/// Parses a CMUdict-format dictionary: `word PH ON ES`, variants as `word(2)`; `;;;` comments.
fn parse_dictionary(text: &str) -> HashMap<String, Vec<String>> {
    let mut dict: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines() {
        if line.starts_with(";;;") {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(entry), Some(first)) = (parts.next(), parts.next()) else {
            continue;
        };
        let word = match entry.find('(') {
            Some(i) if entry.ends_with(')') => &entry[..i],
            _ => entry,
        };
        if word.is_empty() || word.starts_with('+') {
            continue;
        }
        let mut phones = first.to_string();
        for p in parts {
            if p.starts_with('#') {
                break; // trailing comment
            }
            phones.push(' ');
            phones.push_str(p);
        }
        dict.entry(word.to_string()).or_default().push(phones);
    }
    dict
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A model over a small in-memory dictionary (grammar compilation never touches the
    /// acoustic model, so none is needed).
    fn tiny_model() -> SphinxModel {
        let dictionary = parse_dictionary(
            ";;; test\n\
             yes Y EH S\n\
             no N OW\n\
             check CH EH K\n\
             my M AY\n\
             balance B AE L AH N S\n\
             one W AH N\n\
             one(2) HH W AH N\n\
             two T UW\n\
             four F AO R\n\
             don't D OW N T\n\
             talk T AO K\n\
             to T UW\n\
             to(2) T IH\n\
             to(3) T AH\n\
             an AE N\n\
             agent EY JH AH N T\n",
        );
        SphinxModel {
            inner: Arc::new(ModelInner {
                config: SphinxConfig::from_dir("/nonexistent"),
                dictionary,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    #[test]
    fn normalize_lowercases_splits_and_spells_digits() {
        assert_eq!(
            normalize("Check MY balance, please!"),
            ["check", "my", "balance", "please"]
        );
        assert_eq!(normalize("press 42"), ["press", "four", "two"]);
        assert_eq!(normalize("'don't' -- stop"), ["don't", "stop"]);
        assert_eq!(normalize("  \t\n"), Vec::<String>::new());
        assert_eq!(normalize("naïve café"), ["naïve", "café"]);
        assert_eq!(normalize("<utterance> = a | b;"), ["utterance", "a", "b"]);
    }

    #[test]
    fn dictionary_parsing_keeps_variants_in_order_and_skips_junk() {
        let d = parse_dictionary(
            "to T UW\nto(2) T IH\n;;; comment\n\n  \nlonely\n(2) X\nword W ER D # note\n",
        );
        assert_eq!(d["to"], ["T UW", "T IH"]);
        assert_eq!(d["word"], ["W ER D"]);
        assert!(!d.contains_key("lonely") && !d.contains_key(""));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn grammar_keeps_known_words_and_reports_the_rest() {
        let model = tiny_model();
        let g = Grammar::from_phrases(
            &model,
            &[
                "Yes",
                "no!",
                "Check my balance please",
                "yes",
                "talk to an agent",
                "1 2 4",
                "zebra",
            ],
        )
        .unwrap();
        assert_eq!(
            g.phrases(),
            [
                "yes",
                "no",
                "check my balance",
                "talk to an agent",
                "one two four"
            ]
        );
        assert_eq!(g.unknown_words(), ["please", "zebra"]);
        assert_eq!(
            g.jsgf(),
            "#JSGF V1.0;\ngrammar vaani;\npublic <utterance> = yes | no | check my balance | \
             talk to an agent | one two four;\n"
        );
        // Every pronunciation variant of every used word goes to the decoder.
        let entries: Vec<&str> = g.inner.lexicon.iter().map(|(w, _)| w.as_str()).collect();
        for w in ["one", "one(2)", "to", "to(2)", "to(3)", "agent", "four"] {
            assert!(entries.contains(&w), "{w} missing from {entries:?}");
        }
        assert!(!entries.contains(&"zebra"));
    }

    #[test]
    fn grammar_errors_are_typed() {
        let model = tiny_model();
        assert!(matches!(
            Grammar::from_phrases(&model, &["zebra crossing", "", "!!!"]),
            Err(SttError::Grammar(_))
        ));
        assert!(matches!(
            Grammar::from_phrases::<&str>(&model, &[]),
            Err(SttError::Grammar(_))
        ));
        let many = vec!["yes"; MAX_PHRASES + 1];
        assert!(matches!(
            Grammar::from_phrases(&model, &many),
            Err(SttError::Grammar(_))
        ));
        let long = "yes ".repeat(MAX_PHRASE_WORDS + 10);
        let g = Grammar::from_phrases(&model, &[long]).unwrap();
        assert_eq!(g.phrases()[0].split(' ').count(), MAX_PHRASE_WORDS);
    }

    #[test]
    fn equal_phrase_lists_share_a_pool_key() {
        let model = tiny_model();
        let a = Grammar::from_phrases(&model, &["yes", "no"]).unwrap();
        let b = Grammar::from_phrases(&model, &["YES", "No."]).unwrap();
        let c = Grammar::from_phrases(&model, &["no", "yes"]).unwrap();
        assert_eq!(a, b);
        assert_eq!(SearchKey::of(Some(&a)), SearchKey::of(Some(&b)));
        assert_ne!(SearchKey::of(Some(&a)), SearchKey::of(Some(&c)));
        assert_ne!(SearchKey::of(Some(&a)), SearchKey::of(None));
    }

    #[test]
    fn missing_model_files_are_reported_by_path() {
        let err = SphinxModel::load(SphinxConfig::from_dir("/nonexistent/model")).unwrap_err();
        assert_eq!(
            err,
            SttError::ModelMissing(PathBuf::from("/nonexistent/model/en-us/mdef"))
        );
    }

    #[test]
    fn confidence_is_bounded_and_monotonic() {
        assert!(confidence_of(1.0, -5.0) > 0.9);
        assert!(confidence_of(0.2, -5.0) < 0.25);
        assert!(confidence_of(1.0, -80.0) < 0.01);
        assert!(confidence_of(1.0, -10.0) > confidence_of(1.0, -20.0));
        for (c, g) in [
            (f64::NAN, 0.0),
            (5.0, 100.0),
            (-1.0, -1e9),
            (1.0, f64::INFINITY),
        ] {
            let x = confidence_of(c, g);
            assert!((0.0..=1.0).contains(&x), "{c} {g} → {x}");
        }
    }

    proptest! {
        #[test]
        fn normalize_and_grammar_never_panic(phrases in prop::collection::vec(".{0,60}", 0..12)) {
            let words = phrases.iter().flat_map(|p| normalize(p)).collect::<Vec<_>>();
            for w in &words {
                prop_assert!(!w.is_empty());
                prop_assert!(w.chars().all(|c| c.is_alphanumeric() || c == '\''));
            }
            let _ = Grammar::from_phrases(&tiny_model(), &phrases);
        }

        #[test]
        fn dictionary_parsing_never_panics(text in ".{0,400}") {
            let _ = parse_dictionary(&text);
        }
    }
}

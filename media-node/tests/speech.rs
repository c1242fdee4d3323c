//! The offline speech engines on the real libraries and real audio: espeak-ng speaks, the VAD
//! finds the speech, pocketsphinx recognizes it; and recorded human speech (Debian's
//! `asterisk-core-sounds-en-wav`, with transcripts from `asterisk-core-sounds-en`) through the
//! VAD and the recognizer.
//!
//! Needs the Debian packages `espeak-ng`, `pocketsphinx-en-us` and the asterisk sounds (what
//! `scripts/test.sh` installs). A missing one skips the tests that need it with a message, unless
//! `VAANI_REQUIRE_SPEECH=1` (set by `scripts/test.sh`), which turns the skip into a failure.
//!
//! `measure_offline_speech` (ignored) prints the numbers in `bench/README.md`:
//! `cargo test -p vaani-media --test speech --config 'profile.dev.package.vaani-media.opt-level=3'
//!  -- --ignored --nocapture measure`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use vaani_media::codec::{Resampler, SampleRate, FRAME_SAMPLES};
use vaani_media::services::stt::{Grammar, SphinxConfig, SphinxModel, SttError};
use vaani_media::services::tts::{EspeakTts, TtsError};
use vaani_media::services::vad::{Vad, VadMode};

const SOUNDS: &str = "/usr/share/asterisk/sounds/en";
const TRANSCRIPTS: &str = "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz";

/// The grammar of the task: what a caller to the sample agent says.
const PHRASES: [&str; 10] = [
    "I have a question about my bill",
    "yes",
    "no",
    "talk to an agent",
    "check my balance",
    "one two three",
    "cancel my order",
    "what are your opening hours",
    "I want to pay",
    "repeat that",
];

/// Speech that is none of [`PHRASES`].
const UNRELATED: [&str; 8] = [
    "what is the weather like today",
    "my name is john",
    "hello there",
    "the cat sat on the mat",
    "please send me a new card",
    "i would like to book a flight to delhi",
    "bill",
    "question",
];

/// Whether a resource is there; if not, skip (or fail under VAANI_REQUIRE_SPEECH=1).
fn available(what: &str, ok: bool) -> bool {
    if !ok {
        if std::env::var("VAANI_REQUIRE_SPEECH").is_ok_and(|v| v == "1") {
            panic!("{what} missing and VAANI_REQUIRE_SPEECH=1 (run scripts/test.sh to install)");
        }
        eprintln!("SKIP: {what} missing (apt-get install espeak-ng pocketsphinx-en-us asterisk-core-sounds-en-wav asterisk-core-sounds-en)");
    }
    ok
}

fn espeak(voice: &str, rate: u32) -> Option<EspeakTts> {
    match EspeakTts::new(voice, rate) {
        Ok(t) => Some(t),
        Err(TtsError::Init(e)) => {
            available(&format!("espeak-ng data ({e})"), false);
            None
        }
        Err(e) => panic!("{voice}: {e}"),
    }
}

fn model() -> Option<&'static SphinxModel> {
    static MODEL: OnceLock<Result<SphinxModel, SttError>> = OnceLock::new();
    match MODEL.get_or_init(SphinxModel::load_default) {
        Ok(m) => Some(m),
        Err(e) => {
            available(&format!("pocketsphinx-en-us ({e})"), false);
            None
        }
    }
}

/// `pcm` with `lead` and `tail` ms of silence around it.
fn padded(pcm: &[i16], lead: usize, tail: usize) -> Vec<i16> {
    let mut out = vec![0i16; lead * 16];
    out.extend_from_slice(pcm);
    out.extend(std::iter::repeat_n(0, tail * 16));
    out
}

/// A deterministic white noise of the given peak amplitude (xorshift).
fn noise(seed: u64, amplitude: i16, samples: usize) -> Vec<i16> {
    let mut x = seed | 1;
    (0..samples)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x % (2 * amplitude as u64 + 1)) as i64 - i64::from(amplitude)) as i16
        })
        .collect()
}

fn mix(a: &mut [i16], b: &[i16]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.saturating_add(*y);
    }
}

fn frames(pcm: &[i16]) -> impl Iterator<Item = [i16; FRAME_SAMPLES]> + '_ {
    pcm.chunks(FRAME_SAMPLES).map(|c| {
        let mut f = [0i16; FRAME_SAMPLES];
        f[..c.len()].copy_from_slice(c);
        f
    })
}

/// Reads a 16-bit mono PCM WAV at 8 or 16 kHz as 16 kHz samples.
fn read_wav_16k(path: &Path) -> Option<Vec<i16>> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.get(0..4)? != b"RIFF" || bytes.get(8..12)? != b"WAVE" {
        return None;
    }
    let (mut pos, mut rate, mut data) = (12usize, None, None);
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().ok()?) as usize;
        let body = bytes.get(pos + 8..(pos + 8 + len).min(bytes.len()))?;
        match id {
            b"fmt " => {
                let format = u16::from_le_bytes(body.get(0..2)?.try_into().ok()?);
                let channels = u16::from_le_bytes(body.get(2..4)?.try_into().ok()?);
                let hz = u32::from_le_bytes(body.get(4..8)?.try_into().ok()?);
                let bits = u16::from_le_bytes(body.get(14..16)?.try_into().ok()?);
                if format != 1 || channels != 1 || bits != 16 {
                    return None;
                }
                rate = SampleRate::from_hz(hz);
            }
            b"data" => data = Some(body),
            _ => {}
        }
        pos += 8 + len + (len & 1);
    }
    let samples: Vec<i16> = data?
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let mut r = Resampler::new(rate?, SampleRate::Hz16000);
    let mut out = vec![0i16; r.output_len(samples.len())];
    let n = r.process(&samples, &mut out).ok()?;
    out.truncate(n);
    Some(out)
}

/// Short recorded prompts (≤ `max_words` words, no bracketed sound descriptions) with their
/// transcripts, as 16 kHz PCM; sorted by name.
fn recorded_prompts(max_words: usize) -> Option<Vec<(String, String, Vec<i16>)>> {
    let ok = Path::new(SOUNDS).is_dir() && Path::new(TRANSCRIPTS).is_file();
    if !available("asterisk-core-sounds-en(-wav)", ok) {
        return None;
    }
    let out = std::process::Command::new("gzip")
        .args(["-dc", TRANSCRIPTS])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut prompts = BTreeMap::new();
    for line in text.lines() {
        let Some((name, said)) = line.split_once(": ") else {
            continue;
        };
        let words = said.split_whitespace().count();
        let described = said.contains('[') || said.contains('<');
        if name.contains('/') || described || words == 0 || words > max_words {
            continue;
        }
        if let Some(pcm) = read_wav_16k(&Path::new(SOUNDS).join(format!("{name}.wav"))) {
            prompts.insert(name.to_string(), (said.to_string(), pcm));
        }
    }
    Some(prompts.into_iter().map(|(n, (t, p))| (n, t, p)).collect())
}

/// Word error rate of `hyp` against `reference` (both normalised): edit distance / words.
fn wer(reference: &[String], hyp: &[String]) -> (usize, usize) {
    let mut row: Vec<usize> = (0..=hyp.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, h) in hyp.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(r != h)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    (row[hyp.len()], reference.len())
}

fn norm(text: &str) -> Vec<String> {
    vaani_media::services::stt::sphinx::normalize(text)
}

/// Recognizes `pcm` (pushed in 20 ms frames) with a fresh utterance on `stream`.
fn recognize(
    stream: &mut vaani_media::services::stt::SphinxStream,
    pcm: &[i16],
) -> Option<vaani_media::services::stt::Recognized> {
    for f in pcm.chunks(FRAME_SAMPLES) {
        stream.push(f).unwrap();
    }
    stream.finish().unwrap()
}

// --- TTS ----------------------------------------------------------------------------------------

#[test]
fn espeak_speaks_16k_pcm_of_plausible_length() {
    let Some(tts) = espeak("en-us", 175) else {
        return;
    };
    let pcm = tts.synthesize("I have a question about my bill.").unwrap();
    let seconds = pcm.len() as f64 / 16_000.0;
    assert!((1.0..3.5).contains(&seconds), "{seconds} s");
    let rms = (pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
    assert!(rms > 500.0, "rms {rms}");
    // Slower speech is longer.
    let slow = espeak("en-us", 100)
        .unwrap()
        .synthesize("I have a question about my bill.");
    assert!(slow.unwrap().len() as f64 > pcm.len() as f64 * 1.3);
    // Nothing to say, nothing spoken; controls are not spoken.
    assert_eq!(tts.synthesize(" \n\t\u{0}").unwrap(), Vec::<i16>::new());
    // (espeak-ng carries a little state between calls, e.g. its pitch flutter phase, so two
    // syntheses of one text differ by a few samples: compare lengths.)
    let with_controls = tts.synthesize("yes\u{0}\u{7}\u{1b}").unwrap().len() as f64;
    let plain = tts.synthesize("yes").unwrap().len() as f64;
    assert!(
        (with_controls / plain - 1.0).abs() < 0.02,
        "{with_controls} vs {plain}"
    );
}

#[test]
fn espeak_voices_errors_and_markup() {
    let Some(_) = espeak("en-us", 175) else {
        return;
    };
    assert_eq!(
        EspeakTts::new("no-such-voice", 175).unwrap_err(),
        TtsError::UnknownVoice("no-such-voice".into())
    );
    assert!(matches!(
        EspeakTts::new("en-us", 500),
        Err(TtsError::InvalidRate { .. })
    ));
    let hindi = espeak("hi", 160)
        .unwrap()
        .synthesize("नमस्ते, आपका स्वागत है")
        .unwrap();
    assert!(hindi.len() > 8_000);
    // SSML is off: tags are read as text (espeak says the symbols' names or skips them), never
    // interpreted: a <break> does not add its 5 s of silence.
    let tts = espeak("en-us", 175).unwrap();
    let tagged = tts.synthesize("yes <break time=\"5s\"/> no").unwrap();
    assert!(tagged.len() < 16_000 * 4, "{} samples", tagged.len());
}

#[test]
fn espeak_is_safe_across_threads() {
    let Some(tts) = espeak("en-us", 175) else {
        return;
    };
    let expected = tts.synthesize("check my balance").unwrap().len() as f64;
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let voice = if i % 2 == 0 { "en-us" } else { "en" };
            std::thread::spawn(move || {
                let t = EspeakTts::new(voice, if i < 2 { 120 } else { 250 }).unwrap();
                let other = t.synthesize("talk to an agent").unwrap();
                let mine = EspeakTts::new("en-us", 175).unwrap();
                (
                    other.len(),
                    mine.synthesize("check my balance").unwrap().len() as f64,
                )
            })
        })
        .collect();
    for h in handles {
        let (other, mine) = h.join().unwrap();
        assert!(other > 8_000);
        // Interleaved voice/rate switches by other threads never leak into this one: the other
        // threads' rates (120, 250 wpm) would change the length by 25 % or more. (Not exact:
        // espeak-ng keeps some state across voice switches; the same en-us sentence measured
        // up to 4 % longer after another voice had been used.)
        assert!((mine / expected - 1.0).abs() < 0.08, "{mine} vs {expected}");
    }
}

#[test]
fn espeak_never_panics_on_odd_text() {
    let Some(tts) = espeak("en-us", 450) else {
        return;
    };
    for text in [
        "]]]] [[[[ ((( ",
        "[[h@'loU]]",
        "&amp; &lt; <speak>",
        "\u{feff}\u{200b}\u{202e}rtl",
        "😀🎉 🤖",
        "0000000000000000000000000000",
        "a\u{0301}\u{0301}\u{0301}",
        &"x".repeat(2_000),
    ] {
        let _ = tts.synthesize(text).unwrap();
    }
}

// --- VAD ----------------------------------------------------------------------------------------

#[test]
fn vad_finds_synthesized_speech_between_silences() {
    let Some(tts) = espeak("en-us", 175) else {
        return;
    };
    let speech = tts.synthesize("I have a question about my bill").unwrap();
    let mut pcm = padded(&speech, 1_000, 1_000);
    // A faint line hiss under everything (-50 dBFS), as on a real call.
    let hiss = noise(3, 100, pcm.len());
    mix(&mut pcm, &hiss);
    let (lead, body) = (50, speech.len() / FRAME_SAMPLES);
    for mode in VadMode::ALL {
        let mut vad = Vad::new(mode);
        let flags: Vec<bool> = frames(&pcm).map(|f| vad.is_speech(&f)).collect();
        let early_silence = flags[10..lead].iter().filter(|&&s| s).count();
        let in_speech = flags[lead..lead + body].iter().filter(|&&s| s).count();
        let late_silence = flags[lead + body + 15..].iter().filter(|&&s| s).count();
        assert_eq!(
            early_silence + late_silence,
            0,
            "{mode}: speech called in silence"
        );
        assert!(
            in_speech * 10 >= body * 7,
            "{mode}: {in_speech}/{body} speech frames"
        );
    }
}

#[test]
fn vad_on_recorded_prompts() {
    let Some(prompts) = recorded_prompts(6) else {
        return;
    };
    assert!(prompts.len() > 100, "{} prompts", prompts.len());
    for mode in [VadMode::Quality, VadMode::VeryAggressive] {
        let (mut voiced, mut total, mut false_alarms, mut silent_frames) = (0, 0, 0, 0);
        for (name, _, pcm) in &prompts {
            let mut vad = Vad::new(mode);
            let mut padded = padded(pcm, 500, 500);
            let hiss = noise(name.len() as u64, 60, padded.len());
            mix(&mut padded, &hiss);
            let flags: Vec<bool> = frames(&padded).map(|f| vad.is_speech(&f)).collect();
            // The 500 ms of hiss before the prompt, after the first 200 ms of adaptation.
            false_alarms += flags[10..25].iter().filter(|&&s| s).count();
            silent_frames += 15;
            let body = &flags[25..25 + pcm.len() / FRAME_SAMPLES];
            voiced += body.iter().filter(|&&s| s).count();
            total += body.len();
            assert!(body.iter().any(|&s| s), "{mode}: no speech found in {name}");
        }
        let share = voiced as f64 / total as f64;
        eprintln!(
            "VAD {mode}: {:.1} % of {total} prompt frames voiced, {false_alarms}/{silent_frames} hiss frames",
            share * 100.0
        );
        // Prompts include their own pauses and silent ends, so not every frame is voiced.
        assert!(share > 0.5, "{mode}: {share}");
        assert_eq!(false_alarms, 0, "{mode}");
    }
}

#[test]
fn vad_modes_differ_on_loud_noise() {
    // Steady white noise at -30 dBFS: the aggressive modes must call less of it speech than
    // mode 0 does; the most aggressive almost none once adapted.
    let pcm = noise(11, 1_000, 16_000 * 3);
    let mut share = Vec::new();
    for mode in VadMode::ALL {
        let mut vad = Vad::new(mode);
        let flags: Vec<bool> = frames(&pcm).map(|f| vad.is_speech(&f)).collect();
        share.push(flags[25..].iter().filter(|&&s| s).count() as f64 / (flags.len() - 25) as f64);
    }
    eprintln!("VAD on white noise, share called speech per mode 0..3: {share:?}");
    assert!(share[3] <= share[0], "{share:?}");
    assert!(share[3] < 0.1, "{share:?}");
}

// --- STT ----------------------------------------------------------------------------------------

#[test]
fn sphinx_grammar_recognizes_every_phrase_and_rejects_unrelated_speech() {
    let (Some(model), Some(tts)) = (model(), espeak("en-us", 175)) else {
        return;
    };
    let grammar = Grammar::from_phrases(model, &PHRASES).unwrap();
    assert!(grammar.unknown_words().is_empty());
    let mut stream = model.stream(Some(&grammar)).unwrap();
    for phrase in PHRASES {
        let pcm = padded(&tts.synthesize(phrase).unwrap(), 300, 300);
        let got = recognize(&mut stream, &pcm);
        let got = got.unwrap_or_else(|| panic!("{phrase:?} not recognized"));
        assert_eq!(got.text, norm(phrase).join(" "), "{got:?}");
        assert!(got.confidence > 0.8, "{phrase}: {got:?}");
    }
    // espeak-ng's output varies a little with what the process synthesised before (other
    // tests, other voices): at most one unrelated sentence may slip through, as the
    // cross-voice test below measures (1 of 40 there).
    let accepted: Vec<String> = UNRELATED
        .iter()
        .filter_map(|phrase| {
            let pcm = padded(&tts.synthesize(phrase).unwrap(), 300, 300);
            recognize(&mut stream, &pcm).map(|got| format!("{phrase:?} → {got:?}"))
        })
        .collect();
    assert!(
        accepted.len() <= 1,
        "taken for grammar phrases: {accepted:?}"
    );
    // Silence is nothing.
    assert_eq!(recognize(&mut stream, &vec![0i16; 16_000]), None);
}

#[test]
fn sphinx_grammar_across_voices_and_rates() {
    let Some(model) = model() else { return };
    let grammar = Grammar::from_phrases(model, &PHRASES).unwrap();
    let mut stream = model.stream(Some(&grammar)).unwrap();
    let (mut right, mut total, mut false_accepts) = (0, 0, 0);
    let mut misses = Vec::new();
    for (voice, rate) in [
        ("en-us", 140),
        ("en-us", 220),
        ("en-us+f3", 175),
        ("en", 175),
    ] {
        let Some(tts) = espeak(voice, rate) else {
            return;
        };
        for phrase in PHRASES {
            let pcm = padded(&tts.synthesize(phrase).unwrap(), 300, 300);
            total += 1;
            match recognize(&mut stream, &pcm) {
                Some(r) if r.text == norm(phrase).join(" ") => right += 1,
                other => misses.push(format!("{voice}@{rate} {phrase:?} → {other:?}")),
            }
        }
        for phrase in UNRELATED {
            let pcm = padded(&tts.synthesize(phrase).unwrap(), 300, 300);
            if let Some(r) = recognize(&mut stream, &pcm) {
                false_accepts += 1;
                misses.push(format!("{voice}@{rate} unrelated {phrase:?} → {r:?}"));
            }
        }
    }
    eprintln!("grammar, 4 voices/rates: {right}/{total} phrases right, {false_accepts}/32 unrelated accepted");
    for m in &misses {
        eprintln!("  {m}");
    }
    // Measured over runs (espeak varies slightly from call to call): 35–38 of 40 right,
    // 1–2 of 32 unrelated accepted. The British voice is the weak one.
    assert!(right * 100 >= total * 80, "{right}/{total}: {misses:#?}");
    assert!(false_accepts <= 4, "{misses:#?}");
}

#[test]
fn sphinx_grammar_on_recorded_prompts() {
    let (Some(model), Some(prompts)) = (model(), recorded_prompts(5)) else {
        return;
    };
    // One grammar over every short prompt the dictionary can spell (~150 phrases: a much
    // harder grammar than an agent's), each recording recognized against it.
    let usable: Vec<_> = prompts
        .iter()
        .filter(|(_, said, _)| norm(said).iter().all(|w| model.knows(w)))
        .collect();
    let texts: Vec<&str> = usable.iter().map(|(_, said, _)| said.as_str()).collect();
    let grammar = Grammar::from_phrases(model, &texts).unwrap();
    let mut stream = model.stream(Some(&grammar)).unwrap();
    let (mut right, mut rejected, mut wrong) = (0, 0, Vec::new());
    for (name, said, pcm) in &usable {
        match recognize(&mut stream, pcm) {
            Some(r) if r.text == norm(said).join(" ") => right += 1,
            None => rejected += 1,
            Some(r) => wrong.push(format!(
                "{name}: {said:?} → {:?} ({:.2})",
                r.text, r.confidence
            )),
        }
    }
    let n = usable.len();
    eprintln!(
        "recorded prompts, grammar of {} phrases: {right}/{n} right, {rejected} rejected, {} wrong",
        grammar.phrases().len(),
        wrong.len()
    );
    for w in &wrong {
        eprintln!("  {w}");
    }
    assert!(n > 100, "{n}");
    // Measured: 154/170 right, 3 rejected, 13 wrong, nearly all near-homophones that a real
    // agent's grammar would not hold side by side (minute/minutes, second/seconds, for/four).
    assert!(right * 100 >= n * 85, "{right}/{n}");
    assert!(wrong.len() * 100 <= n * 10, "{wrong:#?}");
}

#[test]
fn sphinx_streams_partials_reuse_and_pooling() {
    let (Some(model), Some(tts)) = (model(), espeak("en-us", 175)) else {
        return;
    };
    let model = SphinxModel::load(SphinxConfig {
        max_idle_decoders: 2,
        ..model.config().clone()
    })
    .unwrap();
    let grammar = Grammar::from_phrases(&model, &PHRASES).unwrap();
    let pcm = padded(
        &tts.synthesize("I have a question about my bill").unwrap(),
        200,
        300,
    );
    let mut stream = model.stream(Some(&grammar)).unwrap();
    assert_eq!(stream.partial(), None);
    let mut partials = Vec::new();
    for f in pcm.chunks(FRAME_SAMPLES) {
        stream.push(f).unwrap();
        partials.extend(stream.partial());
    }
    assert!(!partials.is_empty());
    assert!(stream.utterance_ms() >= pcm.len() as u64 / 16 - 1);
    let r = stream.finish().unwrap().unwrap();
    assert_eq!(r.text, "i have a question about my bill");
    assert_eq!(stream.finish().unwrap(), None, "second finish is empty");
    // The next utterance on the same stream.
    let yes = padded(&tts.synthesize("yes").unwrap(), 200, 300);
    assert_eq!(recognize(&mut stream, &yes).unwrap().text, "yes");
    // Dropped mid-utterance: both decoders go back to the pool, and are taken again.
    stream.push(&yes[..3_200]).unwrap();
    drop(stream);
    assert_eq!(model.idle_decoders(), 2);
    let mut again = model.stream(Some(&grammar)).unwrap();
    assert_eq!(model.idle_decoders(), 0);
    // A stream moves to another thread (the pipeline runs it on a blocking worker).
    let text = std::thread::spawn(move || recognize(&mut again, &yes).map(|r| r.text))
        .join()
        .unwrap();
    assert_eq!(text.as_deref(), Some("yes"));
    // A second grammar gets its own decoder; the pool stays bounded.
    let other = Grammar::from_phrases(&model, &["yes", "no"]).unwrap();
    model.prewarm(Some(&other), 5).unwrap();
    assert_eq!(model.idle_decoders(), 2);
}

#[test]
fn sphinx_open_vocabulary_hears_words() {
    let (Some(model), Some(prompts)) = (model(), recorded_prompts(5)) else {
        return;
    };
    let mut stream = match model.stream(None) {
        Ok(s) => s,
        Err(SttError::ModelMissing(p)) => {
            available(&format!("language model {}", p.display()), false);
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let (mut errors, mut words) = (0, 0);
    for (_, said, pcm) in prompts.iter().step_by(8) {
        let r = recognize(&mut stream, pcm);
        assert!(r.as_ref().is_none_or(|r| r.confidence == 1.0));
        let (e, w) = wer(&norm(said), &r.map(|r| norm(&r.text)).unwrap_or_default());
        errors += e;
        words += w;
    }
    let wer = errors as f64 / words as f64;
    eprintln!(
        "open vocabulary on recorded prompts: WER {:.0} % ({errors}/{words})",
        wer * 100.0
    );
    // The generic wideband model is weak here: short out-of-context prompts recorded at 8 kHz
    // (no energy above 4 kHz, which the 16 kHz model expects). Measured 87–88 % WER on such
    // subset (the pocketsphinx_continuous CLI does no better on the same files); it must still
    // get some words right.
    assert!(errors < words, "WER {wer}");
}

// --- numbers for bench/README.md ------------------------------------------------------------------

fn rss_kib() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
#[ignore = "measurement: run alone with --ignored --nocapture (see the module docs)"]
fn measure_offline_speech() {
    let (Some(model), Some(tts)) = (model(), espeak("en-us", 175)) else {
        return;
    };
    // TTS: ms per sentence.
    let sentences = [
        "Thank you for calling, how can I help you today?",
        "Your current balance is four hundred and twenty rupees.",
        "I am transferring you to an agent now, please stay on the line.",
        "Yes.",
    ];
    let mut audio_ms = 0.0;
    let t = Instant::now();
    for _ in 0..5 {
        for s in sentences {
            audio_ms += tts.synthesize(s).unwrap().len() as f64 / 16.0;
        }
    }
    let ms = t.elapsed().as_secs_f64() * 1e3 / 20.0;
    eprintln!(
        "TTS: {ms:.1} ms per sentence (avg {:.0} ms of audio each)",
        audio_ms / 20.0
    );

    // VAD: cost per 20 ms frame.
    let speech = tts.synthesize(sentences[0]).unwrap();
    let mut vad = Vad::new(VadMode::Aggressive);
    let all: Vec<_> = frames(&speech).collect();
    let t = Instant::now();
    let mut voiced = 0;
    for _ in 0..50 {
        for f in &all {
            voiced += usize::from(vad.is_speech(f));
        }
    }
    let ns = t.elapsed().as_secs_f64() * 1e9 / (50 * all.len()) as f64;
    eprintln!("VAD: {ns:.0} ns per 20 ms frame ({voiced} voiced)");

    // Decoder construction and memory.
    let grammar = Grammar::from_phrases(model, &PHRASES).unwrap();
    let cold = SphinxModel::load(SphinxConfig {
        max_idle_decoders: 64,
        ..model.config().clone()
    })
    .unwrap();
    let before = rss_kib();
    let t = Instant::now();
    cold.prewarm(Some(&grammar), 10).unwrap();
    let per_stream_ms = t.elapsed().as_secs_f64() * 1e3 / 10.0;
    let per_stream_mib = (rss_kib() - before) as f64 / 1024.0 / 10.0;
    eprintln!(
        "grammar stream (grammar decoder + phone loop): {per_stream_ms:.0} ms to build, {per_stream_mib:.1} MiB"
    );
    let before = rss_kib();
    let t = Instant::now();
    cold.prewarm(None, 2).unwrap();
    eprintln!(
        "open-vocabulary decoder: {:.0} ms to build, {:.0} MiB",
        t.elapsed().as_secs_f64() * 1e3 / 2.0,
        (rss_kib() - before) as f64 / 1024.0 / 2.0
    );

    // Grammar decoding: accuracy and real-time factor on synthesized phrases.
    let mut stream = cold.stream(Some(&grammar)).unwrap();
    let (mut audio, mut cpu, mut right, mut total) = (0.0, 0.0, 0, 0);
    let mut confidences = Vec::new();
    for (voice, rate) in [
        ("en-us", 140),
        ("en-us", 175),
        ("en-us", 220),
        ("en-us+f3", 175),
        ("en", 175),
    ] {
        let v = EspeakTts::new(voice, rate).unwrap();
        for phrase in PHRASES.iter().chain(UNRELATED.iter()) {
            let pcm = padded(&v.synthesize(phrase).unwrap(), 300, 300);
            let t = Instant::now();
            for f in pcm.chunks(FRAME_SAMPLES) {
                stream.push(f).unwrap();
            }
            let r = stream.finish_unfiltered().unwrap();
            cpu += t.elapsed().as_secs_f64();
            audio += pcm.len() as f64 / 16_000.0;
            let in_grammar = PHRASES.contains(phrase);
            let text = r.as_ref().map(|r| r.text.clone());
            let conf = r.as_ref().map_or(0.0, |r| r.confidence);
            confidences.push((in_grammar, conf, r.as_ref().map_or(0.0, |r| r.coverage)));
            if in_grammar {
                total += 1;
                right += usize::from(text == Some(norm(phrase).join(" ")) && conf >= 0.6);
            }
        }
    }
    eprintln!(
        "grammar on espeak (5 voices/rates): {right}/{total} right; RTF {:.3}",
        cpu / audio
    );
    let accepted = confidences.iter().filter(|c| !c.0 && c.1 >= 0.6).count();
    let unrelated = confidences.iter().filter(|c| !c.0).count();
    eprintln!("unrelated accepted at confidence 0.6: {accepted}/{unrelated}");
    let max_out = confidences
        .iter()
        .filter(|c| !c.0)
        .map(|c| c.1)
        .fold(0.0, f64::max);
    let min_in = confidences
        .iter()
        .filter(|c| c.0)
        .map(|c| c.1)
        .fold(1.0, f64::min);
    eprintln!("confidence: in-grammar min {min_in:.2}, unrelated max {max_out:.2}");
    let mut cov_in: Vec<f64> = confidences.iter().filter(|c| c.0).map(|c| c.2).collect();
    let mut cov_out: Vec<f64> = confidences.iter().filter(|c| !c.0).map(|c| c.2).collect();
    cov_in.sort_by(f64::total_cmp);
    cov_out.sort_by(f64::total_cmp);
    eprintln!(
        "coverage: in-grammar {:.2}..{:.2}, unrelated {:.2}..{:.2}",
        cov_in[0],
        cov_in[cov_in.len() - 1],
        cov_out[0],
        cov_out[cov_out.len() - 1]
    );

    // Recorded prompts: grammar accuracy, open-vocabulary WER, RTF of each.
    let Some(prompts) = recorded_prompts(5) else {
        return;
    };
    let usable: Vec<_> = prompts
        .iter()
        .filter(|(_, said, _)| norm(said).iter().all(|w| cold.knows(w)))
        .collect();
    let texts: Vec<&str> = usable.iter().map(|(_, s, _)| s.as_str()).collect();
    let big = Grammar::from_phrases(&cold, &texts).unwrap();
    let mut stream = cold.stream(Some(&big)).unwrap();
    let (mut audio, mut cpu, mut right) = (0.0, 0.0, 0);
    for (_, said, pcm) in &usable {
        let t = Instant::now();
        let r = recognize(&mut stream, pcm);
        cpu += t.elapsed().as_secs_f64();
        audio += pcm.len() as f64 / 16_000.0;
        right += usize::from(r.is_some_and(|r| r.text == norm(said).join(" ")));
    }
    eprintln!(
        "recorded prompts, grammar of {} phrases: {right}/{} right; RTF {:.3}",
        big.phrases().len(),
        usable.len(),
        cpu / audio
    );
    let mut open = cold.stream(None).unwrap();
    let (mut audio, mut cpu, mut errors, mut words) = (0.0, 0.0, 0, 0);
    for (_, said, pcm) in usable.iter().step_by(4) {
        let t = Instant::now();
        let r = recognize(&mut open, pcm);
        cpu += t.elapsed().as_secs_f64();
        audio += pcm.len() as f64 / 16_000.0;
        let (e, w) = wer(&norm(said), &r.map(|r| norm(&r.text)).unwrap_or_default());
        errors += e;
        words += w;
    }
    eprintln!(
        "recorded prompts, open vocabulary: WER {:.1} % ({errors}/{words}); RTF {:.3}",
        100.0 * errors as f64 / words as f64,
        cpu / audio
    );
}

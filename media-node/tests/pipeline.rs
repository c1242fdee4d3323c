//! The call pipeline end to end with fake engines (fixed delays, scripted STT), driven by a
//! simulated media driver that ticks every 20 ms like the RTP and stream drivers do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use vaani_media::agent::AgentSpec;
use vaani_media::pipeline::call::{self, CallIds, CallReport, Input, PipelineConfig};
use vaani_media::pipeline::dialogue::EmbeddedLlm;
use vaani_media::pipeline::engines::{Engines, Speaker};
use vaani_media::pipeline::fake::{DelayedLlm, FakeStt, FakeTts};
use vaani_media::pipeline::out::Outgoing;
use vaani_media::pipeline::vad::EnergyVad;

fn config(stt_lines: &[&str]) -> (PipelineConfig, mpsc::UnboundedReceiver<CallReport>) {
    let spec = AgentSpec::parse(include_str!("../../agents/sample.toml")).unwrap();
    let agent = Arc::new(spec.resolve());
    let (tx, rx) = mpsc::unbounded_channel();
    let cfg = PipelineConfig {
        engines: Engines {
            stt: Arc::new(FakeStt::new(Duration::from_millis(30), stt_lines)),
            llm: Arc::new(DelayedLlm {
                inner: EmbeddedLlm::new(spec),
                delay: Duration::from_millis(20),
                log: None,
            }),
            tts: Arc::new(FakeTts {
                first_byte: Duration::from_millis(10),
                ms_per_char: 10,
                log: None,
            }),
        },
        agent,
        vad: Arc::new(|| Box::new(EnergyVad::new())),
        reports: Some(tx),
        runtime: tokio::runtime::Handle::current(),
    };
    (cfg, rx)
}

/// What the simulated caller does in a tick.
#[derive(Clone, Copy, PartialEq)]
enum Caller {
    Silent,
    Talking,
}

struct Sim {
    link: call::CallLink,
    /// Agent frames received, per tick (true = audio).
    agent_audio: Vec<bool>,
    events: Vec<(usize, Outgoing)>,
    tick: usize,
}

impl Sim {
    async fn run(&mut self, ticks: usize, caller: Caller) {
        let mut interval = tokio::time::interval(Duration::from_millis(20));
        for _ in 0..ticks {
            interval.tick().await;
            let out = self.link.out.take(Instant::now());
            let audible = matches!(out, Some(Outgoing::Audio(_)));
            self.agent_audio.push(audible);
            if let Some(o) = out {
                if !matches!(o, Outgoing::Audio(_)) {
                    self.events.push((self.tick, o));
                }
            }
            let pcm: Vec<i16> = match caller {
                Caller::Silent => vec![0; 320],
                Caller::Talking => (0..320)
                    .map(|i| ((i as f32 * 0.31).sin() * 6000.0) as i16)
                    .collect(),
            };
            self.link.send(Input::Frame {
                pcm,
                agent_audible: audible,
            });
            self.tick += 1;
        }
    }

    /// Ticks until the agent has spoken and then been silent for `quiet` ticks in a row
    /// (max `limit`).
    async fn until_quiet(&mut self, quiet: usize, limit: usize) {
        let from = self.agent_audio.len();
        for _ in 0..limit {
            self.run(1, Caller::Silent).await;
            let n = self.agent_audio.len();
            let spoke = self.audio_ticks_since(from) > 0;
            if spoke && n >= quiet && self.agent_audio[n - quiet..].iter().all(|a| !a) {
                return;
            }
        }
        panic!("the agent never went quiet");
    }

    fn audio_ticks_since(&self, from: usize) -> usize {
        self.agent_audio[from..].iter().filter(|a| **a).count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greets_answers_is_interrupted_and_takes_keys() {
    let (cfg, mut reports) = config(&["I have a question about my bill", "check my balance"]);
    let link = call::start(
        &cfg,
        CallIds {
            call_id: Some("c-1".into()),
            tenant: Some("demo".into()),
            transport_id: "sip-1".into(),
        },
    );
    let mut sim = Sim {
        link,
        agent_audio: Vec::new(),
        events: Vec::new(),
        tick: 0,
    };
    // The greeting plays first.
    sim.until_quiet(10, 500).await;
    let greeting_frames = sim.audio_ticks_since(0);
    assert!(greeting_frames > 20, "greeting: {greeting_frames} frames");

    // The caller asks about the bill; the agent answers with a long reply.
    sim.run(50, Caller::Talking).await;
    let asked_at = sim.tick;
    sim.run(60, Caller::Silent).await;
    assert!(
        sim.audio_ticks_since(asked_at) > 0,
        "no reply to the billing question"
    );

    // Interrupt it: a second of speech over the agent.
    let barge_at = sim.tick;
    sim.run(50, Caller::Talking).await;
    let cleared = sim
        .events
        .iter()
        .find(|(t, o)| *t >= barge_at && *o == Outgoing::Clear)
        .map(|(t, _)| *t)
        .expect("the agent was not cleared");
    // min_interruption_ms of the preset is 450 ms: the clear comes after about that.
    assert!(
        cleared - barge_at <= 40,
        "cleared after {} ticks",
        cleared - barge_at
    );
    // After the clear the agent stayed quiet while the caller talked.
    assert_eq!(sim.audio_ticks_since(cleared + 1), 0);
    // "check my balance" → the agent asks for the account number.
    sim.until_quiet(10, 500).await;

    // Keys: the account number, ended by #.
    for k in ['1', '2', '3', '4', '#'] {
        sim.link.send(Input::Dtmf(k));
    }
    sim.until_quiet(10, 500).await;
    sim.run(5, Caller::Silent).await;
    drop(sim);

    let report = tokio::time::timeout(Duration::from_secs(5), reports.recv())
        .await
        .unwrap()
        .unwrap();
    let lines: Vec<(Speaker, &str, bool)> = report
        .transcript
        .iter()
        .map(|e| (e.speaker, e.text.as_str(), e.interrupted))
        .collect();
    assert_eq!(lines[0].0, Speaker::Agent);
    assert!(lines[0].1.starts_with("Hello, this is Vaani"), "{lines:?}");
    assert_eq!(
        lines[1],
        (Speaker::Caller, "I have a question about my bill", false)
    );
    // The billing answer was cut short: only what played is in the transcript.
    assert_eq!(lines[2].0, Speaker::Agent);
    assert!(lines[2].2, "{lines:?}");
    assert!(
        "Sure, I can help with your bill. The most common reason for a higher bill is roaming or a plan change. Would you like me to check your balance?"
            .starts_with(lines[2].1),
        "{lines:?}"
    );
    assert!(lines[2].1.len() < 139, "cut short: {lines:?}");
    assert_eq!(lines[3], (Speaker::Caller, "check my balance", false));
    assert_eq!(
        lines[4],
        (
            Speaker::Agent,
            "Please say or key in your account number.",
            false
        )
    );
    assert_eq!(lines[5], (Speaker::Caller, "[keys 1234]", false));
    assert!(lines[6].1.contains("account 1 2 3 4"), "{lines:?}");

    // Every answered turn has its stages in order.
    assert_eq!(report.turns.len(), 3, "{:?}", report.turns);
    for t in &report.turns {
        let total = t.total_ms.expect("first audio recorded");
        let first = t.first_audio_ms.unwrap();
        assert!(first >= t.speech_end_ms);
        assert_eq!(total, first - t.speech_end_ms);
        assert!(t.llm_first_token_ms.unwrap() <= t.first_sentence_ms.unwrap());
        assert!(t.first_sentence_ms.unwrap() <= t.tts_first_byte_ms.unwrap());
        assert!(t.tts_first_byte_ms.unwrap() <= first);
    }
    assert!(report.latency.p50_ms.is_some());
    assert!(report.usage.tts_characters > 0);
    assert!(report.usage.stt_audio_ms > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wordless_interruption_resumes_and_a_backchannel_is_ignored() {
    // The interruption yields no words: the agent says the rest of its line.
    let (cfg, mut reports) = config(&["", ""]);
    let link = call::start(&cfg, CallIds::default());
    let mut sim = Sim {
        link,
        agent_audio: Vec::new(),
        events: Vec::new(),
        tick: 0,
    };
    // A short "mhm" during the greeting: no clear.
    sim.run(5, Caller::Silent).await;
    sim.run(8, Caller::Talking).await;
    sim.run(10, Caller::Silent).await;
    assert!(
        !sim.events.iter().any(|(_, o)| *o == Outgoing::Clear),
        "a backchannel interrupted"
    );
    // A real interruption of the greeting, which turns out to have no words.
    sim.run(30, Caller::Talking).await;
    assert!(sim.events.iter().any(|(_, o)| *o == Outgoing::Clear));
    let resumed_from = sim.tick;
    sim.until_quiet(10, 500).await;
    assert!(
        sim.audio_ticks_since(resumed_from) > 0,
        "the agent did not resume"
    );
    drop(sim);
    let report = reports.recv().await.unwrap();
    let agent: Vec<_> = report
        .transcript
        .iter()
        .filter(|e| e.speaker == Speaker::Agent)
        .collect();
    assert_eq!(agent.len(), 2, "{:?}", report.transcript);
    assert!(agent[0].interrupted);
    // Heard part + resumed part = the whole greeting.
    let whole = format!("{} {}", agent[0].text, agent[1].text);
    assert_eq!(
        whole.split_whitespace().collect::<Vec<_>>(),
        "Hello, this is Vaani at Acme Telecom. How can I help you today?"
            .split_whitespace()
            .collect::<Vec<_>>()
    );
    assert!(report
        .transcript
        .iter()
        .all(|e| e.speaker == Speaker::Agent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goodbye_hangs_up_after_the_audio() {
    let (cfg, _reports) = config(&["goodbye"]);
    let link = call::start(&cfg, CallIds::default());
    let mut sim = Sim {
        link,
        agent_audio: Vec::new(),
        events: Vec::new(),
        tick: 0,
    };
    sim.until_quiet(10, 500).await;
    sim.run(40, Caller::Talking).await;
    for _ in 0..400 {
        sim.run(1, Caller::Silent).await;
        if sim
            .events
            .iter()
            .any(|(_, o)| matches!(o, Outgoing::Hangup(_)))
        {
            break;
        }
    }
    let (at, _) = sim
        .events
        .iter()
        .find(|(_, o)| matches!(o, Outgoing::Hangup(r) if r == "agent hangup"))
        .expect("no hangup");
    // The goodbye played before the hangup.
    assert!(sim.agent_audio[at - 5..*at].iter().all(|a| *a));
}

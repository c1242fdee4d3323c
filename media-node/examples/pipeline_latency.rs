//! Platform-added latency per turn at 1, 100 and 500 concurrent calls on one core.
//!
//! Every call runs the real pipeline (energy VAD, turn detector, sentence splitter, out queue,
//! the embedded dialogue engine) with fake STT/LLM/TTS engines that only wait a fixed time, on
//! a single-threaded runtime. A simulated media driver per call ticks every 20 ms: the caller
//! speaks for a second, waits until the agent has answered, pauses, speaks again. For each
//! answered turn the pipeline reports `platform_us`: the time from its end-of-turn decision to
//! the first agent frame queued (`decided_to_queued_us`). Each fake engine logs how long it
//! actually held each request (its fixed delay plus the timer's overshoot); the turn's span
//! minus its STT, LLM and first TTS waits is what the platform added: channel hops, task
//! wake-ups, VAD/turn/splitter work, and whatever the other calls on the core delay it by.
//!
//! cargo run --release -p vaani-media --example pipeline_latency [-- CALLS...]
#![allow(clippy::expect_used)]
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use vaani_media::agent::AgentSpec;
use vaani_media::pipeline::call::{self, percentile, CallIds, CallReport, Input, PipelineConfig};
use vaani_media::pipeline::dialogue::EmbeddedLlm;
use vaani_media::pipeline::engines::Engines;
use vaani_media::pipeline::fake::{DelayedLlm, FakeStt, FakeTts, WaitLog};
use vaani_media::pipeline::out::Outgoing;
use vaani_media::pipeline::vad::EnergyVad;

const STT_DELAY: Duration = Duration::from_millis(150);
const LLM_DELAY: Duration = Duration::from_millis(250);
const TTS_FIRST_BYTE: Duration = Duration::from_millis(90);
const TURNS: usize = 3;

fn speech_frame(i: usize) -> Vec<i16> {
    (0..320)
        .map(|k| (((i * 320 + k) as f32 * 0.31).sin() * 6000.0) as i16)
        .collect()
}

async fn caller(link: call::CallLink, start_delay: Duration) {
    tokio::time::sleep(start_delay).await;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let silence = vec![0i16; 320];
    // Wait out the greeting, then TURNS times: speak 1 s, wait for the answer to finish.
    let mut turns = 0;
    let mut talking = 0usize;
    let mut heard_agent = false;
    let mut quiet = 0usize;
    let mut i = 0usize;
    loop {
        tick.tick().await;
        i += 1;
        let out = link.out.take(Instant::now());
        let audible = matches!(out, Some(Outgoing::Audio(_)));
        if audible {
            heard_agent = true;
            quiet = 0;
        } else {
            quiet += 1;
        }
        let pcm = if talking > 0 {
            talking -= 1;
            speech_frame(i)
        } else {
            silence.clone()
        };
        link.send(Input::Frame {
            pcm,
            agent_audible: audible,
        });
        if talking == 0 && heard_agent && quiet >= 25 {
            if turns == TURNS {
                break;
            }
            turns += 1;
            talking = 50;
            heard_agent = false;
        }
        if i > 50 * 120 {
            break; // a call that got stuck ends after two minutes
        }
    }
}

fn run(calls: usize, spec: &AgentSpec) -> (Vec<u64>, Vec<u64>, u64, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (tx, mut rx) = mpsc::unbounded_channel::<CallReport>();
        let agent = Arc::new(spec.resolve());
        // One set of fake engines per call, each logging its own waits.
        let config = |log: &WaitLog| PipelineConfig {
            agent: agent.clone(),
            engines: Engines {
                stt: Arc::new(FakeStt {
                    log: Some(log.clone()),
                    ..FakeStt::repeating(STT_DELAY, "I have a question about my bill")
                }),
                llm: Arc::new(DelayedLlm {
                    inner: EmbeddedLlm::new(spec.clone()),
                    delay: LLM_DELAY,
                    log: Some(log.clone()),
                }),
                tts: Arc::new(FakeTts {
                    first_byte: TTS_FIRST_BYTE,
                    ms_per_char: 10,
                    log: Some(log.clone()),
                }),
            },
            vad: Arc::new(|| Box::new(EnergyVad::new())),
            reports: Some(tx.clone()),
            runtime: tokio::runtime::Handle::current(),
        };
        let cpu0 = cpu_seconds();
        let wall0 = Instant::now();
        let mut tasks = Vec::new();
        let mut logs = std::collections::HashMap::new();
        for n in 0..calls {
            let log = WaitLog::default();
            logs.insert(format!("call-{n}"), log.clone());
            let link = call::start(
                &config(&log),
                CallIds {
                    transport_id: format!("call-{n}"),
                    ..CallIds::default()
                },
            );
            // Spread the calls' 20 ms ticks evenly over the tick period (and their starts over a
            // second), as calls that began at random times are: none tick in lockstep.
            let delay = Duration::from_micros(
                (n as u64 * 20_000) / calls.max(1) as u64 + (n as u64 % 50) * 20_000,
            );
            tasks.push(tokio::spawn(caller(link, delay)));
        }
        for t in tasks {
            let _ = t.await;
        }
        drop(tx);
        let mut platform = Vec::new();
        let mut totals = Vec::new();
        let mut dropped = 0;
        while let Some(r) = rx.recv().await {
            dropped += r.dropped_frames;
            let waits = logs
                .get(&r.ids.transport_id)
                .and_then(|l| l.lock().ok().map(|l| l.clone()))
                .unwrap_or_default();
            let of = |kind: &str| -> Vec<_> {
                waits.iter().filter(|w| w.kind == kind).copied().collect()
            };
            let (stt, llm, tts) = (of("stt"), of("llm"), of("tts"));
            for (k, t) in r.turns.iter().enumerate() {
                // Turn k: the k-th STT final, the (k+1)-th LLM answer (the greeting is the
                // first), and the first synthesis asked for after that answer.
                let (Some(span), Some(s), Some(l)) =
                    (t.decided_to_queued_us, stt.get(k), llm.get(k + 1))
                else {
                    continue;
                };
                let Some(first_tts) = tts.iter().find(|w| w.start >= l.end) else {
                    continue;
                };
                let engine =
                    (s.end - s.start) + (l.end - l.start) + (first_tts.end - first_tts.start);
                let engine_us = u64::try_from(engine.as_micros()).unwrap_or(u64::MAX);
                platform.push(span.saturating_sub(engine_us));
                if let Some(ms) = t.total_ms {
                    totals.push(ms);
                }
            }
        }
        let cpu = cpu_seconds() - cpu0;
        let util = cpu / wall0.elapsed().as_secs_f64();
        platform.sort_unstable();
        totals.sort_unstable();
        (platform, totals, dropped, util)
    })
}

/// This process's user + system CPU time.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

fn main() {
    let spec = AgentSpec::parse(include_str!("../../agents/sample.toml")).expect("sample agent");
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![1, 100, 500]
    } else {
        counts
    };
    println!(
        "fake engines: STT final {} ms, LLM first token {} ms, TTS first byte {} ms; {TURNS} turns per call; one core",
        STT_DELAY.as_millis(),
        LLM_DELAY.as_millis(),
        TTS_FIRST_BYTE.as_millis()
    );
    println!("| calls | turns | platform p50 | p90 | p99 | max | end of speech → first audio p50 / p99 | CPU of one core | frames dropped |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for calls in counts {
        let (p, t, dropped, util) = run(calls, &spec);
        let us = |v: Option<u64>| v.map_or("-".into(), |x| format!("{:.3} ms", x as f64 / 1000.0));
        println!(
            "| {calls} | {} | {} | {} | {} | {} | {} / {} ms | {:.0}% | {dropped} |",
            p.len(),
            us(percentile(&p, 50.0)),
            us(percentile(&p, 90.0)),
            us(percentile(&p, 99.0)),
            us(p.last().copied()),
            percentile(&t, 50.0).unwrap_or(0),
            percentile(&t, 99.0).unwrap_or(0),
            util * 100.0
        );
    }
}

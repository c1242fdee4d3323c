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
//! The runtime is tokio's multi-threaded scheduler with one worker (what `vaani dev` runs
//! pipelines on, `#[tokio::main]`, here held to one worker so one core is measured);
//! `RUNTIME=current` uses the current-thread scheduler instead, for comparison. Two more
//! columns keep the accounting honest: how much longer than asked the fake engines held each
//! turn (tokio's 1 ms timer granularity, and waiting to be polled once their timer fired, which
//! the platform column cannot see), and the whole span beyond the nominal engine delays.
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

/// One second of the caller's "speech", made once: the simulated driver only copies frames
/// (the real media engine decodes on its own threads, not on the pipelines' core).
fn speech_frames() -> Arc<Vec<Vec<i16>>> {
    Arc::new(
        (0..50)
            .map(|i| {
                (0..320)
                    .map(|k| (((i * 320 + k) as f32 * 0.31).sin() * 6000.0) as i16)
                    .collect()
            })
            .collect(),
    )
}

async fn caller(link: call::CallLink, start_delay: Duration, speech: Arc<Vec<Vec<i16>>>) {
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
            speech[i % speech.len()].clone()
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

/// Per answered turn (each sorted): platform-added µs, engine overshoot µs, the turn's span
/// beyond the engines' nominal delays µs, end of speech → first audio ms; frames dropped; CPU
/// used as a fraction of one core.
type RunResult = (Vec<u64>, Vec<u64>, Vec<u64>, Vec<u64>, u64, f64);

fn run(calls: usize, spec: &AgentSpec) -> RunResult {
    let rt = match std::env::var("RUNTIME").as_deref() {
        Ok("current") => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build(),
    }
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
        let speech = speech_frames();
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
            tasks.push(tokio::spawn(caller(link, delay, speech.clone())));
        }
        for t in tasks {
            let _ = t.await;
        }
        drop(tx);
        let mut platform = Vec::new();
        let mut overshoot = Vec::new();
        let mut beyond = Vec::new();
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
                // How much longer than asked the engines held the turn (timer overshoot and
                // waiting to be polled): kept apart from the platform's share, so shown too.
                let nominal = STT_DELAY + LLM_DELAY + TTS_FIRST_BYTE;
                overshoot.push(
                    u64::try_from(engine.saturating_sub(nominal).as_micros()).unwrap_or(u64::MAX),
                );
                let nominal_us = u64::try_from(nominal.as_micros()).unwrap_or(u64::MAX);
                beyond.push(span.saturating_sub(nominal_us));
                if let Some(ms) = t.total_ms {
                    totals.push(ms);
                }
            }
        }
        let cpu = cpu_seconds() - cpu0;
        let util = cpu / wall0.elapsed().as_secs_f64();
        platform.sort_unstable();
        overshoot.sort_unstable();
        beyond.sort_unstable();
        totals.sort_unstable();
        (platform, overshoot, beyond, totals, dropped, util)
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
    println!("| calls | turns | platform p50 | p90 | p99 | max | engine overshoot p50 / p99 | beyond nominal p50 / p99 | end of speech → first audio p50 / p99 | CPU of one core | frames dropped |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for calls in counts {
        let (p, o, b, t, dropped, util) = run(calls, &spec);
        let us = |v: Option<u64>| v.map_or("-".into(), |x| format!("{:.3} ms", x as f64 / 1000.0));
        println!(
            "| {calls} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} / {} ms | {:.0}% | {dropped} |",
            p.len(),
            us(percentile(&p, 50.0)),
            us(percentile(&p, 90.0)),
            us(percentile(&p, 99.0)),
            us(p.last().copied()),
            us(percentile(&o, 50.0)),
            us(percentile(&o, 99.0)),
            us(percentile(&b, 50.0)),
            us(percentile(&b, 99.0)),
            percentile(&t, 50.0).unwrap_or(0),
            percentile(&t, 99.0).unwrap_or(0),
            util * 100.0
        );
    }
}

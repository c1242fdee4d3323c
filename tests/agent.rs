//! The sample agent end to end, offline: `vaani call dev` places real SIP calls to
//! `vaani dev --app agent`, speaks synthesised lines (espeak-ng → G.711 → the node's
//! pocketsphinx), and transcribes the agent's spoken replies. What the agent heard, and the
//! per-turn latencies, are checked on the server with `vaani calls show --json`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{start_dev_with, vaani};

fn call(data: &str, script: &[&str]) -> serde_json::Value {
    let mut args = vec!["call", "dev", "--data", data, "--json", "--timeout", "90"];
    args.extend_from_slice(script);
    let out = vaani(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "vaani call failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn turns(v: &serde_json::Value) -> Vec<(String, String, Option<u64>)> {
    v["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["speaker"].as_str().unwrap().to_string(),
                t["text"].as_str().unwrap().to_string(),
                t["latency_ms"].as_u64(),
            )
        })
        .collect()
}

#[test]
fn billing_question_interruption_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let dev = start_dev_with(&data, &["--app", "agent"]);
    let v = call(
        &data,
        &[
            "--say",
            "I have a question about my bill",
            "--interrupt",
            "check my balance",
            "--dtmf",
            "1234#",
        ],
    );
    let t = turns(&v);
    // Greeting, question, the billing answer (cut), the interruption, the account prompt,
    // the keys, the confirmation.
    assert_eq!(t[0].0, "agent");
    assert!(t[0].1.contains("how can i help you"), "{t:?}");
    assert_eq!(
        t[1],
        (
            "caller".into(),
            "I have a question about my bill".into(),
            None
        )
    );
    // The billing answer, cut short by the caller: what was heard of it is checked on the
    // server below (a cut sentence is not one the caller's recogniser knows).
    assert_eq!(t[2].0, "agent");
    assert!(t[2].2.is_some(), "latency measured: {t:?}");
    assert_eq!(t[3].1, "check my balance");
    let prompt = t
        .iter()
        .position(|x| x.1.contains("account number"))
        .expect("prompt");
    assert!(prompt > 3, "{t:?}");
    assert!(
        t.iter()
            .skip(prompt)
            .any(|x| x.0 == "agent" && x.1.contains("noted account")),
        "keys answered: {t:?}"
    );

    // The server's side: what the agent heard and how the interruption was handled.
    let call_id = v["call_id"].as_str().unwrap();
    let out = vaani(&["calls", "show", call_id, "--json", "--data", &data]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["sip_call_id"], v["sip_call_id"]);
    let transcript = shown["transcript"].as_array().unwrap();
    let said = |speaker: &str, needle: &str| {
        transcript
            .iter()
            .find(|e| e["speaker"] == speaker && e["text"].as_str().unwrap().contains(needle))
            .cloned()
    };
    assert!(
        said("caller", "i have a question about my bill").is_some(),
        "{transcript:?}"
    );
    let cut = said("agent", "Sure, I can help").expect("billing answer");
    assert_eq!(cut["interrupted"], true, "{cut}");
    assert!(
        !cut["text"]
            .as_str()
            .unwrap()
            .contains("check your balance?"),
        "only what was heard is kept: {cut}"
    );
    assert!(
        said("caller", "check my balance").is_some(),
        "{transcript:?}"
    );
    assert!(said("caller", "[keys 1234]").is_some(), "{transcript:?}");
    assert!(said("agent", "account 1 2 3 4").is_some(), "{transcript:?}");
    // Latency per turn, end of speech to first audio, on the server.
    let turns = shown["turns"].as_array().unwrap();
    assert!(turns.len() >= 3, "{turns:?}");
    for t in turns {
        assert!(t["total_ms"].as_u64().is_some(), "{t}");
    }
    assert!(shown["latency"]["p50_ms"].as_u64().is_some());
    assert!(shown["usage"]["tts_characters"].as_u64().unwrap() > 0);
    // Turn latencies are exported as a histogram.
    let metrics = common::request(&dev.addr, "GET", "/metrics", &[], "");
    let count = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("vaani_turn_latency_seconds_count "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(count >= 3, "{}", metrics.body);
    // The call's end and its engine usage are on the call-events queue, under our call id.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let queued = rt.block_on(async {
        let store = vaani_store::embedded::EmbeddedStore::open(dir.path())
            .unwrap()
            .stores();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut seen: Vec<serde_json::Value> = Vec::new();
        loop {
            let msgs = store
                .queue
                .receive(
                    vaani_store::queues::CALL_EVENTS,
                    10,
                    std::time::Duration::from_secs(60),
                )
                .await
                .unwrap();
            seen.extend(
                msgs.iter()
                    .map(|m| serde_json::from_str::<serde_json::Value>(&m.body).unwrap()),
            );
            let kinds: Vec<&str> = seen
                .iter()
                .filter(|v| v["call_id"] == call_id)
                .filter_map(|v| v["kind"].as_str())
                .collect();
            if kinds.contains(&"media_call_ended") && kinds.contains(&"media_call_usage") {
                break seen;
            }
            assert!(std::time::Instant::now() < deadline, "not queued: {seen:?}");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    let ended = queued
        .iter()
        .find(|v| v["kind"] == "media_call_ended" && v["call_id"] == call_id)
        .unwrap();
    assert_eq!(ended["transport"], "sip", "{ended}");
    assert_eq!(ended["tenant"], "demo", "{ended}");
    let usage = queued
        .iter()
        .find(|v| v["kind"] == "media_call_usage" && v["call_id"] == call_id)
        .unwrap();
    assert_eq!(usage["stt_engine"], "embedded", "{usage}");
    assert!(usage["stt_audio_ms"].as_u64().unwrap() > 500, "{usage}");
    assert!(usage["tts_characters"].as_u64().unwrap() > 20, "{usage}");
    // The SIP Call-ID finds the same call.
    let by_sip = vaani(&[
        "calls",
        "show",
        v["sip_call_id"].as_str().unwrap(),
        "--json",
        "--data",
        &data,
    ]);
    assert!(by_sip.status.success());
}

#[test]
fn a_key_press_routes_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let _dev = start_dev_with(&data, &["--app", "agent"]);
    let v = call(&data, &["--dtmf", "1", "--dtmf", "9"]);
    let t = turns(&v);
    // 1 → billing, 9 → goodbye (and the agent hangs up).
    assert!(
        t.iter()
            .any(|x| x.0 == "agent" && x.1.contains("help with your bill")),
        "{t:?}"
    );
    assert!(
        t.iter()
            .any(|x| x.0 == "agent" && x.1.contains("thank you for calling")),
        "{t:?}"
    );
    assert_eq!(v["ended"], "remote_bye", "the agent hung up: {v}");
}

/// A wideband call: `vaani call --codecs g722` to a node that prefers G.722. The call runs in
/// G.722 both ways (16 kHz audio to the recogniser, no resampling), and the question still
/// gets the billing answer, transcribed back by the caller.
#[test]
fn a_g722_call_gets_the_billing_answer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let _dev = start_dev_with(&data, &["--app", "agent", "--sip-codecs", "g722,pcmu"]);
    let v = call(
        &data,
        &[
            "--codecs",
            "g722",
            "--say",
            "I have a question about my bill",
        ],
    );
    assert_eq!(v["codec"], "G722", "{v}");
    let t = turns(&v);
    assert_eq!(t[1].1, "I have a question about my bill", "{t:?}");
    assert!(
        t.iter()
            .skip(2)
            .any(|x| x.0 == "agent" && x.1.contains("bill")),
        "{t:?}"
    );
}

/// Agents by id (`vaani dev --agents DIR`): a call naming `other` with `X-Vaani-Agent` (here
/// `vaani call --agent-id`) is answered by that agent, not the default; a tenant's own agent
/// in `DIR/TENANT/` serves that tenant's calls and no other tenant's; an id the node does not
/// know is refused (404).
#[test]
fn calls_name_their_agent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let agents = dir.path().join("agents");
    std::fs::create_dir_all(agents.join("demo")).unwrap();
    let sample = include_str!("../agents/sample.toml");
    let greeting = |desk: &str| {
        sample.replace(
            "greeting = \"Hello, this is Vaani at Acme Telecom.",
            &format!("greeting = \"Hello, this is the {desk}."),
        )
    };
    let other = greeting("night desk");
    assert_ne!(
        other, sample,
        "the sample's greeting changed: update this test"
    );
    let private = greeting("demo team desk");
    std::fs::write(agents.join("other.toml"), &other).unwrap();
    std::fs::write(agents.join("demo").join("private.toml"), &private).unwrap();
    let data = data.to_str().unwrap().to_string();
    let _dev = start_dev_with(
        &data,
        &["--app", "agent", "--agents", agents.to_str().unwrap()],
    );
    for (id, file, greeting) in [
        ("other", agents.join("other.toml"), "night desk"),
        (
            "private",
            agents.join("demo").join("private.toml"),
            "demo team desk",
        ),
    ] {
        let v = call(
            &data,
            &[
                "--agent-id",
                id,
                "--agent",
                file.to_str().unwrap(),
                "--dtmf",
                "9",
            ],
        );
        let t = turns(&v);
        assert_eq!(t[0].0, "agent");
        assert!(t[0].1.contains(greeting), "{id}: {t:?}");
    }
    // An agent nobody configured, and another tenant asking for demo's own agent: the INVITE
    // is refused and the call never starts.
    for (tenant, id) in [("demo", "nobody"), ("acme", "private")] {
        let out = vaani(&[
            "call",
            "dev",
            "--data",
            &data,
            "--json",
            "--timeout",
            "20",
            "--tenant",
            tenant,
            "--agent-id",
            id,
            "--dtmf",
            "9",
        ]);
        assert!(!out.status.success(), "{tenant}/{id}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("404"), "{tenant}/{id}: {stdout}");
    }
}

//! `sip::digest_server`: our challenges answered by our own Digest client (itself checked
//! against the RFC 7616 §3.9.1 vectors) verify for MD5 and SHA-256; wrong passwords, users,
//! requests, forged or future nonces do not; old nonces are stale; hostile values never panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use vaani_media::sip::digest::{authorization, Challenge, Credentials, DigestRequest};
use vaani_media::sip::digest_server::{DigestVerifier, Verdict, NONCE_TTL_SECS};

const URI: &str = "sip:vaani@127.0.0.1:5060";
const T0: u64 = 1_790_000_000;

fn creds(user: &str, password: &str) -> Credentials {
    Credentials {
        username: user.into(),
        password: password.into(),
    }
}

fn verifier() -> DigestVerifier {
    DigestVerifier::new("vaani", creds("trunk1", "s3cret"), [7u8; 32])
}

/// The client's `Authorization` for challenge `i` (0: SHA-256, 1: MD5) issued at `t`.
fn answer(
    v: &DigestVerifier,
    t: u64,
    i: usize,
    c: &Credentials,
    method: &str,
    uri: &str,
) -> String {
    let ch = Challenge::parse(&v.challenges(t, false)[i]).unwrap();
    authorization(
        &ch,
        c,
        &DigestRequest {
            method,
            uri,
            body: b"",
            cnonce: "0a4f113b",
            nc: 1,
        },
    )
    .unwrap()
}

#[test]
fn challenges_name_both_algorithms_with_qop_auth() {
    let v = verifier();
    let ch = v.challenges(T0, false);
    assert_eq!(ch.len(), 2);
    let sha = Challenge::parse(&ch[0]).unwrap();
    let md5 = Challenge::parse(&ch[1]).unwrap();
    assert_eq!(sha.algorithm.as_str(), "SHA-256");
    assert_eq!(md5.algorithm.as_str(), "MD5");
    for c in [&sha, &md5] {
        assert_eq!(c.realm, "vaani");
        assert_eq!(c.qop, ["auth"]);
        assert!(!c.stale);
    }
    assert_eq!(sha.nonce, md5.nonce);
    assert!(Challenge::parse(&v.challenges(T0, true)[0]).unwrap().stale);
    // Nonces carry their time: later ones differ.
    assert_ne!(v.nonce(T0), v.nonce(T0 + 1));
}

#[test]
fn right_credentials_verify_for_both_algorithms() {
    let v = verifier();
    for i in 0..2 {
        let a = answer(&v, T0, i, &creds("trunk1", "s3cret"), "INVITE", URI);
        assert_eq!(
            v.verify("INVITE", URI, Some(&a), T0 + 10),
            Verdict::Valid,
            "{a}"
        );
        // The same answer later than the TTL: stale, so the client retries silently.
        assert_eq!(
            v.verify("INVITE", URI, Some(&a), T0 + NONCE_TTL_SECS + 1),
            Verdict::Stale
        );
    }
}

#[test]
fn wrong_answers_are_invalid() {
    let v = verifier();
    let good = answer(&v, T0, 0, &creds("trunk1", "s3cret"), "INVITE", URI);
    let cases = [
        answer(&v, T0, 0, &creds("trunk1", "guess"), "INVITE", URI),
        answer(&v, T0, 1, &creds("trunk1", "guess"), "INVITE", URI),
        answer(&v, T0, 0, &creds("other", "s3cret"), "INVITE", URI),
        // Answered for another request.
        answer(&v, T0, 0, &creds("trunk1", "s3cret"), "INVITE", "sip:x@127.0.0.1"),
        // A nonce signed with another key.
        answer(
            &DigestVerifier::new("vaani", creds("trunk1", "s3cret"), [8u8; 32]),
            T0,
            0,
            &creds("trunk1", "s3cret"),
            "INVITE",
            URI,
        ),
        // The nonce's time changed (its MAC no longer matches).
        good.replacen(&format!("nonce=\"{:x}", T0), &format!("nonce=\"{:x}", T0 + 100), 1),
        good.replace("qop=auth, ", ""),
        good.replace("algorithm=SHA-256", "algorithm=SHA-256-sess"),
        good.replace("Digest ", "Basic "),
        "Digest".into(),
        "Digest username=\"trunk1\", realm=\"vaani\"".into(),
        "Digest username=\"trunk1\", realm=\"vaani\", nonce=\"x.y\", uri=\"a\", response=\"b\", qop=auth, nc=zz, cnonce=\"c\"".into(),
    ];
    for a in &cases {
        assert_eq!(
            v.verify("INVITE", URI, Some(a), T0 + 1),
            Verdict::Invalid,
            "{a}"
        );
    }
    // The right answer but for another method.
    assert_eq!(v.verify("BYE", URI, Some(&good), T0 + 1), Verdict::Invalid);
    // A nonce from the future (clock skew beyond 5 s).
    assert_eq!(
        v.verify("INVITE", URI, Some(&good), T0 - 60),
        Verdict::Invalid
    );
}

#[test]
fn missing_or_other_realm_is_challenged() {
    let v = verifier();
    assert_eq!(v.verify("INVITE", URI, None, T0), Verdict::Missing);
    let other = answer(&v, T0, 0, &creds("trunk1", "s3cret"), "INVITE", URI)
        .replace("realm=\"vaani\"", "realm=\"elsewhere\"");
    assert_eq!(v.verify("INVITE", URI, Some(&other), T0), Verdict::Missing);
}

#[test]
fn debug_hides_the_password() {
    let s = format!("{:?}", verifier());
    assert!(!s.contains("s3cret"), "{s}");
}

proptest! {
    #[test]
    fn hostile_authorization_never_panics(value in ".{0,600}", t in any::<u64>()) {
        let v = verifier();
        let _ = v.verify("INVITE", URI, Some(&value), t);
        let digest = format!("Digest {value}");
        prop_assert_ne!(v.verify("INVITE", URI, Some(&digest), t), Verdict::Valid);
    }

    #[test]
    fn param_soup_never_verifies(
        params in proptest::collection::vec(
            ("(username|realm|nonce|uri|response|qop|nc|cnonce|algorithm)", "[a-f0-9.\"=, ]{0,40}"), 0..10),
        t in any::<u64>()) {
        let v = verifier();
        let value = params.iter().map(|(n, x)| format!("{n}={x}")).collect::<Vec<_>>().join(", ");
        let r = v.verify("INVITE", URI, Some(&format!("Digest {value}")), t);
        prop_assert_ne!(r, Verdict::Valid);
    }
}

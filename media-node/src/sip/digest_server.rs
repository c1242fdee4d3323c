//! The server side of SIP Digest authentication (RFC 3261 §22.4, RFC 2617 §3.2, RFC 7616):
//! the `WWW-Authenticate` challenges of a `401` and the check of the `Authorization` that
//! answers them, for one trunk's username and password.
//!
//! Stateless: a nonce is `<unix seconds, hex>.<HMAC-SHA-256 of them under a node key>`, so
//! any nonce we issued can be checked without remembering it, and one older than
//! [`NONCE_TTL_SECS`] is stale (the client retries without asking its user, RFC 2617 §3.2.1).
//! The qop is `auth`; the algorithms MD5 and SHA-256 (the `-sess` variants and `auth-int` are
//! not offered). Being stateless, it does not track nonce counts: a captured `Authorization`
//! replays until its nonce goes stale (the same window bounds that as the TTL).
//!
//! Sans-IO: the clock reading comes from the caller. Secrets never reach `Debug`/`Display`.

use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::digest::{self, auth_params, Algorithm, Challenge, Credentials, DigestRequest, Qop};

/// How long a nonce is good for.
pub const NONCE_TTL_SECS: u64 = 300;
/// Longest `Authorization` value we read.
const MAX_AUTHORIZATION_LEN: usize = 4096;

/// What an INVITE's credentials are worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Right credentials on a fresh nonce of ours.
    Valid,
    /// No `Authorization` for our realm: challenge.
    Missing,
    /// Right credentials on an expired nonce of ours: challenge with `stale=true`.
    Stale,
    /// Wrong user, password, nonce or request: refuse (403).
    Invalid,
}

/// Checks Digest credentials for one username and password. See the module docs.
#[derive(Clone)]
pub struct DigestVerifier {
    realm: String,
    credentials: Credentials,
    key: [u8; 32],
}

impl std::fmt::Debug for DigestVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestVerifier")
            .field("realm", &self.realm)
            .field("username", &self.credentials.username)
            .finish_non_exhaustive()
    }
}

impl DigestVerifier {
    /// `key` signs nonces: draw it from real randomness (a restart invalidates old nonces,
    /// which only costs clients one more challenge).
    pub fn new(realm: &str, credentials: Credentials, key: [u8; 32]) -> Self {
        DigestVerifier {
            realm: realm.to_string(),
            credentials,
            key,
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The username these credentials are for.
    pub fn username(&self) -> &str {
        &self.credentials.username
    }

    fn sign(&self, stamp: &str) -> String {
        // HMAC takes keys of any length, so this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(stamp.as_bytes());
        let mut s = String::with_capacity(64);
        for b in mac.finalize().into_bytes() {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// A fresh nonce for `now` (unix seconds).
    pub fn nonce(&self, now: u64) -> String {
        let stamp = format!("{now:x}");
        format!("{stamp}.{}", self.sign(&stamp))
    }

    /// The issue time of a nonce we signed; `None` for anything else.
    fn nonce_time(&self, nonce: &str) -> Option<u64> {
        let (stamp, mac) = nonce.split_once('.')?;
        if stamp.is_empty() || stamp.len() > 16 {
            return None;
        }
        let t = u64::from_str_radix(stamp, 16).ok()?;
        ct_eq(self.sign(stamp).as_bytes(), mac.as_bytes()).then_some(t)
    }

    /// The `WWW-Authenticate` values of a `401` at `now`: SHA-256 first, then MD5 (RFC 7616
    /// §3.7: in order of preference), both with qop `auth`.
    pub fn challenges(&self, now: u64, stale: bool) -> Vec<String> {
        let nonce = self.nonce(now);
        [Algorithm::Sha256, Algorithm::Md5]
            .iter()
            .map(|alg| {
                let mut v = format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
                    self.realm,
                    alg.as_str()
                );
                if stale {
                    v.push_str(", stale=true");
                }
                v
            })
            .collect()
    }

    /// Checks the `Authorization` value (`None`: the request had none) of a request with
    /// `method` and Request-URI `request_uri` (as it serializes), at `now` (unix seconds).
    pub fn verify(
        &self,
        method: &str,
        request_uri: &str,
        authorization: Option<&str>,
        now: u64,
    ) -> Verdict {
        let Some(value) = authorization else {
            return Verdict::Missing;
        };
        if value.len() > MAX_AUTHORIZATION_LEN {
            return Verdict::Invalid;
        }
        let value = value.trim_start();
        let Some((scheme, rest)) = value.split_once(char::is_whitespace) else {
            return Verdict::Invalid;
        };
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Verdict::Invalid;
        }
        let Some(params) = auth_params(rest) else {
            return Verdict::Invalid;
        };
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        if get("realm") != Some(self.realm.as_str()) {
            // Credentials for some other realm: as if none were given.
            return Verdict::Missing;
        }
        let (Some(username), Some(nonce), Some(uri), Some(response)) =
            (get("username"), get("nonce"), get("uri"), get("response"))
        else {
            return Verdict::Invalid;
        };
        let algorithm = match get("algorithm").map(str::to_ascii_uppercase).as_deref() {
            None | Some("MD5") => Algorithm::Md5,
            Some("SHA-256") => Algorithm::Sha256,
            _ => return Verdict::Invalid,
        };
        if !get("qop").is_some_and(|q| q.eq_ignore_ascii_case("auth")) {
            return Verdict::Invalid;
        }
        let (Some(cnonce), Some(nc)) = (get("cnonce"), get("nc")) else {
            return Verdict::Invalid;
        };
        let Ok(nc) = u32::from_str_radix(nc, 16) else {
            return Verdict::Invalid;
        };
        // The digest-uri names this request (RFC 2617 §3.2.2.5).
        let same_uri = uri == request_uri
            || super::uri::Uri::parse(uri).is_some_and(|u| u.to_string() == request_uri);
        if !same_uri || !ct_eq(username.as_bytes(), self.credentials.username.as_bytes()) {
            return Verdict::Invalid;
        }
        let Some(issued) = self.nonce_time(nonce) else {
            return Verdict::Invalid;
        };
        if issued > now.saturating_add(5) {
            return Verdict::Invalid;
        }
        let challenge = Challenge {
            realm: self.realm.clone(),
            nonce: nonce.to_string(),
            opaque: None,
            algorithm,
            qop: vec!["auth".into()],
            stale: false,
        };
        let expected = digest::response(
            &challenge,
            &self.credentials,
            Qop::Auth,
            &DigestRequest {
                method,
                uri,
                body: &[],
                cnonce,
                nc,
            },
        );
        if !ct_eq(
            expected.as_bytes(),
            response.to_ascii_lowercase().as_bytes(),
        ) {
            return Verdict::Invalid;
        }
        if now.saturating_sub(issued) > NONCE_TTL_SECS {
            return Verdict::Stale;
        }
        Verdict::Valid
    }
}

/// Compares without stopping at the first difference.
/// The `username` of a Digest `Authorization` value (to pick whose credentials check it);
/// `None` when the value is not a readable Digest answer.
pub fn authorization_username(value: &str) -> Option<String> {
    if value.len() > MAX_AUTHORIZATION_LEN {
        return None;
    }
    let (scheme, rest) = value.trim_start().split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    auth_params(rest)?
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("username"))
        .map(|(_, v)| v)
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

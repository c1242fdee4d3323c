//! HTTP Digest authentication as SIP uses it (RFC 3261 §22.4 on RFC 2617, with the SHA-256
//! algorithms of RFC 7616): reading a `WWW-Authenticate` / `Proxy-Authenticate` challenge and
//! building the `Authorization` / `Proxy-Authorization` value that answers it.
//!
//! Sans-IO like the rest of `sip`: the client nonce comes from the caller. Secrets never reach
//! `Debug` or `Display` output.

use std::fmt::Write as _;

use md5::Md5;
use sha2::{Digest as _, Sha256};

/// Longest challenge header value we read (real ones are a few hundred bytes).
const MAX_CHALLENGE_LEN: usize = 4096;

/// The hash of a challenge (`algorithm=`; MD5 when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    fn parse(s: &str) -> Option<Algorithm> {
        match s.to_ascii_uppercase().as_str() {
            "MD5" => Some(Algorithm::Md5),
            "MD5-SESS" => Some(Algorithm::Md5Sess),
            "SHA-256" => Some(Algorithm::Sha256),
            "SHA-256-SESS" => Some(Algorithm::Sha256Sess),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    fn session(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    /// Lower-case hex of the hash of `data`.
    fn hex(self, data: &[u8]) -> String {
        let bytes: Vec<u8> = match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Md5::digest(data).to_vec(),
            Algorithm::Sha256 | Algorithm::Sha256Sess => Sha256::digest(data).to_vec(),
        };
        let mut s = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

/// The quality of protection chosen for a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qop {
    /// RFC 2069 compatibility: the server offered no qop.
    None,
    Auth,
    /// Integrity of the body as well.
    AuthInt,
}

/// A Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The qop values offered, lower-cased (empty: none offered).
    pub qop: Vec<String>,
    /// The previous credentials were right but the nonce had expired.
    pub stale: bool,
}

/// Why a challenge cannot be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("not a Digest challenge, or a malformed one")]
    Malformed,
    #[error("the challenge asks for an algorithm we do not implement")]
    UnsupportedAlgorithm,
    #[error("the challenge offers only qop values we do not implement")]
    UnsupportedQop,
}

impl Challenge {
    /// Parses one challenge header value: `Digest realm="…", nonce="…", …` (RFC 2617 §3.2.1).
    /// Unknown parameters are ignored; `realm` and `nonce` are required.
    pub fn parse(value: &str) -> Result<Challenge, DigestError> {
        if value.len() > MAX_CHALLENGE_LEN {
            return Err(DigestError::Malformed);
        }
        let value = value.trim_start();
        let (scheme, rest) = value
            .split_once(char::is_whitespace)
            .ok_or(DigestError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestError::Malformed);
        }
        let (mut realm, mut nonce, mut opaque, mut algorithm, mut qop, mut stale) =
            (None, None, None, Algorithm::Md5, Vec::new(), false);
        for (name, v) in auth_params(rest).ok_or(DigestError::Malformed)? {
            match name.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(v),
                "nonce" => nonce = Some(v),
                "opaque" => opaque = Some(v),
                "algorithm" => {
                    algorithm = Algorithm::parse(&v).ok_or(DigestError::UnsupportedAlgorithm)?
                }
                "qop" => {
                    qop = v
                        .split(',')
                        .map(|q| q.trim().to_ascii_lowercase())
                        .filter(|q| !q.is_empty())
                        .collect()
                }
                "stale" => stale = v.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        Ok(Challenge {
            realm: realm.ok_or(DigestError::Malformed)?,
            nonce: nonce.ok_or(DigestError::Malformed)?,
            opaque,
            algorithm,
            qop,
            stale,
        })
    }

    /// The qop we answer with: `auth` when offered, else `auth-int`, else none when nothing
    /// was offered.
    pub fn choose_qop(&self) -> Result<Qop, DigestError> {
        if self.qop.is_empty() {
            Ok(Qop::None)
        } else if self.qop.iter().any(|q| q == "auth") {
            Ok(Qop::Auth)
        } else if self.qop.iter().any(|q| q == "auth-int") {
            Ok(Qop::AuthInt)
        } else {
            Err(DigestError::UnsupportedQop)
        }
    }
}

/// A username and password for Digest. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// One request's answer to a challenge.
#[derive(Debug, Clone, Copy)]
pub struct DigestRequest<'a> {
    pub method: &'a str,
    /// The Request-URI as sent (`digest-uri`).
    pub uri: &'a str,
    /// The body (only `auth-int` hashes it).
    pub body: &'a [u8],
    /// The client nonce (from the caller's randomness), and the nonce count for this nonce.
    pub cnonce: &'a str,
    pub nc: u32,
}

/// The `response` value of RFC 2617 §3.2.2.1 (RFC 7616 §3.4.1 for SHA-256), lower-case hex.
pub fn response(
    challenge: &Challenge,
    credentials: &Credentials,
    qop: Qop,
    req: &DigestRequest<'_>,
) -> String {
    let alg = challenge.algorithm;
    let mut ha1 = alg.hex(
        format!(
            "{}:{}:{}",
            credentials.username, challenge.realm, credentials.password
        )
        .as_bytes(),
    );
    if alg.session() {
        ha1 = alg.hex(format!("{ha1}:{}:{}", challenge.nonce, req.cnonce).as_bytes());
    }
    let ha2 = match qop {
        Qop::AuthInt => {
            alg.hex(format!("{}:{}:{}", req.method, req.uri, alg.hex(req.body)).as_bytes())
        }
        Qop::Auth | Qop::None => alg.hex(format!("{}:{}", req.method, req.uri).as_bytes()),
    };
    let qop_name = match qop {
        Qop::None => {
            return alg.hex(format!("{ha1}:{}:{ha2}", challenge.nonce).as_bytes());
        }
        Qop::Auth => "auth",
        Qop::AuthInt => "auth-int",
    };
    alg.hex(
        format!(
            "{ha1}:{}:{:08x}:{}:{qop_name}:{ha2}",
            challenge.nonce, req.nc, req.cnonce
        )
        .as_bytes(),
    )
}

/// The `Authorization` / `Proxy-Authorization` value answering `challenge` for `req`.
pub fn authorization(
    challenge: &Challenge,
    credentials: &Credentials,
    req: &DigestRequest<'_>,
) -> Result<String, DigestError> {
    let qop = challenge.choose_qop()?;
    let resp = response(challenge, credentials, qop, req);
    let mut v = format!(
        "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{resp}\", algorithm={}",
        quote_safe(&credentials.username),
        quote_safe(&challenge.realm),
        quote_safe(&challenge.nonce),
        quote_safe(req.uri),
        challenge.algorithm.as_str(),
    );
    if let Some(o) = &challenge.opaque {
        let _ = write!(v, ", opaque=\"{}\"", quote_safe(o));
    }
    match qop {
        Qop::None => {}
        Qop::Auth | Qop::AuthInt => {
            let name = if qop == Qop::Auth { "auth" } else { "auth-int" };
            let _ = write!(
                v,
                ", qop={name}, nc={:08x}, cnonce=\"{}\"",
                req.nc,
                quote_safe(req.cnonce)
            );
        }
    }
    Ok(v)
}

/// Escapes `"` and `\` for a quoted-string and drops control characters.
fn quote_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Splits `name=value, name="quoted value", …` (values unquoted, escapes removed). `None` when
/// the list is malformed.
pub(crate) fn auth_params(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            if !(c.is_ascii_alphanumeric() || "-_.!%*+`'~".contains(c)) {
                return None;
            }
            name.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if name.is_empty() || chars.next() != Some('=') {
            return None;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
            if value.is_empty() {
                return None;
            }
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            None | Some(',') => {}
            Some(_) => return None,
        }
        out.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn creds(user: &str, pass: &str) -> Credentials {
        Credentials {
            username: user.into(),
            password: pass.into(),
        }
    }

    /// RFC 2617 §3.5: the worked example.
    #[test]
    fn rfc2617_example() {
        let c = Challenge::parse(
            "Digest\r\n realm=\"testrealm@host.com\",\r\n qop=\"auth,auth-int\",\r\n \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\",\r\n \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        assert_eq!(c.realm, "testrealm@host.com");
        assert_eq!(c.qop, ["auth", "auth-int"]);
        assert_eq!(c.algorithm, Algorithm::Md5);
        let req = DigestRequest {
            method: "GET",
            uri: "/dir/index.html",
            body: b"",
            cnonce: "0a4f113b",
            nc: 1,
        };
        let creds = creds("Mufasa", "Circle Of Life");
        assert_eq!(
            response(&c, &creds, Qop::Auth, &req),
            "6629fae49393a05397450978507c4ef1"
        );
        let header = authorization(&c, &creds, &req).unwrap();
        assert_eq!(
            header,
            "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", \
             response=\"6629fae49393a05397450978507c4ef1\", algorithm=MD5, \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\", qop=auth, nc=00000001, \
             cnonce=\"0a4f113b\""
        );
    }

    /// RFC 7616 §3.9.1: the same request answered with MD5 and with SHA-256.
    #[test]
    fn rfc7616_examples() {
        let req = DigestRequest {
            method: "GET",
            uri: "/dir/index.html",
            body: b"",
            cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            nc: 1,
        };
        let creds = creds("Mufasa", "Circle of Life");
        let base = "realm=\"http-auth@example.org\", qop=\"auth, auth-int\", \
                    nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
                    opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";
        let sha = Challenge::parse(&format!("Digest {base}, algorithm=SHA-256")).unwrap();
        assert_eq!(sha.algorithm, Algorithm::Sha256);
        assert_eq!(
            response(&sha, &creds, Qop::Auth, &req),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        let md5 = Challenge::parse(&format!("Digest {base}, algorithm=MD5")).unwrap();
        assert_eq!(
            response(&md5, &creds, Qop::Auth, &req),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
    }

    #[test]
    fn rfc2069_without_qop_and_sess() {
        let c = Challenge::parse("Digest realm=\"r\", nonce=\"n\"").unwrap();
        assert_eq!(c.choose_qop(), Ok(Qop::None));
        let req = DigestRequest {
            method: "INVITE",
            uri: "sip:bob@192.0.2.4",
            body: b"",
            cnonce: "c",
            nc: 1,
        };
        let cr = creds("u", "p");
        let ha1 = Algorithm::Md5.hex(b"u:r:p");
        let ha2 = Algorithm::Md5.hex(b"INVITE:sip:bob@192.0.2.4");
        assert_eq!(
            response(&c, &cr, Qop::None, &req),
            Algorithm::Md5.hex(format!("{ha1}:n:{ha2}").as_bytes())
        );
        let h = authorization(&c, &cr, &req).unwrap();
        assert!(!h.contains("qop") && !h.contains("cnonce"), "{h}");

        let s = Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=MD5-sess, qop=auth")
            .unwrap();
        let sess_ha1 = Algorithm::Md5.hex(format!("{ha1}:n:c").as_bytes());
        assert_eq!(
            response(&s, &cr, Qop::Auth, &req),
            Algorithm::Md5.hex(format!("{sess_ha1}:n:00000001:c:auth:{ha2}").as_bytes())
        );
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "Basic realm=\"x\"",
            "Digest realm=\"x\"",
            "Digest nonce=\"x\"",
            "Digest realm=\"x, nonce=\"y\"",
            "Digest realm=x nonce=y",
            "Digest =x",
        ] {
            assert_eq!(Challenge::parse(bad), Err(DigestError::Malformed), "{bad}");
        }
        assert_eq!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256"),
            Err(DigestError::UnsupportedAlgorithm)
        );
        let c = Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=\"auth-conf\"").unwrap();
        assert_eq!(c.choose_qop(), Err(DigestError::UnsupportedQop));
        let c = Challenge::parse("digest REALM=r, Nonce=\"a\\\"b\", stale=TRUE").unwrap();
        assert_eq!(
            (c.realm.as_str(), c.nonce.as_str(), c.stale),
            ("r", "a\"b", true)
        );
    }

    #[test]
    fn password_never_printed() {
        let c = creds("alice", "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        let ch = Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=auth").unwrap();
        let req = DigestRequest {
            method: "INVITE",
            uri: "sip:x@192.0.2.1",
            body: b"",
            cnonce: "c",
            nc: 1,
        };
        assert!(!authorization(&ch, &c, &req).unwrap().contains("s3cret"));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,300}") {
            let _ = Challenge::parse(&s);
            let _ = Challenge::parse(&format!("Digest {s}"));
        }

        #[test]
        fn quoted_values_round_trip(realm in "[ -~]{0,40}", nonce in "[!-~]{1,40}") {
            let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
            let text = format!("Digest realm=\"{}\", nonce=\"{}\"", q(&realm), q(&nonce));
            let c = Challenge::parse(&text).unwrap();
            prop_assert_eq!(c.realm, realm);
            prop_assert_eq!(c.nonce, nonce);
        }
    }
}

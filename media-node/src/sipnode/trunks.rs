//! SIP trunks: who may send the node calls, how each proves it, and whose calls they are.
//!
//! A trunk has a name, source networks (CIDR) and/or Digest credentials, and optionally the
//! tenant its calls belong to. An INVITE is matched to a trunk like this:
//!
//! 1. the first trunk whose networks hold the source address: admitted if the trunk has no
//!    credentials, else its Digest answer is checked (a missing or stale one is challenged
//!    with `401`, a wrong one refused with `403`);
//! 2. from any other address, a trunk with credentials and no networks (reachable from
//!    anywhere): picked by the `username` of the INVITE's Digest answer and checked; no answer
//!    gets a `401` challenge;
//! 3. nothing matches: `403`.
//!
//! All trunks share one realm and one nonce key, so a challenge issued for one verifies for
//! any. Other requests (in-dialog BYE, OPTIONS …) are let in by the SIP core from every trunk's
//! networks, and from anywhere when some trunk is reachable from anywhere (its INVITEs are
//! still challenged here).
//!
//! A trunk file (`vaani dev --sip-trunks FILE`) is TOML; passwords come from the environment,
//! never from the file:
//!
//! ```toml
//! [[trunk]]
//! name = "exotel-mumbai"
//! tenant = "acme"                          # calls from it belong to acme
//! agent = "billing"                        # and are answered by this agent
//! allow = ["203.0.113.0/24"]               # its signalling addresses
//!
//! [[trunk]]
//! name = "office-pbx"
//! tenant = "acme"
//! auth_user = "acme-pbx"                   # Digest from anywhere
//! auth_password_env = "ACME_PBX_PASSWORD"
//! ```

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::sip::digest::Credentials;
use crate::sip::digest_server::{authorization_username, DigestVerifier, Verdict};
use crate::sip::uas::canonical_ip;

/// One trunk.
#[derive(Debug, Clone)]
pub struct Trunk {
    pub name: String,
    /// Source networks; empty: any address, Digest required.
    pub allow: Vec<IpNet>,
    /// Digest credentials its INVITEs must answer with.
    pub auth: Option<DigestVerifier>,
    /// The tenant of its calls (else the call context or the node's default decides).
    pub tenant: Option<String>,
    /// The agent that answers its calls unless the call context names one.
    pub agent: Option<String>,
}

/// What to do with an INVITE.
#[derive(Debug)]
pub enum Admission<'a> {
    /// It comes from this trunk.
    Trunk(&'a Trunk),
    /// Ask for Digest credentials: `401` with these `WWW-Authenticate` values.
    Challenge(Vec<String>),
    /// `403`, for this reason (for logs).
    Refuse(&'static str),
}

/// The node's trunks, in matching order.
#[derive(Debug, Clone, Default)]
pub struct Trunks {
    trunks: Vec<Trunk>,
}

/// Why a trunk list was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrunkError {
    #[error("trunk file: {0}")]
    Syntax(String),
    #[error("trunk #{0}: a name is required (letters, digits, - _ .; at most 64)")]
    BadName(usize),
    #[error("trunk {0:?} appears twice")]
    Duplicate(String),
    #[error("trunk {0:?}: give it `allow` networks or Digest credentials (or both)")]
    Open(String),
    #[error("trunk {0:?}: `auth_user` and `auth_password_env` go together")]
    HalfAuth(String),
    #[error("trunk {name:?}: the environment variable {var} (its password) is not set or empty")]
    NoPassword { name: String, var: String },
    #[error("trunk {0:?}: `auth_user` may not contain quotes or backslashes")]
    BadUser(String),
    #[error("trunk {0:?}: the tenant id is not valid")]
    BadTenant(String),
    #[error("trunk {0:?}: the agent id must be 1-64 of A-Z a-z 0-9 - _")]
    BadAgent(String),
    #[error("no trunks: nobody could call the node")]
    Empty,
}

/// A trunk as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrunkSpec {
    name: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    allow: Vec<IpNet>,
    #[serde(default)]
    auth_user: Option<String>,
    #[serde(default)]
    auth_password_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrunkFile {
    #[serde(default)]
    trunk: Vec<TrunkSpec>,
}

/// The realm of every trunk's challenges.
pub const REALM: &str = "vaani";

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Trunks {
    /// Trunks in matching order; at least one.
    pub fn new(trunks: Vec<Trunk>) -> Result<Trunks, TrunkError> {
        if trunks.is_empty() {
            return Err(TrunkError::Empty);
        }
        for (i, t) in trunks.iter().enumerate() {
            if !valid_name(&t.name) {
                return Err(TrunkError::BadName(i + 1));
            }
            if trunks[..i].iter().any(|o| o.name == t.name) {
                return Err(TrunkError::Duplicate(t.name.clone()));
            }
            if t.allow.is_empty() && t.auth.is_none() {
                return Err(TrunkError::Open(t.name.clone()));
            }
            if t.tenant
                .as_deref()
                .is_some_and(|id| !vaani_core::tenant::valid_id(id))
            {
                return Err(TrunkError::BadTenant(t.name.clone()));
            }
            if t.agent
                .as_deref()
                .is_some_and(|id| !super::admission::valid_agent_id(id))
            {
                return Err(TrunkError::BadAgent(t.name.clone()));
            }
        }
        Ok(Trunks { trunks })
    }

    /// Reads a trunk file (see the module docs); passwords through `env` (the process
    /// environment in production), Digest nonces signed with `key`.
    pub fn parse(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
        key: [u8; 32],
    ) -> Result<Trunks, TrunkError> {
        let file: TrunkFile =
            toml::from_str(text).map_err(|e| TrunkError::Syntax(e.to_string()))?;
        let mut trunks = Vec::with_capacity(file.trunk.len());
        for (i, spec) in file.trunk.into_iter().enumerate() {
            if !valid_name(&spec.name) {
                return Err(TrunkError::BadName(i + 1));
            }
            let auth = match (spec.auth_user, spec.auth_password_env) {
                (None, None) => None,
                (Some(user), Some(var)) => {
                    if user.is_empty() || user.contains(['"', '\\']) {
                        return Err(TrunkError::BadUser(spec.name));
                    }
                    let Some(password) = env(&var).filter(|p| !p.is_empty()) else {
                        return Err(TrunkError::NoPassword {
                            name: spec.name,
                            var,
                        });
                    };
                    Some(DigestVerifier::new(
                        REALM,
                        Credentials {
                            username: user,
                            password,
                        },
                        key,
                    ))
                }
                _ => return Err(TrunkError::HalfAuth(spec.name)),
            };
            trunks.push(Trunk {
                name: spec.name,
                allow: spec.allow,
                auth,
                tenant: spec.tenant,
                agent: spec.agent,
            });
        }
        Trunks::new(trunks)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Trunk> {
        self.trunks.iter()
    }

    /// The networks the SIP core lets requests in from: every trunk's, or everywhere when a
    /// trunk is reachable from anywhere.
    pub fn core_allow(&self) -> Vec<IpNet> {
        if self.trunks.iter().any(|t| t.allow.is_empty()) {
            return [IpAddr::from([0u8; 4]), IpAddr::from([0u16; 8])]
                .into_iter()
                .filter_map(|a| IpNet::new(a, 0).ok())
                .collect();
        }
        let mut nets: Vec<IpNet> = self.trunks.iter().flat_map(|t| t.allow.clone()).collect();
        nets.dedup();
        nets
    }

    /// Whether `ip` is inside some trunk's networks.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trunks
            .iter()
            .flat_map(|t| &t.allow)
            .any(|n| n.contains(&ip))
    }

    /// Which trunk an INVITE from `source` comes from (see the module docs). `authorization`
    /// is its `Authorization` value; `now` is unix seconds.
    pub fn admit(
        &self,
        source: IpAddr,
        method: &str,
        request_uri: &str,
        authorization: Option<&str>,
        now: u64,
    ) -> Admission<'_> {
        let source = canonical_ip(source);
        if let Some(trunk) = self
            .trunks
            .iter()
            .find(|t| t.allow.iter().any(|n| n.contains(&source)))
        {
            return match &trunk.auth {
                None => Admission::Trunk(trunk),
                Some(auth) => check(trunk, auth, method, request_uri, authorization, now),
            };
        }
        let mut open = self.trunks.iter().filter(|t| t.allow.is_empty());
        let Some(first) = open.next() else {
            return Admission::Refuse("source outside every trunk's networks");
        };
        let username = authorization.and_then(authorization_username);
        let Some(username) = username else {
            // No answer (or none we can read) yet: challenge.
            return first
                .auth
                .as_ref()
                .map_or(Admission::Refuse("no credentials"), |a| {
                    Admission::Challenge(a.challenges(now, false))
                });
        };
        let trunk = std::iter::once(first)
            .chain(open)
            .find(|t| t.auth.as_ref().is_some_and(|a| a.username() == username));
        match trunk {
            Some(trunk) => match &trunk.auth {
                Some(auth) => check(trunk, auth, method, request_uri, authorization, now),
                None => Admission::Refuse("no credentials"),
            },
            None => Admission::Refuse("unknown Digest user"),
        }
    }
}

/// Checks a trunk's Digest answer.
fn check<'a>(
    trunk: &'a Trunk,
    auth: &DigestVerifier,
    method: &str,
    request_uri: &str,
    authorization: Option<&str>,
    now: u64,
) -> Admission<'a> {
    match auth.verify(method, request_uri, authorization, now) {
        Verdict::Valid => Admission::Trunk(trunk),
        Verdict::Missing => Admission::Challenge(auth.challenges(now, false)),
        Verdict::Stale => Admission::Challenge(auth.challenges(now, true)),
        Verdict::Invalid => Admission::Refuse("wrong Digest credentials"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::sip::digest::{self, Challenge, DigestRequest};

    const KEY: [u8; 32] = [7; 32];
    const NOW: u64 = 1_800_000_000;
    const URI: &str = "sip:vaani@192.0.2.1";

    fn env(var: &str) -> Option<String> {
        match var {
            "PBX_PW" => Some("s3cret".into()),
            "OTHER_PW" => Some("other".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn sample() -> Trunks {
        Trunks::parse(
            r#"
            [[trunk]]
            name = "carrier"
            tenant = "acme"
            agent = "billing"
            allow = ["203.0.113.0/24"]

            [[trunk]]
            name = "secure-carrier"
            allow = ["198.51.100.0/24"]
            auth_user = "carrier"
            auth_password_env = "OTHER_PW"

            [[trunk]]
            name = "office-pbx"
            tenant = "globex"
            auth_user = "pbx"
            auth_password_env = "PBX_PW"
            "#,
            env,
            KEY,
        )
        .unwrap()
    }

    /// A Digest answer to the first challenge in `challenges` as `user`/`password`.
    fn answer(challenges: &[String], user: &str, password: &str) -> String {
        let ch = Challenge::parse(&challenges[0]).unwrap();
        digest::authorization(
            &ch,
            &Credentials {
                username: user.into(),
                password: password.into(),
            },
            &DigestRequest {
                method: "INVITE",
                uri: URI,
                body: b"",
                cnonce: "abc",
                nc: 1,
            },
        )
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sources_pick_their_trunk() {
        let t = sample();
        match t.admit(ip("203.0.113.9"), "INVITE", URI, None, NOW) {
            Admission::Trunk(tr) => {
                assert_eq!(tr.name, "carrier");
                assert_eq!(tr.tenant.as_deref(), Some("acme"));
                assert_eq!(tr.agent.as_deref(), Some("billing"));
            }
            other => panic!("{other:?}"),
        }
        // IPv4-mapped IPv6 is the same source.
        assert!(matches!(
            t.admit(ip("::ffff:203.0.113.9"), "INVITE", URI, None, NOW),
            Admission::Trunk(tr) if tr.name == "carrier"
        ));
    }

    #[test]
    fn a_trunk_with_networks_and_credentials_needs_both() {
        let t = sample();
        let Admission::Challenge(ch) = t.admit(ip("198.51.100.4"), "INVITE", URI, None, NOW) else {
            panic!("no challenge")
        };
        let good = answer(&ch, "carrier", "other");
        assert!(matches!(
            t.admit(ip("198.51.100.4"), "INVITE", URI, Some(&good), NOW),
            Admission::Trunk(tr) if tr.name == "secure-carrier"
        ));
        // The office PBX's credentials are not this trunk's.
        let wrong = answer(&ch, "pbx", "s3cret");
        assert!(matches!(
            t.admit(ip("198.51.100.4"), "INVITE", URI, Some(&wrong), NOW),
            Admission::Refuse(_)
        ));
    }

    #[test]
    fn elsewhere_digest_picks_the_trunk_by_username() {
        let t = sample();
        let Admission::Challenge(ch) = t.admit(ip("192.0.2.50"), "INVITE", URI, None, NOW) else {
            panic!("no challenge")
        };
        assert!(ch[0].contains("realm=\"vaani\""), "{ch:?}");
        let good = answer(&ch, "pbx", "s3cret");
        match t.admit(ip("192.0.2.50"), "INVITE", URI, Some(&good), NOW) {
            Admission::Trunk(tr) => assert_eq!(tr.tenant.as_deref(), Some("globex")),
            other => panic!("{other:?}"),
        }
        for (user, pw) in [("pbx", "wrong"), ("nobody", "s3cret"), ("carrier", "other")] {
            let bad = answer(&ch, user, pw);
            assert!(
                matches!(
                    t.admit(ip("192.0.2.50"), "INVITE", URI, Some(&bad), NOW),
                    Admission::Refuse(_)
                ),
                "{user}"
            );
        }
        // An hour later the nonce is stale: challenged again.
        assert!(matches!(
            t.admit(ip("192.0.2.50"), "INVITE", URI, Some(&good), NOW + 3600),
            Admission::Challenge(ch) if ch[0].contains("stale=true")
        ));
    }

    #[test]
    fn without_an_open_trunk_strangers_are_refused() {
        let t = Trunks::parse(
            "[[trunk]]\nname = \"a\"\nallow = [\"10.0.0.0/8\"]\n",
            env,
            KEY,
        )
        .unwrap();
        assert!(matches!(
            t.admit(ip("192.0.2.1"), "INVITE", URI, None, NOW),
            Admission::Refuse(_)
        ));
        assert_eq!(t.core_allow(), vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert_eq!(sample().core_allow().len(), 2, "everywhere, v4 and v6");
    }

    #[test]
    fn bad_files_are_refused_with_the_trunk_named() {
        let cases = [
            ("[[trunk]]\nname = \"a\"\n", "give it"),
            ("[[trunk]]\nname = \"\"\nallow = [\"10.0.0.0/8\"]\n", "name is required"),
            (
                "[[trunk]]\nname = \"a\"\nallow = [\"10.0.0.0/8\"]\n[[trunk]]\nname = \"a\"\nallow = [\"10.0.0.0/8\"]\n",
                "twice",
            ),
            ("[[trunk]]\nname = \"a\"\nauth_user = \"u\"\n", "go together"),
            (
                "[[trunk]]\nname = \"a\"\nauth_user = \"u\"\nauth_password_env = \"NOPE\"\n",
                "NOPE",
            ),
            (
                "[[trunk]]\nname = \"a\"\nauth_user = \"u\"\nauth_password_env = \"EMPTY\"\n",
                "EMPTY",
            ),
            ("[[trunk]]\nname = \"a\"\nallow = [\"10.0.0.0/33\"]\n", "trunk file"),
            ("[[trunk]]\nname = \"a\"\nallow = [\"10.0.0.0/8\"]\ncolour = 1\n", "colour"),
            (
                "[[trunk]]\nname = \"a\"\nallow = [\"10.0.0.0/8\"]\ntenant = \"no spaces\"\n",
                "tenant",
            ),
            (
                "[[trunk]]\nname = \"a\"\nallow = [\"10.0.0.0/8\"]\nagent = \"../x\"\n",
                "agent id",
            ),
            ("", "no trunks"),
        ];
        for (text, want) in cases {
            let err = Trunks::parse(text, env, KEY).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}

//! Who may place a call: the call context an INVITE carries and the check of its token.
//!
//! The answer webhook connects a provider's call to a node with the `X-Vaani-Tenant`,
//! `X-Vaani-Call-Id` and `X-Vaani-Token` headers (`vaani_core::answer`); the token is an HMAC
//! over `(tenant, call id, expiry)` with the key the webhook and node share
//! (`vaani_core::token`). Plivo forwards custom headers only as `X-PH-` plus an alphanumeric
//! name, so from Plivo they arrive as `X-PH-Vaanitenant` / `X-PH-Vaanicallid` /
//! `X-PH-Vaanitoken` with percent-encoded values (`vaani_telephony::plivo`); both spellings are
//! read, and values are percent-decoded. Without a tenant header the tenant of the trunk the
//! INVITE came from ([`super::trunks`]) is used, else the node's default tenant (`demo` under
//! `vaani dev`); a tenant header naming another tenant than its trunk's is refused. A forged
//! tenant header gains nothing: the token only verifies for the tenant it was issued to.
//!
//! INVITEs without these headers are calls straight from a trunk (or sipp): admitted when the
//! node does not require tokens, since the trunk's networks or Digest answer already vouched for
//! the sender.
//! Half a pair (call id without token or the reverse) is refused.

use chrono::{DateTime, Utc};
pub use vaani_core::answer::TENANT_HEADER;
use vaani_core::answer::{CALL_ID_HEADER, TOKEN_HEADER};
use vaani_core::token::TokenError;

use crate::sip::message::Headers;

/// The same headers as Plivo delivers them (`X-PH-` + `vaani_telephony::plivo::SIP_HEADER_*`).
const PLIVO_TENANT_HEADER: &str = "X-PH-Vaanitenant";
const PLIVO_CALL_ID_HEADER: &str = "X-PH-Vaanicallid";
const PLIVO_TOKEN_HEADER: &str = "X-PH-Vaanitoken";
/// The agent that should answer (an id the node knows): ours, and as Plivo delivers it.
pub const AGENT_HEADER: &str = "X-Vaani-Agent";
const PLIVO_AGENT_HEADER: &str = "X-PH-Vaaniagent";

/// A call-context header in either spelling, trimmed and percent-decoded.
fn context_header(headers: &Headers, ours: &str, plivo: &str) -> Result<Option<String>, Refusal> {
    let Some(raw) = headers.get(ours).or_else(|| headers.get(plivo)) else {
        return Ok(None);
    };
    let raw = raw.trim();
    if raw.len() > MAX_TOKEN_LEN * 3 {
        return Err(Refusal::Malformed);
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|v| Some(v.into_owned()))
        .map_err(|_| Refusal::Malformed)
}

/// Longest call id / token / tenant accepted (they are short; longer is an attack).
const MAX_ID_LEN: usize = 128;
const MAX_TOKEN_LEN: usize = 256;

/// What the node checks.
#[derive(Debug, Clone)]
pub struct AdmissionPolicy {
    /// The media token key shared with the answer webhook.
    pub token_key: std::sync::Arc<Vec<u8>>,
    /// Tenant for INVITEs without `X-Vaani-Tenant`.
    pub default_tenant: Option<String>,
    /// Refuse INVITEs that carry no token.
    pub require_token: bool,
}

/// Who the call is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    pub tenant: Option<String>,
    /// Our call id, when the answer webhook sent the call here.
    pub call_id: Option<String>,
    /// The agent asked for (`X-Vaani-Agent`), if any.
    pub agent: Option<String>,
}

/// Why a call was refused (all answered `403`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no media token")]
    MissingToken,
    #[error("call id and token must come together")]
    Incomplete,
    #[error("no tenant for the call")]
    NoTenant,
    #[error("malformed call context header")]
    Malformed,
    #[error("the call's tenant is not its trunk's")]
    TenantMismatch,
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// Whether `s` is an agent id we accept: 1–64 of `A-Z a-z 0-9 - _` (a file stem).
pub fn valid_agent_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Whether `s` is a call id we accept (in `X-Vaani-Call-Id` or `POST /node/calls`).
pub(crate) fn valid_call_id(s: &str) -> bool {
    valid_id(s, MAX_ID_LEN)
}

fn valid_id(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
}

impl AdmissionPolicy {
    /// Checks an INVITE's call context at wall-clock time `now`. `trunk_tenant` is the tenant
    /// of the trunk it came from, if that trunk has one: the call is that tenant's, and a
    /// context naming another tenant is refused.
    pub fn admit(
        &self,
        headers: &Headers,
        trunk_tenant: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<CallContext, Refusal> {
        let call_id = context_header(headers, CALL_ID_HEADER, PLIVO_CALL_ID_HEADER)?;
        let token = context_header(headers, TOKEN_HEADER, PLIVO_TOKEN_HEADER)?;
        let agent = match context_header(headers, AGENT_HEADER, PLIVO_AGENT_HEADER)? {
            Some(a) if !valid_agent_id(&a) => return Err(Refusal::Malformed),
            a => a,
        };
        let tenant = match context_header(headers, TENANT_HEADER, PLIVO_TENANT_HEADER)? {
            Some(t) if !vaani_core::tenant::valid_id(&t) => return Err(Refusal::Malformed),
            Some(t) if trunk_tenant.is_some_and(|tt| tt != t) => {
                return Err(Refusal::TenantMismatch)
            }
            Some(t) => Some(t),
            None => trunk_tenant
                .map(str::to_string)
                .or_else(|| self.default_tenant.clone()),
        };
        match (call_id.as_deref(), token.as_deref()) {
            (None, None) if self.require_token => Err(Refusal::MissingToken),
            (None, None) => Ok(CallContext {
                tenant,
                call_id: None,
                agent,
            }),
            (Some(call_id), Some(token)) => {
                if !valid_id(call_id, MAX_ID_LEN) || token.len() > MAX_TOKEN_LEN {
                    return Err(Refusal::Malformed);
                }
                let tenant = tenant.ok_or(Refusal::NoTenant)?;
                vaani_core::token::verify(&self.token_key, token, &tenant, call_id, now)?;
                Ok(CallContext {
                    tenant: Some(tenant),
                    call_id: Some(call_id.to_string()),
                    agent,
                })
            }
            _ => Err(Refusal::Incomplete),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sip::message::SipMessage;
    use std::sync::Arc;

    fn headers(extra: &str) -> Headers {
        let text = format!(
            "INVITE sip:vaani@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\n\
             From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:vaani@127.0.0.1>\r\n\
             Call-ID: x\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        SipMessage::parse(text.as_bytes())
            .unwrap()
            .headers()
            .clone()
    }

    fn policy(require: bool) -> AdmissionPolicy {
        AdmissionPolicy {
            token_key: Arc::new(b"key".to_vec()),
            default_tenant: Some("demo".into()),
            require_token: require,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn tokens() {
        let tok = vaani_core::token::issue(b"key", "demo", "c-1", now(), 300);
        let ok = policy(true)
            .admit(
                &headers(&format!("X-Vaani-Call-Id: c-1\r\nX-Vaani-Token: {tok}\r\n")),
                None,
                now(),
            )
            .unwrap();
        assert_eq!(ok.call_id.as_deref(), Some("c-1"));
        assert_eq!(ok.tenant.as_deref(), Some("demo"));
        // Another call id, another tenant, a wrong key, expiry: refused.
        let h = headers(&format!("X-Vaani-Call-Id: c-2\r\nX-Vaani-Token: {tok}\r\n"));
        assert!(matches!(
            policy(false).admit(&h, None, now()),
            Err(Refusal::Token(_))
        ));
        let h = headers(&format!(
            "X-Vaani-Call-Id: c-1\r\nX-Vaani-Token: {tok}\r\nX-Vaani-Tenant: acme\r\n"
        ));
        assert!(matches!(
            policy(false).admit(&h, None, now()),
            Err(Refusal::Token(_))
        ));
        let h = headers(&format!("X-Vaani-Call-Id: c-1\r\nX-Vaani-Token: {tok}\r\n"));
        let later = now() + chrono::Duration::seconds(301);
        assert_eq!(
            policy(false).admit(&h, None, later),
            Err(Refusal::Token(TokenError::Expired))
        );
        // The tenant header names the tenant the token is for.
        let tok = vaani_core::token::issue(b"key", "acme", "c-3", now(), 300);
        let h = headers(&format!(
            "X-Vaani-Call-Id: c-3\r\nX-Vaani-Token: {tok}\r\nX-Vaani-Tenant: acme\r\n"
        ));
        assert_eq!(
            policy(true)
                .admit(&h, None, now())
                .unwrap()
                .tenant
                .as_deref(),
            Some("acme")
        );
    }

    #[test]
    fn plivo_spelling_is_percent_decoded() {
        // What `<User sipHeaders="Vaanitenant=…,Vaanicallid=…,Vaanitoken=…">` delivers.
        let tok = vaani_core::token::issue(b"key", "acme", "call-0001", now(), 300);
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        char::from(b).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        };
        let h = headers(&format!(
            "X-PH-Vaanitenant: acme\r\nX-PH-Vaanicallid: {}\r\nX-PH-Vaanitoken: {}\r\n",
            enc("call-0001"),
            enc(&tok)
        ));
        let ok = policy(true).admit(&h, None, now()).unwrap();
        assert_eq!(ok.tenant.as_deref(), Some("acme"));
        assert_eq!(ok.call_id.as_deref(), Some("call-0001"));
        // Encoded bytes that are not a valid id after decoding are refused, not passed on.
        let h = headers("X-PH-Vaanicallid: a%0D%0Ab\r\nX-PH-Vaanitoken: x\r\n");
        assert_eq!(
            policy(false).admit(&h, None, now()),
            Err(Refusal::Malformed)
        );
        let h = headers("X-PH-Vaanitenant: %FF\r\n");
        assert_eq!(
            policy(false).admit(&h, None, now()),
            Err(Refusal::Malformed)
        );
    }

    #[test]
    fn missing_and_partial() {
        assert_eq!(
            policy(true).admit(&headers(""), None, now()),
            Err(Refusal::MissingToken)
        );
        assert_eq!(
            policy(false).admit(&headers(""), None, now()).unwrap(),
            CallContext {
                tenant: Some("demo".into()),
                call_id: None,
                agent: None
            }
        );
        assert_eq!(
            policy(false).admit(&headers("X-Vaani-Call-Id: c\r\n"), None, now()),
            Err(Refusal::Incomplete)
        );
        assert_eq!(
            policy(false).admit(&headers("X-Vaani-Token: v1.1.x\r\n"), None, now()),
            Err(Refusal::Incomplete)
        );
        assert_eq!(
            policy(false).admit(&headers("X-Vaani-Tenant: a b\r\n"), None, now()),
            Err(Refusal::Malformed)
        );
        let mut p = policy(false);
        p.default_tenant = None;
        assert_eq!(
            p.admit(
                &headers("X-Vaani-Call-Id: c\r\nX-Vaani-Token: v1.1.x\r\n"),
                None,
                now()
            ),
            Err(Refusal::NoTenant)
        );
    }

    #[test]
    fn the_agent_header_is_read_in_both_spellings() {
        let ctx = policy(false)
            .admit(&headers("X-Vaani-Agent: billing-2\r\n"), None, now())
            .unwrap();
        assert_eq!(ctx.agent.as_deref(), Some("billing-2"));
        let ctx = policy(false)
            .admit(&headers("X-PH-Vaaniagent: sales\r\n"), None, now())
            .unwrap();
        assert_eq!(ctx.agent.as_deref(), Some("sales"));
        assert_eq!(
            policy(false)
                .admit(&headers(""), None, now())
                .unwrap()
                .agent,
            None
        );
        for bad in ["../x", "a b", "a.b"] {
            assert_eq!(
                policy(false).admit(&headers(&format!("X-Vaani-Agent: {bad}\r\n")), None, now()),
                Err(Refusal::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_trunks_tenant_owns_its_calls() {
        // No context: the trunk's tenant, not the default.
        let ctx = policy(false)
            .admit(&headers(""), Some("acme"), now())
            .unwrap();
        assert_eq!(ctx.tenant.as_deref(), Some("acme"));
        // A context naming the same tenant is fine; another tenant is refused.
        let same = policy(false)
            .admit(&headers("X-Vaani-Tenant: acme\r\n"), Some("acme"), now())
            .unwrap();
        assert_eq!(same.tenant.as_deref(), Some("acme"));
        assert_eq!(
            policy(false).admit(&headers("X-Vaani-Tenant: demo\r\n"), Some("acme"), now()),
            Err(Refusal::TenantMismatch)
        );
    }
}

//! signalwire wire formats (being written).

use crate::common::*;
use vaani_core::AnswerPlan;
use vaani_events::CallEvent;

pub fn verify(_req: &WebhookRequest, _cfg: &VerifyConfig) -> Result<(), VerifyError> {
    Err(VerifyError::SignatureMismatch)
}

pub fn parse(_ct: Option<&str>, _body: &[u8], _q: Option<&str>) -> Result<CallEvent, ParseError> {
    Err(ParseError::Syntax("unimplemented"))
}

pub fn render_answer(_plan: &AnswerPlan) -> Result<AnswerDocument, RenderError> {
    Err(RenderError::Unsupported { provider: "signalwire", what: "answer yet" })
}

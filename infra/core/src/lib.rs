//! Vaani's pure domain, shared by the control plane (`functions/`) and the media nodes.
//!
//! Nothing here performs I/O or reads the clock: callers pass `now` in. That keeps the call
//! state machine, routing and answer planning testable in virtual time.

pub mod answer;
pub mod call;
pub mod nodes;
pub mod phone;
pub mod tenant;
pub mod token;

pub use answer::{AnswerAction, AnswerPlan};
pub use call::{apply, CallState, Transition};

//! sip (being written: issue 3).

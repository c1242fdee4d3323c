//! streams (being written: issue 3).

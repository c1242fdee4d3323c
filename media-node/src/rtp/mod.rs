//! rtp (being written: issue 3).

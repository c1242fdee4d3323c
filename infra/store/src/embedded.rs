//! Embedded adapter: one SQLite file (being written).

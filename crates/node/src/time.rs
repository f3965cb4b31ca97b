//! Wall-clock time, the only place the node reads it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub use ferry_model::clock::format_utc;

/// A short, file-name-safe UTC timestamp (e.g. `20261122-041505`).
pub fn file_stamp(ms: u64) -> String {
    format_utc(ms)
        .replace(['-', ':'], "")
        .replace('T', "-")
        .trim_end_matches('Z')
        .to_string()
}

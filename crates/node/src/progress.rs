//! Progress reporting, implemented by the CLI (a progress bar, or plain lines when nobody
//! watches a terminal) or not at all.

/// What a step counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Bytes read or written.
    Bytes,
    /// Changes (commits).
    Changes,
    /// Records.
    Records,
}

impl Unit {
    /// The unit's name in the plural, for "12 of 40 changes".
    pub fn plural(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::Changes => "changes",
            Unit::Records => "records",
        }
    }
}

/// Something a person may be waiting for.
pub trait Progress {
    /// A new step starts; `total` units are expected, if known.
    fn begin(&self, what: &str, total: Option<u64>, unit: Unit);
    /// `n` more units are done.
    fn advance(&self, n: u64);
    /// The step is over.
    fn end(&self);
}

/// No progress display.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &str, _: Option<u64>, _: Unit) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
}

//! Progress reporting, implemented by the CLI (a progress bar) or not at all.

/// Something a person may be waiting for.
pub trait Progress {
    /// A new step starts; `total` units are expected, if known.
    fn begin(&self, what: &str, total: Option<u64>);
    /// `n` more units are done.
    fn advance(&self, n: u64);
    /// The step is over.
    fn end(&self);
}

/// No progress display.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
}

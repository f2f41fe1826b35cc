//! The failures the HTTP adapters add.

use std::error::Error;
use std::fmt;

/// A [`ReplayBody`](super::ReplayBody) copy could not yield the whole body:
/// more than `cap` bytes went by (or the original failed) before it was
/// read. The retry layer does not send such a copy; this error is seen only
/// by code that sends copies itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayError {
    cap: usize,
}

impl ReplayError {
    pub(super) fn new(cap: usize) -> Self {
        ReplayError { cap }
    }

    /// The replay cap, in bytes.
    pub fn cap(&self) -> usize {
        self.cap
    }
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body cannot be replayed: it outgrew the {}-byte replay cap or failed",
            self.cap
        )
    }
}

impl Error for ReplayError {}

/// A fanned-out response that was too large to share went to another
/// caller, and this request could not be sent again on its own because it
/// has a body (only bodiless requests are rebuilt; [`RequestKey`](super::RequestKey)
/// gives keys only to those).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotShared(());

impl NotShared {
    pub(super) fn new() -> Self {
        NotShared(())
    }
}

impl fmt::Display for NotShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the shared response was over the fan-out limit and this request has a body to send again")
    }
}

impl Error for NotShared {}

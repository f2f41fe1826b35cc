//! The error a deadline layer returns when the time is up.

use std::fmt;
use std::time::Duration;

/// The request's deadline passed, or left too little time to start: the
/// call was not made, or was dropped when the deadline came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineExceeded {
    remaining: Duration,
    sent: bool,
}

impl DeadlineExceeded {
    /// The error for a request refused with `remaining` left (`sent:
    /// false`), or dropped in flight when its deadline passed (`sent:
    /// true`) — for a fake service or a classifier's test.
    pub fn new(remaining: Duration, sent: bool) -> DeadlineExceeded {
        DeadlineExceeded { remaining, sent }
    }

    /// The time that was left when the call was refused (zero if the
    /// deadline had passed, or when an attempt in flight was cut short).
    pub fn remaining(&self) -> Duration {
        self.remaining
    }

    /// Whether the request had been sent (and was dropped when the
    /// deadline came) rather than refused before it was sent.
    pub fn was_sent(&self) -> bool {
        self.sent
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sent {
            f.write_str("deadline exceeded: the request was dropped when its deadline passed")
        } else {
            write!(
                f,
                "deadline exceeded: {:?} left, too little to send the request",
                self.remaining
            )
        }
    }
}

impl std::error::Error for DeadlineExceeded {}

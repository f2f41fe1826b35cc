//! The error an adaptive throttle returns when it sheds a call locally.

use std::fmt;

/// The throttle rejected the call on the client side, without calling the
/// inner service: the backend has been refusing too much of the recent
/// traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct Throttled {
    probability: f64,
}

impl Throttled {
    pub(super) fn new(probability: f64) -> Throttled {
        Throttled { probability }
    }

    /// The rejection probability at the moment of the call.
    pub fn probability(&self) -> f64 {
        self.probability
    }
}

impl fmt::Display for Throttled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "throttled on the client side (the backend accepts too little; rejection probability {:.3})",
            self.probability
        )
    }
}

impl std::error::Error for Throttled {}

use tower_layer::Layer;

use super::{Throttle, Throttler};
use crate::classify::RetryErrors;

/// Wraps services in [`Throttle`], all sharing one [`Throttler`].
#[derive(Debug, Clone)]
pub struct ThrottleLayer<C = RetryErrors> {
    throttler: Throttler,
    classify: C,
}

impl ThrottleLayer {
    /// A layer over `throttler`; every `Ok` counts as an accept.
    pub fn new(throttler: Throttler) -> Self {
        ThrottleLayer {
            throttler,
            classify: RetryErrors,
        }
    }
}

impl<C> ThrottleLayer<C> {
    /// Decides what the backend accepted: anything but a failure.
    pub fn classify<C2>(self, classify: C2) -> ThrottleLayer<C2> {
        ThrottleLayer {
            throttler: self.throttler,
            classify,
        }
    }

    /// The throttler.
    pub fn throttler(&self) -> &Throttler {
        &self.throttler
    }
}

impl<S, C: Clone> Layer<S> for ThrottleLayer<C> {
    type Service = Throttle<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttle::new(inner, self.throttler.clone(), self.classify.clone())
    }
}

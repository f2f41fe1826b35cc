//! The [`PaceLayer`].

use tower_layer::Layer;

use super::{Pace, Pacer};

/// Wraps services in [`Pace`], all sharing one [`Pacer`].
#[derive(Debug, Clone)]
pub struct PaceLayer {
    pacer: Pacer,
}

impl PaceLayer {
    /// A layer that paces through `pacer`.
    pub fn new(pacer: Pacer) -> Self {
        PaceLayer { pacer }
    }

    /// The pacer.
    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }
}

impl<S> Layer<S> for PaceLayer {
    type Service = Pace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Pace::new(inner, self.pacer.clone())
    }
}

//! The [`RejectionLayer`].

use tower_layer::Layer;

use super::service::HandleRejection;

/// Wraps services in [`HandleRejection`]: put it outermost on an axum
/// `Router`, above the breaker, throttle or pace layers.
#[derive(Debug, Clone, Copy, Default)]
pub struct RejectionLayer(());

impl RejectionLayer {
    /// The layer.
    pub const fn new() -> Self {
        RejectionLayer(())
    }
}

impl<S> Layer<S> for RejectionLayer {
    type Service = HandleRejection<S>;

    fn layer(&self, inner: S) -> HandleRejection<S> {
        HandleRejection::new(inner)
    }
}

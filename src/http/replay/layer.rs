//! The [`ReplayLayer`].

use tower_layer::Layer;

use super::service::Replay;

/// Records streaming request bodies (up to `cap` bytes) so that the retry
/// layer it wraps can send them again. See [`ReplayBody`](super::ReplayBody).
#[derive(Debug, Clone, Copy)]
pub struct ReplayLayer {
    cap: usize,
}

impl ReplayLayer {
    /// Records up to `cap` bytes of each request body.
    pub const fn new(cap: usize) -> Self {
        ReplayLayer { cap }
    }
}

impl<S> Layer<S> for ReplayLayer {
    type Service = Replay<S>;

    fn layer(&self, inner: S) -> Replay<S> {
        Replay::new(inner, self.cap)
    }
}

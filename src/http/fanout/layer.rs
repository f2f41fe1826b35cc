//! The [`FanoutLayer`].

use tower_layer::Layer;

use super::collect::Collect;
use super::service::Fanout;

/// Puts a coalesce or cache layer in front of an HTTP service, with
/// response bodies collected (up to `limit` bytes) so that every caller
/// gets a copy.
///
/// `layer` is the [`CoalesceLayer`](crate::coalesce::CoalesceLayer) or
/// [`CacheLayer`](crate::cache::CacheLayer) to apply (keyed with
/// [`RequestKey`](crate::http::RequestKey)); it wraps a [`Collect`](crate::http::Collect) of the
/// service. A body over the limit is not collected: the first caller to
/// pick the response up gets it streaming, every other caller that shared
/// the call makes its own call (so each gets a whole body), and the cache
/// does not store it.
#[derive(Debug, Clone)]
pub struct FanoutLayer<L> {
    limit: usize,
    layer: L,
}

impl<L> FanoutLayer<L> {
    /// Shares responses of up to `limit` bytes through `layer`.
    pub const fn new(limit: usize, layer: L) -> Self {
        FanoutLayer { limit, layer }
    }
}

impl<S: Clone, L: Layer<Collect<S>>> Layer<S> for FanoutLayer<L> {
    type Service = Fanout<S, L::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        let shared = self.layer.layer(Collect::new(inner.clone(), self.limit));
        Fanout::new(inner, shared)
    }
}

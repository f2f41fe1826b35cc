//! The [`CoalesceLayer`].

use std::fmt;
use std::hash::Hash;

use tower_layer::Layer;

use super::{Coalesce, Coalescer};

/// Wraps services in [`Coalesce`], all sharing one in-flight table.
pub struct CoalesceLayer<F, K, T> {
    key: F,
    coalescer: Coalescer<K, T>,
}

impl<F, K: Hash + Eq + Clone, T: Clone> CoalesceLayer<F, K, T> {
    /// Coalesces requests by `key(&request)`; `None` means "do not coalesce".
    pub fn new(key: F) -> Self {
        CoalesceLayer {
            key,
            coalescer: Coalescer::new(),
        }
    }

    /// The shared in-flight table (for [`forget`](Coalescer::forget) and
    /// [`in_flight`](Coalescer::in_flight)).
    pub fn coalescer(&self) -> &Coalescer<K, T> {
        &self.coalescer
    }
}

impl<S, F: Clone, K, T> Layer<S> for CoalesceLayer<F, K, T> {
    type Service = Coalesce<S, F, K, T>;

    fn layer(&self, inner: S) -> Self::Service {
        Coalesce::with_coalescer(inner, self.key.clone(), self.coalescer.clone())
    }
}

impl<F: Clone, K, T> Clone for CoalesceLayer<F, K, T> {
    fn clone(&self) -> Self {
        CoalesceLayer {
            key: self.key.clone(),
            coalescer: self.coalescer.clone(),
        }
    }
}

impl<F, K, T> fmt::Debug for CoalesceLayer<F, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoalesceLayer").finish_non_exhaustive()
    }
}

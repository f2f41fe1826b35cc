//! The Redis cache's [`ResponseFuture`]: a direct call, or a place in the
//! replica's flight for the key.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tracing::Span;

use super::Served;
use crate::BoxError;
use crate::cache::record_result;
use crate::coalesce::Waiter;
use crate::telemetry::{self, REDIS_LEASE, REDIS_WAIT_MS};

pin_project! {
    /// The future returned by [`RedisCache`](super::RedisCache).
    pub struct ResponseFuture<F, K, T>
    where
        K: Hash,
        K: Eq,
        K: Clone,
        T: Clone,
    {
        #[pin]
        kind: Kind<F, K, T>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, K, T>
    where
        K: Hash,
        K: Eq,
        K: Clone,
        T: Clone,
    {
        // No key: called directly.
        Direct { #[pin] future: F },
        // The flight of the request's key in this replica.
        Shared { waiter: Waiter<K, (T, Served)> },
    }
}

impl<F, K: Hash + Eq + Clone, T: Clone> ResponseFuture<F, K, T> {
    pub(super) fn direct(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Direct { future },
        }
    }

    pub(super) fn shared(waiter: Waiter<K, (T, Served)>) -> Self {
        ResponseFuture {
            kind: Kind::Shared { waiter },
        }
    }
}

impl<F, E, K, T> Future for ResponseFuture<F, K, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    K: Hash + Eq + Clone,
    T: Clone,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Direct { future } => Poll::Ready(ready!(future.poll(cx)).map_err(Into::into)),
            KindProj::Shared { waiter } => {
                Poll::Ready(ready!(waiter.poll(cx)).map(|(value, served)| {
                    record_result(served.result, served.expires_in);
                    let span = Span::current();
                    span.record(REDIS_LEASE, served.lease);
                    telemetry::count::redis_lease(served.lease, served.waited);
                    if !served.waited.is_zero() {
                        span.record(REDIS_WAIT_MS, telemetry::millis(served.waited));
                    }
                    value
                }))
            }
        }
    }
}

impl<F, K: Hash + Eq + Clone, T: Clone> fmt::Debug for ResponseFuture<F, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Direct { .. } => "direct",
            Kind::Shared { .. } => "shared",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

//! The cache's [`ResponseFuture`]: an answer from the cache, a direct call,
//! or a place in a coalesced load.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::record_result;
use crate::BoxError;
use crate::coalesce::Waiter;

pin_project! {
    /// The future returned by [`Cache`](super::Cache).
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
        // Answered from the cache (hit, early refresh, stale).
        Answered { answer: Option<Result<T, BoxError>>, result: &'static str, expires_in: Option<std::time::Duration> },
        // No key: called directly.
        Direct { #[pin] future: F },
        // A miss: waits for the coalesced load; `stale` is served if it fails.
        Load { waiter: Waiter<K, T>, stale: Option<T> },
    }
}

impl<F, K: Hash + Eq + Clone, T: Clone> ResponseFuture<F, K, T> {
    pub(super) fn answered(
        answer: Result<T, BoxError>,
        result: &'static str,
        expires_in: Option<std::time::Duration>,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Answered {
                answer: Some(answer),
                result,
                expires_in,
            },
        }
    }

    pub(super) fn direct(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Direct { future },
        }
    }

    pub(super) fn load(waiter: Waiter<K, T>, stale: Option<T>) -> Self {
        ResponseFuture {
            kind: Kind::Load { waiter, stale },
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
            KindProj::Answered {
                answer,
                result,
                expires_in,
            } => {
                record_result(result, *expires_in);
                Poll::Ready(
                    answer
                        .take()
                        .expect("a cache answer is polled after it completed"),
                )
            }
            KindProj::Direct { future } => Poll::Ready(ready!(future.poll(cx)).map_err(Into::into)),
            KindProj::Load { waiter, stale } => {
                let loaded = ready!(waiter.poll(cx));
                match (loaded, stale.take()) {
                    // Stale-if-error: the load failed, the old value is still within its bound.
                    (Err(_), Some(old)) => {
                        record_result("stale", None);
                        Poll::Ready(Ok(old))
                    }
                    (loaded, _) => {
                        record_result("miss", None);
                        Poll::Ready(loaded)
                    }
                }
            }
        }
    }
}

impl<F, K: Hash + Eq + Clone, T: Clone> fmt::Debug for ResponseFuture<F, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Answered { result, .. } => result,
            Kind::Direct { .. } => "direct",
            Kind::Load { .. } => "load",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

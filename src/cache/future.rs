//! The cache's [`ResponseFuture`]: an answer from the store, a direct call,
//! or a place in the key's flight; and what it records.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tracing::{Level, Span};

use super::store::{Looked, LookedKind, Served};
use crate::BoxError;
use crate::flight::{Keyed, Landed};
use crate::telemetry::{self, CACHE_EXPIRES_IN_MS, CACHE_RESULT, REDIS_LEASE, REDIS_WAIT_MS};

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
        keyed: Keyed<F, K, (T, Served)>,
        // Served if the load fails (stale-if-error).
        stale: Option<T>,
        // How a cached error was served (answered at once, recorded when polled).
        answered_error: Option<Served>,
    }
}

impl<F, K: Hash + Eq + Clone, T: Clone> ResponseFuture<F, K, T> {
    pub(super) fn direct(future: F) -> Self {
        ResponseFuture {
            keyed: Keyed::direct(future),
            stale: None,
            answered_error: None,
        }
    }

    pub(super) fn looked(looked: Looked<K, T>) -> Self {
        match looked.kind {
            LookedKind::Now(answer, served) => ResponseFuture {
                answered_error: answer.is_err().then_some(served),
                keyed: Keyed::answered(answer.map(|value| (value, served))),
                stale: None,
            },
            LookedKind::Flight { waiter, stale } => ResponseFuture {
                keyed: Keyed::shared(waiter),
                stale,
                answered_error: None,
            },
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
        let this = self.project();
        Poll::Ready(match ready!(this.keyed.poll_landed(cx)) {
            Landed::Direct(result) => result.map_err(Into::into),
            Landed::Shared(Ok((value, served))) => {
                record(&served);
                Ok(value)
            }
            // Stale-if-error: the load failed, the old value is still
            // within its bound.
            Landed::Shared(Err(error)) if this.answered_error.is_some() => {
                record(&this.answered_error.take().expect("checked"));
                Err(error)
            }
            Landed::Shared(Err(error)) => match this.stale.take() {
                Some(old) => {
                    record(&Served::new("stale"));
                    Ok(old)
                }
                None => {
                    record(&Served::new("miss"));
                    Err(error)
                }
            },
        })
    }
}

/// Records what the cache did for this request on the current span.
fn record(served: &Served) {
    let span = Span::current();
    span.record(CACHE_RESULT, served.result);
    telemetry::count::cache_result(served.result);
    let expires_in_ms = served.expires_in.map(telemetry::millis);
    if let Some(ms) = expires_in_ms {
        span.record(CACHE_EXPIRES_IN_MS, ms);
    }
    if let Some(lease) = served.lease {
        span.record(REDIS_LEASE, lease);
        telemetry::count::redis_lease(lease, served.waited);
        if !served.waited.is_zero() {
            span.record(REDIS_WAIT_MS, telemetry::millis(served.waited));
        }
    }
    tracing::event!(
        target: "dephase::cache",
        Level::TRACE,
        dephase.cache.result = served.result,
        dephase.cache.expires_in_ms = expires_in_ms,
        "cache lookup"
    );
}

impl<F, K: Hash + Eq + Clone, T: Clone> fmt::Debug for ResponseFuture<F, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("kind", &self.keyed.kind())
            .finish_non_exhaustive()
    }
}

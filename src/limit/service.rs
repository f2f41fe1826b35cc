//! The [`ConcurrencyLimit`] service: takes a slot for each call, queues
//! or turns away a caller over the limit, and tells the limiter how each
//! call went.

use std::fmt;
use std::task::{Context, Poll};

use tower_service::Service;

use super::future::{ResponseFuture, Wait, record_rejection};
use super::state::Limiter;
use crate::BoxError;
use crate::classify::{Classify, RetryErrors};

/// Which partition of the limit a request belongs to (its priority): the
/// index of a partition declared with
/// [`LimiterBuilder::partition`](super::LimiterBuilder::partition), or
/// `None` for no reserved share. Closures `Fn(&Req) -> Option<usize>` are
/// priorities; [`Limiter::partition_index`] turns a name into an index.
pub trait Priority<Req> {
    /// The partition of `request`.
    fn partition(&self, request: &Req) -> Option<usize>;
}

/// No priorities: every request shares the whole limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPriority;

impl<Req> Priority<Req> for NoPriority {
    #[inline]
    fn partition(&self, _: &Req) -> Option<usize> {
        None
    }
}

impl<F, Req> Priority<Req> for F
where
    F: Fn(&Req) -> Option<usize>,
{
    fn partition(&self, request: &Req) -> Option<usize> {
        self(request)
    }
}

/// A service with an adaptive concurrency limit. Errors are
/// [`BoxError`]s: the inner service's, or a
/// [`LimitExceeded`](super::error::LimitExceeded).
///
/// See the [module documentation](super).
pub struct ConcurrencyLimit<S, C = RetryErrors, P = NoPriority> {
    inner: S,
    limiter: Limiter,
    classify: C,
    priority: P,
}

impl<S> ConcurrencyLimit<S> {
    /// Limits calls to `inner` with `limiter`: every error is a drop (the
    /// overload signal), every request shares the whole limit.
    pub fn new(inner: S, limiter: Limiter) -> Self {
        ConcurrencyLimit {
            inner,
            limiter,
            classify: RetryErrors,
            priority: NoPriority,
        }
    }
}

impl<S, C, P> ConcurrencyLimit<S, C, P> {
    pub(super) fn from_parts(inner: S, limiter: Limiter, classify: C, priority: P) -> Self {
        ConcurrencyLimit {
            inner,
            limiter,
            classify,
            priority,
        }
    }

    /// The limiter.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    inner_accessors!();
}

impl<S, C, P, Req> Service<Req> for ConcurrencyLimit<S, C, P>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
    P: Priority<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, C, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let partition = self.priority.partition(&request);
        if let Some(permit) = self.limiter.try_acquire(partition) {
            let future = self.inner.call(request);
            return ResponseFuture::called(future, permit, self.classify.clone());
        }
        self.over_limit(partition, request)
    }
}

impl<S, C, P> ConcurrencyLimit<S, C, P> {
    /// Over the limit: queue the caller, or turn it away. Out of line: the
    /// admitted call should not pay for its size.
    #[cold]
    #[inline(never)]
    fn over_limit<Req>(
        &mut self,
        partition: Option<usize>,
        request: Req,
    ) -> ResponseFuture<S, C, Req>
    where
        S: Service<Req> + Clone,
        C: Clone,
    {
        let classify = self.classify.clone();
        let waiter = self
            .limiter
            .shared
            .max_wait
            .and_then(|max_wait| Some((max_wait, self.limiter.enqueue(partition)?)));
        let Some((max_wait, waiter)) = waiter else {
            let error = self
                .limiter
                .reject(partition, std::time::Duration::ZERO, false);
            record_rejection(&error);
            return ResponseFuture::rejected(error, classify);
        };
        // The instance made ready for this call waits with it (and keeps
        // what its readiness reserved); this one goes on with a clone.
        let clone = self.inner.clone();
        let readied = std::mem::replace(&mut self.inner, clone);
        let since = tokio::time::Instant::now();
        let wait = Wait {
            limiter: self.limiter.clone(),
            waiter: Some(waiter),
            service: Some(readied),
            request: Some(request),
            since,
        };
        // A wait too long for an instant never runs out (about 30 years).
        let until = since
            .checked_add(max_wait)
            .unwrap_or_else(|| since + std::time::Duration::from_secs(86_400 * 365 * 30));
        ResponseFuture::waiting(wait, until, classify)
    }
}

impl<S: Clone, C: Clone, P: Clone> Clone for ConcurrencyLimit<S, C, P> {
    fn clone(&self) -> Self {
        ConcurrencyLimit {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            classify: self.classify.clone(),
            priority: self.priority.clone(),
        }
    }
}

impl<S: fmt::Debug, C, P> fmt::Debug for ConcurrencyLimit<S, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

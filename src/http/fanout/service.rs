//! The [`Fanout`] service: the shared call, with what a caller needs kept
//! in case it must make its own.

use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::collected::{Collected, FanoutBody};
use super::future::FanoutFuture;
use crate::BoxError;

/// A coalescing or caching service for HTTP: responses collected up to a
/// limit and copied to every caller, over the limit each caller makes its
/// own call. Built by [`FanoutLayer`](super::FanoutLayer).
///
/// `S` is the service being shared; `C` the coalesce or cache layer in
/// front of a [`Collect`](crate::http::Collect) of it.
#[derive(Debug, Clone)]
pub struct Fanout<S, C> {
    inner: S,
    shared: C,
}

impl<S, C> Fanout<S, C> {
    pub(super) fn new(inner: S, shared: C) -> Self {
        Fanout { inner, shared }
    }

    /// The coalesce or cache service.
    pub fn shared(&self) -> &C {
        &self.shared
    }

    inner_accessors!();
}

impl<S, C, RB, B> Service<Request<RB>> for Fanout<S, C>
where
    S: Service<Request<RB>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError>,
    C: Service<Request<RB>, Response = Collected<B>> + Clone,
    C::Error: Into<BoxError>,
    RB: Body + Default,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = Response<FanoutBody<B>>;
    type Error = BoxError;
    type Future = FanoutFuture<S, C::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.shared.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<RB>) -> Self::Future {
        let (parts, body) = request.into_parts();
        // A bodiless request can be rebuilt if its caller must make its own call.
        let retained = body
            .is_end_stream()
            .then(|| (parts.clone(), self.inner.clone()));
        // The readied instance takes this call and is then dropped: a hit or
        // a coalesced follower does not call the service below, and what its
        // readiness reserved there (a `ConcurrencyLimit` permit, a `Buffer`
        // slot) must not stay with the caller while this request may make
        // its own call through another instance — that call would wait for
        // it for ever.
        let clone = self.shared.clone();
        let mut readied = std::mem::replace(&mut self.shared, clone);
        FanoutFuture::new(readied.call(Request::from_parts(parts, body)), retained)
    }
}

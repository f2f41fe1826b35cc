//! The [`Replay`] service: wraps each request body in a [`ReplayBody`].

use std::task::{Context, Poll};

use http::Request;
use http_body::Body;

use super::body::ReplayBody;

/// Wraps every request body in a [`ReplayBody`] with the same cap, so that
/// the retry layer inside it can send streaming bodies again. Built by
/// [`ReplayLayer`](super::ReplayLayer); put it outside the retry layer.
#[derive(Debug, Clone)]
pub struct Replay<S> {
    inner: S,
    cap: usize,
}

impl<S> Replay<S> {
    /// Records request bodies of up to `cap` bytes for `inner`.
    pub fn new(inner: S, cap: usize) -> Self {
        Replay { inner, cap }
    }

    inner_accessors!();
}

impl<S, B> tower_service::Service<Request<B>> for Replay<S>
where
    S: tower_service::Service<Request<ReplayBody<B>>>,
    B: Body,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> S::Future {
        let cap = self.cap;
        self.inner
            .call(request.map(|body| ReplayBody::new(body, cap)))
    }
}

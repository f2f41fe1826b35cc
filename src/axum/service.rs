//! The [`HandleRejection`] service.

use std::convert::Infallible;
use std::task::{Context, Poll, ready};

use axum_core::response::{IntoResponse, Response};
use tower_service::Service;

use super::future::ResponseFuture;
use crate::BoxError;

/// A service that never fails: dephase's rejections become their responses
/// (see the [module docs](super)), any other error a `500`.
#[derive(Debug)]
pub struct HandleRejection<S> {
    inner: S,
    /// `inner` failed to get ready: the next call is answered with this.
    failed: Option<BoxError>,
}

impl<S> HandleRejection<S> {
    /// Answers `inner`'s rejections.
    pub fn new(inner: S) -> Self {
        HandleRejection {
            inner,
            failed: None,
        }
    }

    inner_accessors!();
}

impl<S, Req> Service<Req> for HandleRejection<S>
where
    S: Service<Req>,
    S::Response: IntoResponse,
    S::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.failed.is_some() {
            return Poll::Ready(Ok(()));
        }
        // A service that fails to get ready is not called: the next call
        // is answered with its error's response.
        if let Err(error) = ready!(self.inner.poll_ready(cx)) {
            self.failed = Some(error.into());
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.failed.take() {
            Some(error) => ResponseFuture::answered(super::response::error_response(error)),
            None => ResponseFuture::called(self.inner.call(request)),
        }
    }
}

impl<S: Clone> Clone for HandleRejection<S> {
    fn clone(&self) -> Self {
        HandleRejection::new(self.inner.clone())
    }
}

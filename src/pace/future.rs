//! The paced call's [`ResponseFuture`]: the send-later
//! engine's wait-ready-send, or the overload error.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_service::Service;

use super::error::Overloaded;
use super::pacer::Turn;
use crate::BoxError;
use crate::later::SendLater;

pin_project! {
    /// The future returned by [`Pace`](super::Pace).
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        kind: Kind<S, Req>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, Req>
    where
        S: Service<Req>,
    {
        Later { #[pin] later: SendLater<S, Req, Turn> },
        Overloaded { error: Option<Overloaded> },
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    pub(super) fn later(later: SendLater<S, Req, Turn>) -> Self {
        ResponseFuture {
            kind: Kind::Later { later },
        }
    }

    pub(super) fn overloaded(error: Overloaded) -> Self {
        ResponseFuture {
            kind: Kind::Overloaded { error: Some(error) },
        }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Later { later } => Poll::Ready(ready!(later.poll(cx)).map_err(Into::into)),
            KindProj::Overloaded { error } => Poll::Ready(Err(error
                .take()
                .expect("an overloaded future is polled after it completed")
                .into())),
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Later { later } => later as &dyn fmt::Debug,
            Kind::Overloaded { error } => error as &dyn fmt::Debug,
        };
        f.debug_struct("ResponseFuture")
            .field("kind", kind)
            .finish_non_exhaustive()
    }
}

//! The [`ResponseFuture`] of a call with faults: the send-later engine's
//! wait-ready-send, or an injected failure after its delay.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::error::Injected;
use super::service::Respond;
use crate::BoxError;
use crate::later::SendLater;

pin_project! {
    /// The future returned by [`Fault`](super::Fault).
    pub struct ResponseFuture<S, R, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        kind: Kind<S, R, Req>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, R, Req>
    where
        S: Service<Req>,
    {
        Later { #[pin] later: SendLater<S, Req, ()> },
        Fail { injected: Option<Injected>, #[pin] sleep: Option<Sleep>, respond: R },
    }
}

impl<S: Service<Req>, R, Req> ResponseFuture<S, R, Req> {
    pub(super) fn later(later: SendLater<S, Req, ()>) -> Self {
        ResponseFuture {
            kind: Kind::Later { later },
        }
    }

    pub(super) fn fail(injected: Injected, at: Option<Instant>, respond: R) -> Self {
        ResponseFuture {
            kind: Kind::Fail {
                injected: Some(injected),
                sleep: at.map(tokio::time::sleep_until),
                respond,
            },
        }
    }
}

impl<S, R, Req> Future for ResponseFuture<S, R, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    R: Respond<S::Response>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Later { later } => Poll::Ready(ready!(later.poll(cx)).map_err(Into::into)),
            KindProj::Fail {
                injected,
                sleep,
                respond,
            } => {
                if let Some(sleep) = sleep.as_pin_mut() {
                    ready!(sleep.poll(cx));
                }
                let injected = injected
                    .take()
                    .expect("an injected failure is polled after it completed");
                Poll::Ready(respond.respond(injected))
            }
        }
    }
}

impl<S: Service<Req>, R, Req> fmt::Debug for ResponseFuture<S, R, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Later { later } => later as &dyn fmt::Debug,
            Kind::Fail { injected, .. } => injected as &dyn fmt::Debug,
        };
        f.debug_struct("ResponseFuture")
            .field("kind", kind)
            .finish_non_exhaustive()
    }
}

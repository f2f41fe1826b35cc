//! The throttle's [`ResponseFuture`]: the call, then its accept booked.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::Throttler;
use super::error::Throttled;
use crate::BoxError;
use crate::classify::Classify;

pin_project! {
    /// The future returned by [`Throttle`](super::Throttle).
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, C> {
        Called { #[pin] future: F, throttler: Throttler, classify: C },
        Throttled { error: Option<Throttled> },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(super) fn called(future: F, throttler: Throttler, classify: C) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                throttler,
                classify,
            },
        }
    }

    pub(super) fn throttled(error: Throttled) -> Self {
        ResponseFuture {
            kind: Kind::Throttled { error: Some(error) },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<T, E>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                throttler,
                classify,
            } => {
                let result = ready!(future.poll(cx));
                if !classify.classify(result.as_ref()).is_failure() {
                    throttler.accept();
                }
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Throttled { error } => Poll::Ready(Err(error
                .take()
                .expect("a throttled future is polled after it completed")
                .into())),
        }
    }
}

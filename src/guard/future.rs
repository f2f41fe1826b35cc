//! The guard's [`ResponseFuture`]: the call, then its outcome booked; or
//! the rejection.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::admit::Book;
use crate::BoxError;
use crate::classify::Classify;
use crate::error::Local;

pin_project! {
    /// The future returned by [`Guard`](super::Guard) (and so by the
    /// circuit breaker and the throttle).
    pub struct ResponseFuture<F, P, R, C> {
        #[pin]
        kind: Kind<F, P, R, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, P, R, C> {
        Called {
            #[pin]
            future: F,
            permit: Option<P>,
            classify: C,
        },
        Rejected {
            rejection: Option<R>,
            record: fn(&R),
        },
    }
}

impl<F, P, R, C> ResponseFuture<F, P, R, C> {
    pub(super) fn called(future: F, permit: P, classify: C) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                permit: Some(permit),
                classify,
            },
        }
    }

    pub(super) fn rejected(rejection: R, record: fn(&R)) -> Self {
        ResponseFuture {
            kind: Kind::Rejected {
                rejection: Some(rejection),
                record,
            },
        }
    }
}

impl<F, P, R, C, T, E> Future for ResponseFuture<F, P, R, C>
where
    F: Future<Output = Result<T, E>>,
    P: Book,
    R: std::error::Error + Send + Sync + 'static,
    C: Classify<T, E>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                permit,
                classify,
            } => {
                let result = ready!(future.poll(cx));
                let outcome = permit.is_some().then(|| classify.classify(result.as_ref()));
                let result = result.map_err(Into::into);
                if let (Some(permit), Some(outcome)) = (permit.take(), outcome) {
                    // Another dephase layer below turned the call away:
                    // the service never saw it.
                    match &result {
                        Err(error) if Local::find(&**error).is_some() => permit.abandon(),
                        _ => permit.book(outcome),
                    }
                }
                Poll::Ready(result)
            }
            KindProj::Rejected { rejection, record } => {
                let rejection = rejection
                    .take()
                    .expect("a rejected future is polled after it completed");
                // Recorded here rather than in `call`: the caller's span is
                // the one entered while its future is polled.
                record(&rejection);
                Poll::Ready(Err(Box::new(rejection)))
            }
        }
    }
}

impl<F, P, R, C> fmt::Debug for ResponseFuture<F, P, R, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

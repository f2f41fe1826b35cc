//! The [`ResponseFuture`] of [`HandleRejection`](super::HandleRejection).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum_core::response::{IntoResponse, Response};
use pin_project_lite::pin_project;

use crate::BoxError;

pin_project! {
    /// The inner service's response, or its error's.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Called { #[pin] future: F },
        Answered { response: Option<Response> },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn called(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Called { future },
        }
    }

    pub(super) fn answered(response: Response) -> Self {
        ResponseFuture {
            kind: Kind::Answered {
                response: Some(response),
            },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    T: IntoResponse,
    E: Into<BoxError>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(Ok(match self.project().kind.project() {
            KindProj::Called { future } => match ready!(future.poll(cx)) {
                Ok(response) => response.into_response(),
                Err(error) => super::response::error_response(error.into()),
            },
            KindProj::Answered { response } => response
                .take()
                .expect("an answer is polled after it completed"),
        }))
    }
}

//! The futures of the HTTP adapters: collecting a body, fanning a response out.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::error::NotShared;
use super::fanout::{Collected, FanoutBody};
use crate::BoxError;

pin_project! {
    /// The future of [`Collect`](super::Collect): the response, its body
    /// read up to the limit.
    pub struct CollectFuture<F, B> {
        #[pin]
        future: F,
        limit: usize,
        reading: Option<Reading<B>>,
    }
}

struct Reading<B> {
    parts: http::response::Parts,
    body: Pin<Box<B>>,
    chunks: Vec<Bytes>,
    len: usize,
    trailers: Option<HeaderMap>,
}

impl<F, B> CollectFuture<F, B> {
    pub(super) fn new(future: F, limit: usize) -> Self {
        CollectFuture {
            future,
            limit,
            reading: None,
        }
    }
}

impl<F, E, B> Future for CollectFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Collected<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.reading.is_none() {
            let (parts, body) = ready!(this.future.poll(cx))
                .map_err(Into::into)?
                .into_parts();
            let body = Box::pin(body);
            if body.size_hint().lower() > *this.limit as u64 {
                // Known to be over the limit: not read at all.
                let response = Response::from_parts(parts, FanoutBody::streaming(Vec::new(), body));
                return Poll::Ready(Ok(Collected::too_large(response)));
            }
            *this.reading = Some(Reading {
                parts,
                body,
                chunks: Vec::new(),
                len: 0,
                trailers: None,
            });
        }
        let reading = this.reading.as_mut().expect("set above");
        loop {
            match ready!(reading.body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let chunk = super::into_bytes(data);
                        reading.len = reading.len.saturating_add(chunk.len());
                        reading.chunks.push(chunk);
                        if reading.len > *this.limit {
                            let Reading {
                                parts,
                                body,
                                chunks,
                                ..
                            } = this.reading.take().expect("set above");
                            let response =
                                Response::from_parts(parts, FanoutBody::streaming(chunks, body));
                            return Poll::Ready(Ok(Collected::too_large(response)));
                        }
                    }
                    Err(frame) => reading.trailers = frame.into_trailers().ok(),
                },
                Some(Err(error)) => {
                    *this.reading = None;
                    return Poll::Ready(Err(error.into()));
                }
                None => {
                    let Reading {
                        parts, chunks, len, ..
                    } = this.reading.take().expect("set above");
                    // Copied into one buffer of its own, even when it came in
                    // one chunk: a chunk is a slice of the client's read
                    // buffer, and a cached slice would pin that whole buffer
                    // (kilobytes per entry) and make the client allocate a
                    // new one for every response.
                    let mut body = BytesMut::with_capacity(len);
                    chunks.iter().for_each(|c| body.extend_from_slice(c));
                    let body = body.freeze();
                    return Poll::Ready(Ok(Collected::complete(Response::from_parts(parts, body))));
                }
            }
        }
    }
}

impl<F, B> fmt::Debug for CollectFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectFuture")
            .field("limit", &self.limit)
            .field("read", &self.reading.as_ref().map(|r| r.len))
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The future of [`Fanout`](super::Fanout): the shared response, or this
    /// caller's own call when the shared one was too large and taken.
    pub struct FanoutFuture<S, F, RB>
    where
        S: Service<Request<RB>>,
    {
        #[pin]
        state: State<S, F, RB>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F, RB>
    where
        S: Service<Request<RB>>,
    {
        // Waiting for the shared call; the request's head and a service,
        // kept in case this caller must make its own call.
        Shared { #[pin] future: F, retained: Option<(Parts, S)> },
        // Waiting for the service to accept this caller's own call.
        Ready { retained: Option<(Parts, S)> },
        // This caller's own call.
        Own { #[pin] future: S::Future },
    }
}

impl<S: Service<Request<RB>>, F, RB> FanoutFuture<S, F, RB> {
    pub(super) fn new(future: F, retained: Option<(Parts, S)>) -> Self {
        FanoutFuture {
            state: State::Shared { future, retained },
        }
    }
}

impl<S, F, E, RB, B> Future for FanoutFuture<S, F, RB>
where
    S: Service<Request<RB>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    F: Future<Output = Result<Collected<B>, E>>,
    E: Into<BoxError>,
    RB: Default,
{
    type Output = Result<Response<FanoutBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Shared { future, retained } => {
                    let collected = ready!(future.poll(cx)).map_err(Into::into)?;
                    if let Some(response) = collected.into_response() {
                        return Poll::Ready(Ok(response));
                    }
                    // Over the limit, and another caller took the stream.
                    let retained = retained.take();
                    if retained.is_none() {
                        return Poll::Ready(Err(NotShared::new().into()));
                    }
                    this.state.set(State::Ready { retained });
                }
                StateProj::Ready { retained } => {
                    let (_, service) = retained.as_mut().expect("set with a service");
                    ready!(service.poll_ready(cx)).map_err(Into::into)?;
                    let (parts, mut service) = retained.take().expect("set with a service");
                    let future = service.call(Request::from_parts(parts, RB::default()));
                    this.state.set(State::Own { future });
                }
                StateProj::Own { future } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    return Poll::Ready(Ok(
                        response.map(|body| FanoutBody::streaming(Vec::new(), Box::pin(body)))
                    ));
                }
            }
        }
    }
}

impl<S: Service<Request<RB>>, F, RB> fmt::Debug for FanoutFuture<S, F, RB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Shared { .. } => "shared",
            State::Ready { .. } => "ready",
            State::Own { .. } => "own",
        };
        f.debug_struct("FanoutFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

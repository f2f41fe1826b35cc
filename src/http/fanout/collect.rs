//! [`Collect`]: reads response bodies into one `Bytes` up to a limit, so
//! that the coalesce or cache layer in front of it can copy them.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::collected::{Collected, FanoutBody};
use crate::BoxError;

/// Collects response bodies of up to `limit` bytes into a cloneable
/// [`Collected`]; the inner service of the coalesce or cache layer that a
/// [`FanoutLayer`](super::FanoutLayer) builds.
#[derive(Debug, Clone)]
pub struct Collect<S> {
    inner: S,
    limit: usize,
}

impl<S> Collect<S> {
    /// Collects `inner`'s response bodies of up to `limit` bytes.
    pub fn new(inner: S, limit: usize) -> Self {
        Collect { inner, limit }
    }

    inner_accessors!();
}

impl<S, Req, B> Service<Req> for Collect<S>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = Collected<B>;
    type Error = BoxError;
    type Future = CollectFuture<S::Future, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        CollectFuture::new(self.inner.call(request), self.limit)
    }
}

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
                        let chunk = crate::http::chunk::into_bytes(data);
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
                    let mut parts = parts;
                    own_header_values(&mut parts.headers);
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

/// Gives the header values a buffer of their own, one for all of them.
///
/// hyper parses a response's header values as slices of the connection's
/// read buffer, as it does the body: a complete response kept past its
/// request (stored in a cache, shared with followers) would pin that
/// whole buffer (hyper's start at 8 KiB) for a few bytes of headers, and
/// make the client allocate a new read buffer for the next response. One
/// copy of a few bytes, and one allocation, per collected response. (A
/// client built with hyper's `preserve_header_case` also puts the names'
/// original case, as slices of that buffer, in the response's extensions:
/// those are left as they are.)
fn own_header_values(headers: &mut HeaderMap) {
    let total = headers.values().map(|value| value.len()).sum::<usize>();
    if total == 0 {
        return;
    }
    let mut copy = Vec::with_capacity(total);
    headers
        .values()
        .for_each(|value| copy.extend_from_slice(value.as_bytes()));
    let copy = Bytes::from(copy);
    let mut at = 0;
    for value in headers.values_mut() {
        let end = at + value.len();
        // The same bytes, so valid; a value is left as it was otherwise.
        if let Some(Ok(mut own)) = copy
            .get(at..end)
            .map(|_| HeaderValue::from_maybe_shared(copy.slice(at..end)))
        {
            own.set_sensitive(value.is_sensitive());
            if own == *value {
                *value = own;
            }
        }
        at = end;
    }
}

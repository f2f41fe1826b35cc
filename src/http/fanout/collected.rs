//! What a shared HTTP call lands as: a [`Collected`] response, and the
//! [`FanoutBody`] each caller reads.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use crate::BoxError;

/// A response that many callers can share: its body collected into
/// [`Bytes`] (trailers, if any, are not kept), or — when it was over the
/// limit — the streaming response, which only one caller can take.
pub struct Collected<B> {
    kind: Kind<B>,
}

enum Kind<B> {
    Complete(Response<Bytes>),
    TooLarge {
        status: StatusCode,
        response: Arc<Mutex<Option<Response<FanoutBody<B>>>>>,
    },
}

impl<B> Collected<B> {
    pub(crate) fn complete(response: Response<Bytes>) -> Self {
        Collected {
            kind: Kind::Complete(response),
        }
    }

    pub(super) fn too_large(response: Response<FanoutBody<B>>) -> Self {
        Collected {
            kind: Kind::TooLarge {
                status: response.status(),
                response: Arc::new(Mutex::new(Some(response))),
            },
        }
    }

    /// Whether the body was collected (it was within the limit).
    pub fn is_complete(&self) -> bool {
        matches!(self.kind, Kind::Complete(_))
    }

    /// The response's status.
    pub fn status(&self) -> StatusCode {
        match &self.kind {
            Kind::Complete(response) => response.status(),
            Kind::TooLarge { status, .. } => *status,
        }
    }

    /// Whether a cache should keep it: complete and successful (2xx).
    /// For a store's `store_if` (see [`StoreBuilder`](crate::cache::StoreBuilder)).
    pub fn is_cacheable(&self) -> bool {
        self.is_complete() && self.status().is_success()
    }

    /// The collected response, if the body was within the limit.
    pub fn as_complete(&self) -> Option<&Response<Bytes>> {
        match &self.kind {
            Kind::Complete(response) => Some(response),
            Kind::TooLarge { .. } => None,
        }
    }

    /// This caller's response: a copy of the collected one, or the
    /// streaming one if it is over the limit and nobody has taken it yet
    /// (`None` if somebody has).
    pub fn into_response(self) -> Option<Response<FanoutBody<B>>> {
        match self.kind {
            Kind::Complete(response) => Some(response.map(FanoutBody::full)),
            Kind::TooLarge { response, .. } => {
                response.lock().unwrap_or_else(|e| e.into_inner()).take()
            }
        }
    }
}

impl<B> Clone for Collected<B> {
    fn clone(&self) -> Self {
        let kind = match &self.kind {
            Kind::Complete(response) => Kind::Complete(response.clone()),
            Kind::TooLarge { status, response } => Kind::TooLarge {
                status: *status,
                response: Arc::clone(response),
            },
        };
        Collected { kind }
    }
}

impl<B> fmt::Debug for Collected<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collected")
            .field("status", &self.status())
            .field("complete", &self.is_complete())
            .finish_non_exhaustive()
    }
}

/// The body of a fanned-out response: a copy of the collected bytes, or the
/// streaming body (the chunks read before it went over the limit, then the
/// rest).
pub struct FanoutBody<B> {
    kind: BodyKind<B>,
}

enum BodyKind<B> {
    Full {
        data: Option<Bytes>,
    },
    Streaming {
        read: VecDeque<Bytes>,
        trailers: Option<HeaderMap>,
        rest: Option<Pin<Box<B>>>,
    },
}

impl<B> FanoutBody<B> {
    /// A body of `data`.
    pub fn full(data: Bytes) -> Self {
        let data = (!data.is_empty()).then_some(data);
        FanoutBody {
            kind: BodyKind::Full { data },
        }
    }

    pub(super) fn streaming(read: Vec<Bytes>, rest: Pin<Box<B>>) -> Self {
        FanoutBody {
            kind: BodyKind::Streaming {
                read: read.into(),
                trailers: None,
                rest: Some(rest),
            },
        }
    }

    /// Whether this is a copy of a collected body.
    pub fn is_full(&self) -> bool {
        matches!(self.kind, BodyKind::Full { .. })
    }
}

impl<B> Body for FanoutBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            BodyKind::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            BodyKind::Streaming {
                read,
                trailers,
                rest,
            } => {
                if let Some(chunk) = read.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                if let Some(trailers) = trailers.take() {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                let Some(body) = rest.as_mut() else {
                    return Poll::Ready(None);
                };
                let frame = ready!(body.as_mut().poll_frame(cx));
                if frame.is_none() {
                    *rest = None;
                }
                Poll::Ready(frame.map(|frame| match frame {
                    Ok(frame) => Ok(frame.map_data(crate::http::chunk::into_bytes)),
                    Err(error) => Err(error.into()),
                }))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full { data } => data.is_none(),
            BodyKind::Streaming {
                read,
                trailers,
                rest,
            } => {
                read.is_empty()
                    && trailers.is_none()
                    && rest.as_ref().is_none_or(|b| b.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            BodyKind::Streaming { read, rest, .. } => {
                let read: u64 = read.iter().map(|c| c.len() as u64).sum();
                let rest = rest
                    .as_ref()
                    .map_or(SizeHint::with_exact(0), |b| b.size_hint());
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(read));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(read));
                }
                hint
            }
        }
    }
}

impl<B> fmt::Debug for FanoutBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanoutBody")
            .field("full", &self.is_full())
            .finish_non_exhaustive()
    }
}

//! Request bodies that can be sent again: cloned when cheap, recorded as
//! they stream otherwise.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Empty, Full};

use crate::BoxError;
use crate::http::error::ReplayError;

/// A request body that the retry layer can send again.
///
/// Implemented for bodies that are cheap to clone ([`Full`], [`Empty`],
/// [`Bytes`], `String`, `Vec<u8>`, `&'static str`, `()`) and for
/// [`ReplayBody`], which records a streaming body as it is sent.
pub trait ReplayableBody: Sized {
    /// A body that yields the same bytes again, if there can be one.
    fn replay(&self) -> Option<Self>;

    /// Whether a copy made by [`replay`](Self::replay) can still be sent
    /// in full (a [`ReplayBody`] that outgrew its cap cannot).
    fn can_replay(&self) -> bool {
        true
    }
}

macro_rules! replay_by_clone {
    ($($ty:ty),* $(,)?) => {$(
        impl ReplayableBody for $ty {
            fn replay(&self) -> Option<Self> {
                Some(self.clone())
            }
        }
    )*};
}

replay_by_clone!(Bytes, String, Vec<u8>, &'static str, ());

impl<D: Clone> ReplayableBody for Full<D> {
    fn replay(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> ReplayableBody for Empty<D> {
    fn replay(&self) -> Option<Self> {
        Some(Empty::new())
    }
}

/// A streaming request body recorded as it is sent (up to a cap), so that a
/// retry can send it again.
///
/// Each [`replay`](ReplayableBody::replay) is a new body that yields the
/// recorded chunks and then, if the original was not read to the end (the
/// attempt failed half-way), goes on reading the original where it stopped
/// — recording that too. Once more than `cap` bytes have gone by, the
/// record is dropped and copies that have not kept up fail with
/// [`ReplayError`]; the retry layer asks first
/// ([`can_replay`](ReplayableBody::can_replay)) and does not retry such a
/// request, so the caller gets the last attempt's result. A body whose
/// length is known to be over the cap is never recorded at all. A body that
/// fails mid-stream is not retried either (nothing can replay what it
/// never sent).
///
/// Copies share one record behind a short lock taken only while a frame is
/// polled; they may be polled one after another or at the same time. Every
/// copy waiting for the original is woken when it yields, whichever copy
/// polled it last.
pub struct ReplayBody<B> {
    tape: Arc<Mutex<Tape<B>>>,
    /// Chunks this copy has yielded.
    position: usize,
    /// Whether this copy has yielded the trailers.
    trailers_sent: bool,
    hint: SizeHint,
    /// This copy's place among the original's waiters.
    id: u64,
}

/// The copies waiting for the original to yield. The original is polled
/// with a waker that wakes them all: the copy that polled it last may go
/// away, and the others must still hear of the next chunk.
#[derive(Default)]
struct Waiting {
    wakers: Mutex<Vec<(u64, Waker)>>,
}

impl Waiting {
    fn wakers(&self) -> MutexGuard<'_, Vec<(u64, Waker)>> {
        self.wakers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Copy `id` waits with `waker` (replacing an older one).
    fn register(&self, id: u64, waker: &Waker) {
        let mut wakers = self.wakers();
        match wakers.iter_mut().find(|(copy, _)| *copy == id) {
            Some((_, known)) => known.clone_from(waker),
            None => wakers.push((id, waker.clone())),
        }
    }

    /// Copy `id` no longer waits.
    fn forget(&self, id: u64) {
        self.wakers().retain(|(copy, _)| *copy != id);
    }

    /// Wakes every waiting copy but `except`.
    fn wake_all(&self, except: Option<u64>) {
        let woken = std::mem::take(&mut *self.wakers());
        for (copy, waker) in woken {
            if Some(copy) != except {
                waker.wake();
            }
        }
    }
}

impl Wake for Waiting {
    fn wake(self: Arc<Self>) {
        self.wake_all(None);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all(None);
    }
}

struct Tape<B> {
    /// The original body, until it ends or fails.
    body: Option<Pin<Box<B>>>,
    /// The chunks read so far (all of them while under the cap).
    chunks: Vec<Bytes>,
    /// Chunks read from the original so far.
    read: usize,
    /// Bytes recorded.
    recorded: usize,
    cap: usize,
    /// The record no longer holds the whole body read so far.
    over_cap: bool,
    /// The original failed: nothing after the failure can be replayed.
    failed: bool,
    trailers: Option<HeaderMap>,
    /// Copies waiting for the original, and the waker it is polled with.
    waiting: Arc<Waiting>,
    waker: Waker,
    /// The id of the next copy.
    copies: u64,
}

impl<B: Body> ReplayBody<B> {
    /// Records `body` as it is sent, up to `cap` bytes.
    pub fn new(body: B, cap: usize) -> Self {
        let hint = body.size_hint();
        let waiting = Arc::new(Waiting::default());
        ReplayBody {
            tape: Arc::new(Mutex::new(Tape {
                body: Some(Box::pin(body)),
                chunks: Vec::new(),
                read: 0,
                recorded: 0,
                cap,
                over_cap: hint.lower() > cap as u64,
                failed: false,
                trailers: None,
                waker: Waker::from(Arc::clone(&waiting)),
                waiting,
                copies: 1,
            })),
            position: 0,
            trailers_sent: false,
            hint,
            id: 0,
        }
    }
}

impl<B> ReplayBody<B> {
    fn tape(&self) -> MutexGuard<'_, Tape<B>> {
        // A panic while polling the original leaves the record as it was
        // before that poll: still consistent.
        self.tape.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<B> ReplayableBody for ReplayBody<B> {
    fn replay(&self) -> Option<Self> {
        let mut tape = self.tape();
        if tape.over_cap || tape.failed {
            return None;
        }
        let id = tape.copies;
        tape.copies += 1;
        drop(tape);
        Some(ReplayBody {
            tape: Arc::clone(&self.tape),
            position: 0,
            trailers_sent: false,
            hint: self.hint,
            id,
        })
    }

    fn can_replay(&self) -> bool {
        let tape = self.tape();
        !tape.over_cap && !tape.failed
    }
}

impl<B> Body for ReplayBody<B>
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
        let this = self.get_mut();
        let mut tape = this.tape.lock().unwrap_or_else(|e| e.into_inner());
        let tape = &mut *tape;
        if let Some(chunk) = tape.chunks.get(this.position) {
            let chunk = chunk.clone();
            this.position += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if this.position < tape.read {
            // Another copy read on past what the record holds.
            return Poll::Ready(Some(Err(ReplayError::new(tape.cap).into())));
        }
        let Some(body) = tape.body.as_mut() else {
            if tape.failed {
                return Poll::Ready(Some(Err(ReplayError::new(tape.cap).into())));
            }
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(trailers) = tape.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
            }
            return Poll::Ready(None);
        };
        // Registered before the poll: a chunk that arrives between the poll
        // and the registration must not be missed.
        tape.waiting.register(this.id, cx.waker());
        let polled = body
            .as_mut()
            .poll_frame(&mut Context::from_waker(&tape.waker));
        let Poll::Ready(frame) = polled else {
            return Poll::Pending;
        };
        // Something happened to the original: the other waiting copies may
        // now read it from the record (or find it ended).
        tape.waiting.wake_all(Some(this.id));
        match frame {
            None => {
                tape.body = None;
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Some(Err(error)) => {
                tape.body = None;
                tape.failed = true;
                tape.chunks = Vec::new();
                Poll::Ready(Some(Err(error.into())))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let chunk = crate::http::chunk::into_bytes(data);
                    tape.read += 1;
                    this.position += 1;
                    if !tape.over_cap && tape.recorded + chunk.len() <= tape.cap {
                        tape.recorded += chunk.len();
                        tape.chunks.push(chunk.clone());
                    } else {
                        tape.over_cap = true;
                        tape.chunks = Vec::new();
                    }
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                Err(frame) => {
                    // A frame that is not data is trailers.
                    let trailers = frame.into_trailers().unwrap_or_default();
                    tape.trailers = Some(trailers.clone());
                    tape.body = None;
                    this.trailers_sent = true;
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        let tape = self.tape();
        tape.body.is_none()
            && !tape.failed
            && self.position >= tape.read
            && (self.trailers_sent || tape.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        // A copy that goes away no longer waits (its waker would otherwise
        // stay until the original next yields).
        let waiting = Arc::clone(&self.tape().waiting);
        waiting.forget(self.id);
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tape = self.tape();
        f.debug_struct("ReplayBody")
            .field("position", &self.position)
            .field("recorded_bytes", &tape.recorded)
            .field("cap", &tape.cap)
            .field("over_cap", &tape.over_cap)
            .finish_non_exhaustive()
    }
}

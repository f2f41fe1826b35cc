//! The send-later engine: wait (a timer, or nothing), make the service
//! ready, send the request — the sequence that the retry layer's re-sends,
//! a paced call and fan-out's own call share. A *ticket* is spent at the
//! moment of the call (a pacer's turn, a retry's budget withdrawal) and
//! given back if the future goes away first.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

/// Something held until the call is made, and spent then; dropped unspent
/// (the future went away, or the service failed to get ready), it gives
/// back what it held.
pub(crate) trait Ticket {
    /// What spending it leaves (kept for the owner of the future).
    type Spent;

    fn spend(self) -> Self::Spent;
}

/// No ticket.
impl Ticket for () {
    type Spent = ();

    fn spend(self) {}
}

pin_project! {
    /// Waits, readies the service, calls it, and yields the response.
    pub(crate) struct SendLater<S, Req, G>
    where
        S: Service<Req>,
        G: Ticket,
    {
        #[pin]
        state: State<S::Future>,
        service: Option<S>,
        request: Option<Req>,
        ticket: Option<G>,
        spent: Option<G::Spent>,
        // Boxed: a request sent at once (the hot path) has no timer, and a
        // box can be handed back for the next wait.
        sleep: Option<Pin<Box<Sleep>>>,
        // When the wait began, and how long it lasted (on tokio's clock).
        since: Option<Instant>,
        waited: Duration,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Waiting,
        Ready,
        Called { #[pin] future: F },
    }
}

impl<S: Service<Req>, Req, G: Ticket> SendLater<S, Req, G> {
    /// A call made already: only its response is awaited.
    pub(crate) fn called(future: S::Future) -> Self {
        SendLater {
            state: State::Called { future },
            service: None,
            request: None,
            ticket: None,
            spent: None,
            sleep: None,
            since: None,
            waited: Duration::ZERO,
        }
    }

    /// Sends `request` through `service` at `at` (at once if `None`),
    /// spending `ticket` then. `sleep` is a timer to reuse, if there is one.
    pub(crate) fn at(
        at: Option<Instant>,
        service: S,
        request: Req,
        ticket: G,
        sleep: Option<Pin<Box<Sleep>>>,
    ) -> Self {
        let (state, sleep, since) = match at {
            None => (State::Ready, sleep, None),
            Some(at) => {
                let sleep = match sleep {
                    Some(mut sleep) => {
                        sleep.as_mut().reset(at);
                        sleep
                    }
                    None => Box::pin(tokio::time::sleep_until(at)),
                };
                (State::Waiting, Some(sleep), Some(Instant::now()))
            }
        };
        SendLater {
            state,
            service: Some(service),
            request: Some(request),
            ticket: Some(ticket),
            spent: None,
            sleep,
            since,
            waited: Duration::ZERO,
        }
    }

    /// Whether the request has been sent.
    pub(crate) fn is_sent(&self) -> bool {
        matches!(self.state, State::Called { .. })
    }

    /// What the ticket left when it was spent (once).
    pub(crate) fn take_spent(self: Pin<&mut Self>) -> Option<G::Spent> {
        self.project().spent.take()
    }

    /// The service, for another call.
    pub(crate) fn take_service(self: Pin<&mut Self>) -> Option<S> {
        self.project().service.take()
    }

    /// The timer, for another wait.
    pub(crate) fn take_sleep(self: Pin<&mut Self>) -> Option<Pin<Box<Sleep>>> {
        self.project().sleep.take()
    }

    /// How long the wait lasted, as measured on tokio's clock (the timer
    /// wakes on whole milliseconds: this is what was applied, not planned).
    pub(crate) fn waited(&self) -> Duration {
        self.waited
    }
}

impl<S, Req, G> Future for SendLater<S, Req, G>
where
    S: Service<Req>,
    G: Ticket,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting => {
                    if let Some(sleep) = this.sleep.as_mut() {
                        ready!(sleep.as_mut().poll(cx));
                    }
                    if let Some(since) = this.since.take() {
                        *this.waited = since.elapsed();
                    }
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    let service = this
                        .service
                        .as_mut()
                        .expect("a request waiting to be sent has its service");
                    // An error here drops the unspent ticket: it gives back
                    // what it held.
                    if let Err(error) = ready!(service.poll_ready(cx)) {
                        this.ticket.take();
                        return Poll::Ready(Err(error));
                    }
                    let request = this.request.take().expect("sent once");
                    *this.spent = this.ticket.take().map(Ticket::spend);
                    let future = service.call(request);
                    this.state.set(State::Called { future });
                }
                StateProj::Called { future } => return future.poll(cx),
            }
        }
    }
}

impl<S: Service<Req>, Req, G: Ticket> fmt::Debug for SendLater<S, Req, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting => "waiting",
            State::Ready => "ready",
            State::Called { .. } => "called",
        };
        f.debug_struct("SendLater")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

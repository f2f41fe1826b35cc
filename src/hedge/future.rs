//! How the hedge layer races copies: the [`ResponseFuture`].
//!
//! `call` sends the original and, when hedging is possible, arms a timer
//! for the first hedge. The future polls the original and the copies in
//! flight, and when the timer fires asks the policy whether the copy that
//! is due may go (`HedgePolicy::admit`); a copy is sent by the send-later
//! engine (get a clone of the service ready, send). The first success
//! answers; the other copies are dropped with the future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;
use tracing::{Level, Span};

use super::policy::{HedgeGate, HedgePolicy, Refusal};
use crate::budget::{RetryBudget, Unsent};
use crate::classify::{Classify, Outcome};
use crate::deadline::Deadline;
use crate::later::SendLater;
use crate::retry::{Attempt as Number, CloneRequest};
use crate::telemetry::{self, BUDGET, HEDGE_DELAY_MS, HEDGE_SENT, HEDGE_WINNER};

pin_project! {
    /// The future returned by [`Hedge`](super::Hedge): the first success
    /// among the copies sent, or the last answer if none succeeded.
    pub struct ResponseFuture<S, C, R, B, G, Req>
    where
        S: Service<Req>,
        B: RetryBudget,
    {
        #[pin]
        original: Original<S::Future>,
        #[pin]
        timer: Timer,
        control: Control<S, C, R, B, G, Req>,
    }

    impl<S, C, R, B, G, Req> PinnedDrop for ResponseFuture<S, C, R, B, G, Req>
    where
        S: Service<Req>,
        B: RetryBudget,
    {
        fn drop(this: Pin<&mut Self>) {
            // Cancelled while hedging: the span still learns what was sent.
            this.project().control.record_span(None);
        }
    }
}

pin_project! {
    #[project = OriginalProj]
    enum Original<F> {
        Running { #[pin] future: F },
        Done,
    }
}

pin_project! {
    #[project = TimerProj]
    enum Timer {
        Armed { #[pin] sleep: Sleep },
        Off,
    }
}

/// Everything beside the original and the timer.
struct Control<S, C, R, B: RetryBudget, G, Req>
where
    S: Service<Req>,
{
    policy: Arc<HedgePolicy<C, R, B, G>>,
    /// A clone of the service for the copies (`None`: no hedge possible).
    service: Option<S>,
    /// The copy the next hedge will send.
    copy: Option<Req>,
    /// When the original was sent.
    started: Instant,
    /// The hedge delay before jitter (set when the timer was armed).
    base: Duration,
    /// Everything only a request whose hedge came due needs, made then.
    /// Boxed: the future of a request answered in time stays small.
    hedging: Option<Box<Hedging<S, Req, B>>>,
}

type Copy<S, Req, B> = Pin<Box<SendLater<S, Req, Unsent<B>>>>;

/// The state of a request whose hedge came due.
struct Hedging<S: Service<Req>, Req, B: RetryBudget> {
    /// The copies sent, `None` once answered.
    copies: Vec<Option<Copy<S, Req, B>>>,
    /// Whether the current timer includes this request's jitter.
    jittered: bool,
    /// When the first hedge was due (delay and jitter), for the span.
    first_delay: Duration,
    /// Why the last due hedge was not sent.
    refused: Option<Refusal>,
    recorded: bool,
}

/// Who answered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Winner {
    Original,
    Hedge,
}

impl Winner {
    fn as_str(self) -> &'static str {
        match self {
            Winner::Original => "original",
            Winner::Hedge => "hedge",
        }
    }
}

impl<S, C, R, B, G, Req> ResponseFuture<S, C, R, B, G, Req>
where
    S: Service<Req>,
    B: RetryBudget,
{
    /// The original sent at `started`; a hedge due `base` later if
    /// `service` and `copy` are there to send it.
    pub(super) fn new(
        future: S::Future,
        policy: Arc<HedgePolicy<C, R, B, G>>,
        started: Instant,
        hedge: Option<(Duration, S, Req)>,
    ) -> Self {
        let (timer, base, service, copy) = match hedge {
            Some((base, service, copy)) => (
                Timer::Armed {
                    sleep: tokio::time::sleep_until(started + base),
                },
                // (`base` is at most a day: `HedgePolicyBuilder::build`.)
                base,
                Some(service),
                Some(copy),
            ),
            None => (Timer::Off, Duration::ZERO, None, None),
        };
        ResponseFuture {
            original: Original::Running { future },
            timer,
            control: Control {
                policy,
                service,
                copy,
                started,
                base,
                hedging: None,
            },
        }
    }
}

/// What to do with the timer after it fired.
enum Next {
    /// Wait until this instant (the jitter, or the next copy's turn).
    At(Instant),
    /// No more hedges.
    Off,
}

impl<S, C, R, B, G, Req> Future for ResponseFuture<S, C, R, B, G, Req>
where
    S: Service<Req> + Clone,
    C: Classify<S::Response, S::Error>,
    R: CloneRequest<Req>,
    B: RetryBudget + Clone,
    G: HedgeGate,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let control = this.control;
        loop {
            if let OriginalProj::Running { future } = this.original.as_mut().project() {
                if let Poll::Ready(result) = future.poll(cx) {
                    this.original.set(Original::Done);
                    let outcome = control.policy.classify.classify(result.as_ref());
                    if outcome == Outcome::Success {
                        let now = Instant::now();
                        let latency = now.saturating_duration_since(control.started);
                        control.policy.latencies.record(latency, now);
                    }
                    if let Some(answer) = control.answer(result, outcome, Winner::Original, false) {
                        return Poll::Ready(answer);
                    }
                }
            }
            let original_running = matches!(*this.original, Original::Running { .. });
            if let Some(answer) = control.poll_copies(cx, original_running) {
                return Poll::Ready(answer);
            }
            let TimerProj::Armed { mut sleep } = this.timer.as_mut().project() else {
                return Poll::Pending;
            };
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            match control.due() {
                Next::At(at) => sleep.reset(at),
                Next::Off => this.timer.set(Timer::Off),
            }
            // Poll again: a copy just sent, or a timer just reset.
        }
    }
}

impl<S, C, R, B, G, Req> Control<S, C, R, B, G, Req>
where
    S: Service<Req> + Clone,
    C: Classify<S::Response, S::Error>,
    R: CloneRequest<Req>,
    B: RetryBudget + Clone,
    G: HedgeGate,
{
    /// Polls the copies in flight; the answer if one settles the request.
    fn poll_copies(
        &mut self,
        cx: &mut Context<'_>,
        original_running: bool,
    ) -> Option<Result<S::Response, S::Error>> {
        let mut index = 0;
        loop {
            // Every copy still in flight is polled (its waker registered)
            // unless one settles the request first.
            let hedging = self.hedging.as_mut()?;
            let slot = hedging.copies.get_mut(index)?;
            index += 1;
            let Some(copy) = slot.as_mut() else { continue };
            let Poll::Ready(result) = copy.as_mut().poll(cx) else {
                continue;
            };
            let sent = copy.is_sent();
            *slot = None;
            if !sent {
                // The service could not get ready for the copy: it never
                // reached the backend (its withdrawal is refunded). Not an
                // answer: the original, or another copy, is still running.
                continue;
            }
            let outcome = self.policy.classify.classify(result.as_ref());
            if let Some(answer) = self.answer(result, outcome, Winner::Hedge, original_running) {
                return Some(answer);
            }
        }
    }

    /// A copy answered: the request's answer if this settles it — a
    /// success, a fatal failure, or a retryable failure with no other copy
    /// *sent* still in flight (a copy still waiting for the service to be
    /// ready is dropped with the future, its withdrawal refunded).
    fn answer(
        &mut self,
        result: Result<S::Response, S::Error>,
        outcome: Outcome,
        from: Winner,
        original_running: bool,
    ) -> Option<Result<S::Response, S::Error>> {
        let copies_in_flight = self.hedging.as_ref().is_some_and(|h| {
            h.copies
                .iter()
                .any(|copy| copy.as_ref().is_some_and(|copy| copy.is_sent()))
        });
        let retryable = matches!(outcome, Outcome::Retry { .. });
        if retryable && (original_running || copies_in_flight) {
            // Another copy may still succeed: this failure is booked now
            // (the caller will not see it) and dropped.
            self.policy.book(&outcome, false);
            return None;
        }
        let success = outcome == Outcome::Success;
        if success && original_running {
            // A hedge won: the original took at least this long (a
            // censored latency, but above the percentile all the same).
            let now = Instant::now();
            let latency = now.saturating_duration_since(self.started);
            self.policy.latencies.record(latency, now);
        }
        self.policy.book(&outcome, true);
        if self.hedging.is_some() {
            telemetry::count::hedge_answered(from.as_str());
            if from == Winner::Hedge {
                self.policy.counters.won.add();
            }
        }
        self.record_span(Some(from));
        Some(result)
    }

    /// The timer fired: jitter first, then send the copy that is due (if
    /// the policy admits it). Out of line: a request answered in time never
    /// comes here.
    #[cold]
    #[inline(never)]
    fn due(&mut self) -> Next {
        let policy = &*self.policy;
        let hedging = self.hedging.get_or_insert_with(|| {
            Box::new(Hedging {
                copies: Vec::new(),
                jittered: false,
                first_delay: Duration::ZERO,
                refused: None,
                recorded: false,
            })
        });
        if !hedging.jittered {
            hedging.jittered = true;
            let jitter = policy.jitter(self.base);
            if hedging.copies.is_empty() {
                hedging.first_delay = self.base + jitter;
                policy.counters.due.add();
            }
            if !jitter.is_zero() {
                return Next::At(Instant::now() + jitter);
            }
        }
        let remaining = Deadline::current().map(Deadline::remaining);
        let withdrawal = match policy.admit(self.copy.as_ref(), remaining) {
            Ok(withdrawal) => withdrawal,
            Err(refusal) => {
                hedging.refused = Some(refusal);
                match refusal {
                    Refusal::Budget => {
                        telemetry::count::budget_denied();
                        policy.counters.budget.add();
                    }
                    Refusal::Gate => policy.counters.gate.add(),
                    Refusal::Deadline => policy.counters.deadline.add(),
                    Refusal::NoCopy => {}
                }
                telemetry::count::hedge_refused(refusal.as_str());
                tracing::event!(
                    target: "dephase::hedge",
                    Level::DEBUG,
                    dephase.hedge.sent = hedging.copies.len() as i64,
                    reason = refusal.as_str(),
                    "hedge not sent"
                );
                return Next::Off;
            }
        };
        let sent = hedging.copies.len() as u32 + 1;
        let more = sent + 1 < policy.max_copies;
        let mut copy = self.copy.take().expect("admitted with a copy");
        if more {
            self.copy = policy.clone.clone_request(&copy);
        }
        // A copy is a re-send of the request: layers below (a tracing
        // layer, the deadline's client layer) see it as such.
        policy.clone.mark(&mut copy, Number::new(sent + 1));
        policy.counters.sent.add();
        let service = if more {
            self.service.clone()
        } else {
            self.service.take()
        }
        .expect("a request that may be hedged has a service for it");
        let delay = Instant::now().saturating_duration_since(self.started);
        telemetry::count::hedge_sent(delay);
        tracing::event!(
            target: "dephase::hedge",
            Level::DEBUG,
            dephase.hedge.delay_ms = telemetry::millis(delay),
            dephase.hedge.sent = i64::from(sent),
            dephase.budget = if withdrawal.is_some() { "granted" } else { "none" },
            "hedging: the request is slower than the latency estimate"
        );
        let ticket = Unsent::new(policy.budget.clone(), withdrawal);
        hedging.copies.push(Some(Box::pin(SendLater::at(
            None, service, copy, ticket, None,
        ))));
        if more {
            hedging.jittered = false;
            Next::At(Instant::now() + self.base)
        } else {
            Next::Off
        }
    }
}

impl<S, C, R, B: RetryBudget, G, Req> Control<S, C, R, B, G, Req>
where
    S: Service<Req>,
{
    /// Records what hedging did on the current span, once; nothing for a
    /// request answered before its hedge was due.
    fn record_span(&mut self, winner: Option<Winner>) {
        let Some(hedging) = self.hedging.as_mut() else {
            return;
        };
        if std::mem::replace(&mut hedging.recorded, true) {
            return;
        }
        let span = Span::current();
        if span.is_disabled() {
            return;
        }
        span.record(HEDGE_DELAY_MS, telemetry::millis(hedging.first_delay));
        span.record(HEDGE_SENT, hedging.copies.len() as i64);
        if let Some(winner) = winner {
            span.record(HEDGE_WINNER, winner.as_str());
        }
        if hedging.refused == Some(Refusal::Budget) {
            span.record(BUDGET, "denied");
        }
    }
}

impl<S, C, R, B, G, Req> fmt::Debug for ResponseFuture<S, C, R, B, G, Req>
where
    S: Service<Req>,
    B: RetryBudget,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let original = match self.original {
            Original::Running { .. } => "running",
            Original::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("original", &original)
            .field(
                "hedges_sent",
                &self.control.hedging.as_ref().map_or(0, |h| h.copies.len()),
            )
            .finish_non_exhaustive()
    }
}

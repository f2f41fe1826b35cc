//! The breaker's state machine, shared by every clone of a [`Breaker`](super::Breaker).
//!
//! One `u64` holds the whole state: a tag (closed, open, half-open,
//! isolated, forced closed), the half-open probe counts and an epoch that
//! grows with every transition. Admission reads it; probe admission and
//! every transition are a compare-and-swap on it, so exactly `K` probes get
//! in however many callers race. The closed path never writes it: a call
//! in the closed state is one load to admit; to record, a success is one
//! atomic add on its thread's stripe (successes are placed in the time
//! window in batches, see the module docs, so most never read the clock),
//! a failure a clock read, two
//! atomic adds and a sum of the window. Transitions into the open state
//! (rare) draw their jittered open time under a short lock.

use std::fmt;
use std::sync::atomic::Ordering;

use crate::sync::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing::{Level, Span};

use super::error::Rejected;
use super::handle::Lane;
use crate::backoff::{ExponentialBackoff, Sequence};
use crate::classify::Outcome;
use crate::clock::Clock;
use crate::tally::Pending;
use crate::telemetry::{self, BREAKER_STATE};
use crate::window::{Window, pair};

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls go through; outcomes are counted.
    Closed,
    /// Calls are rejected until the (jittered) open time has passed.
    Open,
    /// A bounded number of probe calls go through; the rest are rejected.
    HalfOpen,
    /// Forced open by an operator ([`Breaker::isolate`](super::Breaker::isolate)) until reset.
    Isolated,
    /// Forced closed by an operator ([`Breaker::force_closed`](super::Breaker::force_closed)):
    /// every call goes through and nothing is counted, until reset.
    ForcedClosed,
}

impl State {
    /// The value recorded as `dephase.breaker.state`: `closed`, `open` or
    /// `half_open` (isolated reads as `open`, forced closed as `closed`).
    pub const fn as_str(&self) -> &'static str {
        match self {
            State::Closed | State::ForcedClosed => "closed",
            State::Open | State::Isolated => "open",
            State::HalfOpen => "half_open",
        }
    }

    /// Open, half-open or isolated: not letting every call through.
    pub(super) const fn is_open(self) -> bool {
        matches!(self, State::Open | State::HalfOpen | State::Isolated)
    }

    fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::Isolated => "isolated",
            State::ForcedClosed => "forced_closed",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ----- the packed state word -------------------------------------------

const TAG_BITS: u32 = 3;
const COUNT_BITS: u32 = 10;
/// The most half-open probes a breaker can admit.
pub(super) const MAX_PROBES: u32 = (1 << COUNT_BITS) - 1;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const SUCCEEDED_SHIFT: u32 = TAG_BITS;
const ADMITTED_SHIFT: u32 = TAG_BITS + COUNT_BITS;
const FAILED_SHIFT: u32 = TAG_BITS + 2 * COUNT_BITS;
const SLOW_SHIFT: u32 = TAG_BITS + 3 * COUNT_BITS;
/// The epoch has the 21 bits left: it changes at each transition, and a
/// permit would have to outlive two million of them to be mistaken.
const EPOCH_SHIFT: u32 = TAG_BITS + 4 * COUNT_BITS;
const ONE_ADMITTED: u64 = 1 << ADMITTED_SHIFT;
const ONE_SUCCEEDED: u64 = 1 << SUCCEEDED_SHIFT;
const ONE_FAILED: u64 = 1 << FAILED_SHIFT;
const ONE_SLOW: u64 = 1 << SLOW_SHIFT;

/// The unit of a failure-rate threshold: millionths.
pub(super) const PER_MILLION: u64 = 1_000_000;

/// Successes are placed in the failure window in batches of this many.
const PLACE_EVERY: u64 = 16;

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const ISOLATED: u64 = 3;
const FORCED_CLOSED: u64 = 4;

fn pack(epoch: u64, tag: u64) -> u64 {
    (epoch << EPOCH_SHIFT) | tag
}
fn tag(word: u64) -> u64 {
    word & TAG_MASK
}
fn epoch(word: u64) -> u64 {
    word >> EPOCH_SHIFT
}
fn admitted(word: u64) -> u32 {
    ((word >> ADMITTED_SHIFT) & COUNT_MASK) as u32
}
fn succeeded(word: u64) -> u32 {
    ((word >> SUCCEEDED_SHIFT) & COUNT_MASK) as u32
}
fn failed(word: u64) -> u32 {
    ((word >> FAILED_SHIFT) & COUNT_MASK) as u32
}
fn slow(word: u64) -> u32 {
    ((word >> SLOW_SHIFT) & COUNT_MASK) as u32
}
fn state_of(word: u64) -> State {
    match tag(word) {
        CLOSED => State::Closed,
        OPEN => State::Open,
        HALF_OPEN => State::HalfOpen,
        ISOLATED => State::Isolated,
        _ => State::ForcedClosed,
    }
}

// ----- configuration -----------------------------------------------------

/// What trips a closed breaker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Trip {
    /// `failures / calls ≥ threshold` over the window, once `calls ≥
    /// minimum_calls`; the threshold in millionths, compared in integers
    /// (`failures · 10⁶ ≥ threshold · calls`) so that "at least" is exact.
    FailureRate {
        threshold: u64,
        minimum_calls: u32,
        window: Duration,
        buckets: u32,
    },
    /// `n` failures in a row.
    Consecutive(u32),
}

#[derive(Debug, Clone)]
pub(super) struct Config {
    pub(super) trip: Trip,
    pub(super) slow_call: Option<Duration>,
    /// With a slow-call limit: trip when slow calls are at least this share
    /// of the calls (millionths), instead of counting them as failures.
    pub(super) slow_call_rate: Option<u64>,
    pub(super) open_time: ExponentialBackoff,
    pub(super) probes: u32,
    pub(super) half_open: HalfOpen,
    pub(super) listener: Option<Listener>,
}

/// How the half-open state decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HalfOpen {
    /// `K` successes close, one failure opens.
    AllSucceed,
    /// Once the `K` probes are done: open if their failures are at least
    /// this share (millionths) — or, with a slow-call rate, if their slow
    /// calls are at least that rate — else close. Without a slow-call
    /// rate, a call over the slow-call limit counts as a failure.
    FailureRate(u64),
}

/// Something that happened to a breaker, for [`on_event`] listeners.
///
/// [`on_event`]: super::BreakerBuilder::on_event
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerEvent {
    /// The breaker moved from one state to another; `open_for` is the
    /// (jittered) open time when it opened.
    Transition {
        /// The state before.
        from: State,
        /// The state after.
        to: State,
        /// How long it stays open, when it opened.
        open_for: Option<Duration>,
    },
    /// A call was turned away.
    Rejected {
        /// The state that turned it away.
        state: State,
        /// When to come back, if the breaker knows.
        retry_after: Option<Duration>,
    },
}

/// A listener for a breaker's events: called synchronously, on the thread
/// of the call that caused the event (keep it short).
#[derive(Clone)]
pub(super) struct Listener(pub(super) Arc<dyn Fn(&BreakerEvent) + Send + Sync>);

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Listener")
    }
}

/// What a breaker has done since it was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerStats {
    /// Where it is now.
    pub state: State,
    /// Transitions (every change of state).
    pub transitions: u64,
    /// Of those, openings.
    pub openings: u64,
    /// Calls turned away.
    pub rejections: u64,
}

/// `part / calls ≥ threshold` (in millionths), exactly, once `calls` is at
/// least `minimum`.
fn at_least(part: u64, threshold: u64, calls: u64, minimum: u32) -> bool {
    calls >= u64::from(minimum)
        && u128::from(part) * u128::from(PER_MILLION) >= u128::from(threshold) * u128::from(calls)
}

// ----- the core ------------------------------------------------------------

/// Aligned to 128 bytes so that the `Arc`'s counts, which every permit
/// writes, are not on the line of the state word every call reads.
#[repr(align(128))]
pub(super) struct Core {
    config: Config,
    clock: Clock,
    word: AtomicU64,
    /// When the current opening ends, in nanoseconds since `start`.
    open_until: AtomicU64,
    window: Option<Window>,
    /// Successes not yet placed in the window (see `record_closed`).
    pending_successes: Pending,
    consecutive: AtomicU32,
    /// Slow calls per slot (with a slow-call rate).
    slow: Option<Window>,
    /// A failure may still be in the window: successes check the rate.
    failures_in_window: AtomicBool,
    /// The open-time sequence of the current run of openings; transitions
    /// into the open state hold this lock.
    openings: Mutex<Sequence>,
    /// Counts for `stats` (only off the closed path).
    transitions: AtomicU64,
    opened: AtomicU64,
    rejections: AtomicU64,
}

impl Drop for Core {
    /// A breaker that goes away open (an evicted keyed breaker, the last
    /// clone dropped) leaves the count of open breakers.
    fn drop(&mut self) {
        if self.state().is_open() {
            crate::telemetry::count::breaker_gone_open();
        }
    }
}

impl Core {
    /// A breaker's core; `shared`: many threads will call it, so the
    /// closed path's counts are striped (see [`Pending`]).
    pub(super) fn new(config: Config, shared: bool) -> Core {
        let window = match config.trip {
            Trip::FailureRate {
                window, buckets, ..
            } => Some(Window::new(window, buckets as usize)),
            Trip::Consecutive(_) => None,
        };
        let slow = match (config.trip, config.slow_call_rate) {
            (
                Trip::FailureRate {
                    window, buckets, ..
                },
                Some(_),
            ) => Some(Window::new(window, buckets as usize)),
            _ => None,
        };
        Core {
            // Exact: open times and slow calls are measured to the
            // nanosecond; only the window's slots are found coarsely.
            clock: Clock::exact(),
            word: AtomicU64::new(pack(0, CLOSED)),
            open_until: AtomicU64::new(0),
            window,
            pending_successes: if shared {
                Pending::striped()
            } else {
                Pending::one()
            },
            consecutive: AtomicU32::new(0),
            slow,
            failures_in_window: AtomicBool::new(false),
            openings: Mutex::new(config.open_time.sequence()),
            transitions: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            rejections: AtomicU64::new(0),
            config,
        }
    }

    pub(super) fn stats(&self) -> BreakerStats {
        BreakerStats {
            state: self.state(),
            transitions: self.transitions.load(Ordering::Relaxed),
            openings: self.opened.load(Ordering::Relaxed),
            rejections: self.rejections.load(Ordering::Relaxed),
        }
    }

    /// Counts a rejection and tells the listener.
    #[cold]
    fn reject(&self, state: State, retry_after: Option<Duration>) -> Rejected {
        self.rejections.fetch_add(1, Ordering::Relaxed);
        if let Some(listener) = &self.config.listener {
            (listener.0)(&BreakerEvent::Rejected { state, retry_after });
        }
        Rejected::new(state, retry_after)
    }

    fn elapsed_nanos(&self) -> u64 {
        self.clock.elapsed_nanos()
    }

    fn lock_openings(&self) -> MutexGuard<'_, Sequence> {
        // A panic elsewhere cannot leave a `Sequence` half-updated.
        self.openings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn state(&self) -> State {
        state_of(self.word.load(Ordering::Acquire))
    }

    /// How long until an open breaker will admit a probe.
    pub(super) fn retry_after(&self) -> Option<Duration> {
        let word = self.word.load(Ordering::Acquire);
        match tag(word) {
            OPEN => Some(self.open_remaining()),
            HALF_OPEN => Some(self.half_open_retry_after()),
            _ => None,
        }
    }

    fn open_remaining(&self) -> Duration {
        let until = self.open_until.load(Ordering::Acquire);
        Duration::from_nanos(until.saturating_sub(self.elapsed_nanos()))
    }

    /// A caller turned away while the probes are out is told to come back
    /// after the base open time: by then the probes have either closed the
    /// breaker or opened it again for longer.
    fn half_open_retry_after(&self) -> Duration {
        self.config.open_time.base()
    }

    /// Admits a call or says why not.
    #[inline]
    pub(super) fn admit(&self) -> Result<Ticket, Rejected> {
        // The closed path, inlined into callers; everything else out of line.
        let word = self.word.load(Ordering::Acquire);
        if tag(word) == CLOSED && self.config.slow_call.is_none() {
            return Ok(Ticket {
                round: epoch(word) << 1,
                started: 0,
            });
        }
        self.admit_slow()
    }

    #[inline(never)]
    fn admit_slow(&self) -> Result<Ticket, Rejected> {
        loop {
            let word = self.word.load(Ordering::Acquire);
            match tag(word) {
                CLOSED | FORCED_CLOSED => return Ok(self.ticket(epoch(word), false)),
                ISOLATED => return Err(self.reject(State::Isolated, None)),
                OPEN => {
                    let remaining = self.open_remaining();
                    if !remaining.is_zero() {
                        return Err(self.reject(State::Open, Some(remaining)));
                    }
                    // The open time is over: this caller is the first probe.
                    let next = pack(epoch(word) + 1, HALF_OPEN) + ONE_ADMITTED;
                    if self.swap_word(word, next) {
                        self.announce(word, next, None);
                        return Ok(self.ticket(epoch(next), true));
                    }
                }
                _ => {
                    // Half-open.
                    if admitted(word) >= self.config.probes {
                        return Err(
                            self.reject(State::HalfOpen, Some(self.half_open_retry_after()))
                        );
                    }
                    if self.swap_word(word, word + ONE_ADMITTED) {
                        return Ok(self.ticket(epoch(word), true));
                    }
                }
            }
        }
    }

    fn ticket(&self, epoch: u64, probe: bool) -> Ticket {
        Ticket {
            round: epoch << 1 | u64::from(probe),
            // Nanoseconds since the breaker's start, plus one; 0 is "not timed".
            started: if self.config.slow_call.is_some() {
                self.elapsed_nanos().saturating_add(1)
            } else {
                0
            },
        }
    }

    /// Books the outcome of an admitted call. A call slower than the
    /// slow-call limit counts as a failure whatever its outcome.
    #[inline]
    pub(super) fn finish(&self, ticket: &Ticket, outcome: Outcome) {
        if !ticket.probe() && ticket.started == 0 && !outcome.is_failure() {
            self.record_closed(ticket.epoch(), false);
            return;
        }
        self.finish_slow(ticket, outcome);
    }

    #[inline(never)]
    fn finish_slow(&self, ticket: &Ticket, outcome: Outcome) {
        let slow = match self.config.slow_call {
            Some(limit) if ticket.started != 0 => {
                let took = self.elapsed_nanos().saturating_sub(ticket.started - 1);
                Duration::from_nanos(took) > limit
            }
            _ => false,
        };
        let failure = outcome.is_failure();
        match (
            self.config.slow_call_rate,
            ticket.probe(),
            self.config.half_open,
        ) {
            // A slow call counts on its own; only its outcome is booked as
            // a failure or a success (resilience4j's two thresholds).
            (Some(_), false, _) => {
                self.record_closed(ticket.epoch(), failure);
                self.check_slow_rate(ticket.epoch(), slow);
            }
            // resilience4j's half-open state: the probes' failure rate and
            // slow-call rate, each against its own threshold.
            (Some(_), true, HalfOpen::FailureRate(_)) => {
                self.record_probe(ticket.epoch(), failure, slow);
            }
            _ => self.record(ticket.epoch(), ticket.probe(), failure || slow),
        }
    }

    /// An admitted call ends without an outcome: a probe gives its place back.
    pub(super) fn abandon(&self, ticket: &Ticket) {
        if ticket.probe() {
            self.release_probe(ticket.epoch());
        }
    }

    fn swap_word(&self, current: u64, next: u64) -> bool {
        self.word
            .compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Books the outcome of an admitted call.
    fn record(&self, permit_epoch: u64, probe: bool, failure: bool) {
        if probe {
            self.record_probe(permit_epoch, failure, false);
        } else {
            self.record_closed(permit_epoch, failure);
        }
    }

    #[inline]
    fn record_closed(&self, permit_epoch: u64, failure: bool) {
        let word = self.word.load(Ordering::Acquire);
        if tag(word) != CLOSED || epoch(word) != permit_epoch {
            return; // admitted before a transition (or forced closed): does not count
        }
        let trip = match self.config.trip {
            Trip::Consecutive(n) => {
                if failure {
                    self.consecutive.fetch_add(1, Ordering::AcqRel) + 1 >= n
                } else {
                    if self.consecutive.load(Ordering::Relaxed) != 0 {
                        self.consecutive.store(0, Ordering::Relaxed);
                    }
                    false
                }
            }
            Trip::FailureRate {
                threshold,
                minimum_calls,
                ..
            } => {
                let window = self
                    .window
                    .as_ref()
                    .expect("a failure-rate breaker has a window");
                if failure {
                    let now = window.now();
                    self.place_pending(window, now);
                    window.add(now, pair(1, 1));
                    self.failures_in_window.store(true, Ordering::Release);
                    let (calls, failures) = window.sum_pairs();
                    at_least(failures, threshold, calls, minimum_calls)
                } else {
                    // While no failure is in the window, a success cannot
                    // trip the breaker, so it need not read the clock:
                    // successes are counted here and placed in the window
                    // every `PLACE_EVERY`-th success, or at the next failure,
                    // in the bucket of that moment. With failures in the
                    // window, the success that brings the calls to the
                    // minimum may trip it (resilience4j checks the rate at
                    // every call once the minimum is in): it is placed, and
                    // the rate checked, at once.
                    let pending = self.pending_successes.add();
                    if self.failures_in_window.load(Ordering::Acquire) {
                        // Only this thread's stripe: every success places
                        // its own while failures are in the window (and the
                        // failure that put them there placed every stripe).
                        let now = window.now();
                        Self::place(window, now, self.pending_successes.take_mine());
                        let (calls, failures) = window.sum_pairs();
                        if failures == 0 {
                            self.failures_in_window.store(false, Ordering::Release);
                        }
                        at_least(failures, threshold, calls, minimum_calls)
                    } else {
                        if pending % PLACE_EVERY == 0 {
                            let batch = self.pending_successes.take_mine();
                            Self::place(window, window.now(), batch);
                        }
                        false
                    }
                }
            }
        };
        if trip {
            self.open(word);
        }
    }

    /// Checks the slow-call rate (with one): trips when slow calls are at
    /// least that share of the calls in the window, once the minimum of
    /// calls is in. Called after every call, slow or not.
    fn check_slow_rate(&self, permit_epoch: u64, slow_call: bool) {
        let (Some(slow), Some(rate), Some(window)) =
            (&self.slow, self.config.slow_call_rate, &self.window)
        else {
            return;
        };
        let word = self.word.load(Ordering::Acquire);
        if tag(word) != CLOSED || epoch(word) != permit_epoch {
            return;
        }
        let Trip::FailureRate { minimum_calls, .. } = self.config.trip else {
            return;
        };
        let now = slow.now();
        if slow_call {
            slow.add(now, 1);
        }
        Self::place(window, window.now(), self.pending_successes.take_mine());
        let (calls, _) = window.sum_pairs();
        let slow_calls = u64::try_from(slow.sum_signed()).unwrap_or(0);
        if at_least(slow_calls, rate, calls, minimum_calls) {
            self.open(word);
        }
    }

    /// Moves the pending successes into the window, in the bucket of `now`.
    fn place_pending(&self, window: &Window, now: u64) {
        Self::place(window, now, self.pending_successes.take_all());
    }

    /// Places `successes` in the window, in the bucket of `now`.
    fn place(window: &Window, now: u64, successes: u64) {
        if successes != 0 {
            window.add(now, pair(u32::try_from(successes).unwrap_or(u32::MAX), 0));
        }
    }

    fn record_probe(&self, permit_epoch: u64, failure: bool, slow_call: bool) {
        loop {
            let word = self.word.load(Ordering::Acquire);
            if tag(word) != HALF_OPEN || epoch(word) != permit_epoch {
                return; // the half-open round this probe belonged to is over
            }
            let done = match self.config.half_open {
                HalfOpen::AllSucceed => {
                    if failure {
                        self.open(word)
                    } else if succeeded(word) + 1 >= self.config.probes {
                        self.close(word)
                    } else {
                        self.swap_word(word, word + ONE_SUCCEEDED)
                    }
                }
                // resilience4j: once the permitted calls are done, their
                // failure rate decides.
                HalfOpen::FailureRate(threshold) => {
                    let (mut ok, mut failed, mut slow) =
                        (succeeded(word), failed(word), slow(word));
                    if failure {
                        failed += 1;
                    } else {
                        ok += 1;
                    }
                    slow += u32::from(slow_call);
                    let probes = u64::from(self.config.probes);
                    if ok + failed < self.config.probes {
                        let step = if failure { ONE_FAILED } else { ONE_SUCCEEDED };
                        let step = step + if slow_call { ONE_SLOW } else { 0 };
                        self.swap_word(word, word + step)
                    } else if u64::from(failed) * PER_MILLION >= threshold * probes
                        || self
                            .config
                            .slow_call_rate
                            .is_some_and(|rate| u64::from(slow) * PER_MILLION >= rate * probes)
                    {
                        self.open(word)
                    } else {
                        self.close(word)
                    }
                }
            };
            if done {
                return;
            }
        }
    }

    /// A probe that ends without an outcome (its caller went away) gives its place back.
    fn release_probe(&self, permit_epoch: u64) {
        loop {
            let word = self.word.load(Ordering::Acquire);
            if tag(word) != HALF_OPEN || epoch(word) != permit_epoch || admitted(word) == 0 {
                return;
            }
            if self.swap_word(word, word - ONE_ADMITTED) {
                return;
            }
        }
    }

    /// Opens the breaker from `expected` (closed or half-open) for the next
    /// jittered open time. `false` if the state moved meanwhile.
    fn open(&self, expected: u64) -> bool {
        let mut openings = self.lock_openings();
        if self.word.load(Ordering::Acquire) != expected {
            return false;
        }
        let open_for = openings.next_delay();
        let until = self
            .elapsed_nanos()
            .saturating_add(crate::clock::nanos(open_for));
        self.open_until.store(until, Ordering::Release);
        let next = pack(epoch(expected) + 1, OPEN);
        let moved = self.swap_word(expected, next);
        drop(openings);
        if moved {
            self.announce(expected, next, Some(open_for));
        }
        moved
    }

    /// Closes the breaker from half-open after its probes succeeded.
    fn close(&self, expected: u64) -> bool {
        let mut openings = self.lock_openings();
        if self.word.load(Ordering::Acquire) != expected {
            return false;
        }
        self.forget_counts();
        *openings = self.config.open_time.sequence();
        let next = pack(epoch(expected) + 1, CLOSED);
        let moved = self.swap_word(expected, next);
        drop(openings);
        if moved {
            self.announce(expected, next, None);
        }
        moved
    }

    fn forget_counts(&self) {
        if let Some(window) = &self.window {
            window.clear();
        }
        if let Some(slow) = &self.slow {
            slow.clear();
        }
        self.failures_in_window.store(false, Ordering::Release);
        self.pending_successes.take_all();
        self.consecutive.store(0, Ordering::Relaxed);
    }

    /// An operator moves the breaker to `target` (isolated, forced closed,
    /// or closed for a reset).
    pub(super) fn force(&self, target: State) {
        let tag = match target {
            State::Isolated => ISOLATED,
            State::ForcedClosed => FORCED_CLOSED,
            _ => CLOSED,
        };
        let mut openings = self.lock_openings();
        self.forget_counts();
        *openings = self.config.open_time.sequence();
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let next = pack(epoch(word) + 1, tag);
            match self
                .word
                .compare_exchange(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    drop(openings);
                    // A reset of a closed breaker starts a new epoch (and
                    // forgets the counts) but is not a transition.
                    if state_of(word) != state_of(next) {
                        self.announce(word, next, None);
                    }
                    return;
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Tells the world about a transition: an event, and the current span's field.
    fn announce(&self, from: u64, to: u64, open_for: Option<Duration>) {
        let (from, to) = (state_of(from), state_of(to));
        self.transitions.fetch_add(1, Ordering::Relaxed);
        if open_for.is_some() {
            self.opened.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(listener) = &self.config.listener {
            (listener.0)(&BreakerEvent::Transition { from, to, open_for });
        }
        Span::current().record(BREAKER_STATE, to.as_str());
        crate::telemetry::count::breaker_transition(
            to.as_str(),
            from.is_open(),
            to.is_open(),
            open_for,
        );
        match open_for {
            Some(open_for) => tracing::event!(
                target: "dephase::breaker",
                Level::INFO,
                dephase.breaker.state = to.as_str(),
                from = from.name(),
                to = to.name(),
                dephase.breaker.open_ms = telemetry::millis(open_for),
                "circuit breaker opened"
            ),
            None => tracing::event!(
                target: "dephase::breaker",
                Level::INFO,
                dephase.breaker.state = to.as_str(),
                from = from.name(),
                to = to.name(),
                "circuit breaker state changed"
            ),
        }
    }
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = self.word.load(Ordering::Acquire);
        f.debug_struct("Breaker")
            .field("state", &state_of(word))
            .field("epoch", &epoch(word))
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// An admitted call: its round (epoch), whether it is a probe, and when it started.
#[derive(Debug)]
pub(super) struct Ticket {
    /// The epoch it was admitted in, shifted left, with the probe flag in bit 0.
    /// (Two plain words: a ticket is moved around on the closed path, and
    /// mixed-size fields there cost store-forwarding stalls.)
    round: u64,
    started: u64,
}

impl Ticket {
    fn epoch(&self) -> u64 {
        self.round >> 1
    }

    fn probe(&self) -> bool {
        self.round & 1 == 1
    }
}

/// The right to make one call through a breaker; book its outcome with
/// [`record`](Permit::record).
///
/// A permit dropped without an outcome (the caller went away) books
/// nothing, and a half-open probe's place is given back for another caller.
pub struct Permit {
    core: Held,
    ticket: Ticket,
    recorded: bool,
}

/// What keeps a permit's breaker alive: the core itself, or a lane on it
/// (see `handle::Lanes`).
enum Held {
    Core(Arc<Core>),
    Lane(Arc<Lane>),
}

impl std::ops::Deref for Held {
    type Target = Core;

    #[inline]
    fn deref(&self) -> &Core {
        match self {
            Held::Core(core) => core,
            Held::Lane(lane) => &lane.0,
        }
    }
}

impl Permit {
    #[inline]
    pub(super) fn new(core: &Arc<Core>, ticket: Ticket) -> Permit {
        Permit {
            core: Held::Core(Arc::clone(core)),
            ticket,
            recorded: false,
        }
    }

    #[inline]
    pub(super) fn on_lane(lane: Arc<Lane>, ticket: Ticket) -> Permit {
        Permit {
            core: Held::Lane(lane),
            ticket,
            recorded: false,
        }
    }

    /// Whether this call is one of the half-open probes.
    pub fn is_probe(&self) -> bool {
        self.ticket.probe()
    }

    /// Books the call's outcome. A call slower than the breaker's slow-call
    /// duration counts as a failure whatever its outcome.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        self.recorded = true;
        self.core.finish(&self.ticket, outcome);
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if !self.recorded {
            self.core.abandon(&self.ticket);
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("ticket", &self.ticket)
            .finish_non_exhaustive()
    }
}

/// A call made through [`Breaker::call_with`](super::Breaker::call_with):
/// abandoned if the call panics.
pub(super) struct Guard<'a> {
    pub(super) core: &'a Core,
    pub(super) ticket: Option<Ticket>,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.core.abandon(&ticket);
        }
    }
}

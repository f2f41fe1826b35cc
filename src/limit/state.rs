//! The [`Limiter`]: the shared state of a concurrency limit — the limit
//! and the requests in flight, the partitions, the sampling window that
//! feeds the algorithm, and the queue of callers waiting for a slot.
//!
//! Admission is a compare-and-swap on the count in flight; a caller over
//! the limit may still take its partition's reserved share (Netflix's
//! partitioned limiter: a partition's share applies only once the global
//! limit is reached). Each finished request adds its round trip to the
//! window (a few relaxed adds); the first request to finish after the
//! window's end rolls it, under a lock taken once per window, feeding the
//! algorithm one [`Sample`]. Round trips are read on the crate's clock: the
//! kernel's coarse clock in a multi-thread runtime when its step is at most
//! a tenth of the window (each round trip then off by up to a step, 4 ms
//! on Linux's default; the window's average by less), tokio's otherwise
//! (exact, and paused in tests).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;
use std::time::Duration;

use super::algorithm::{Gradient2, LimitAlgorithm, Sample};
use super::error::LimitExceeded;
use crate::clock::{Clock, nanos};
use crate::error::{ConfigError, check_f64};
use crate::rng::RngSource;
use crate::tally::Count;

/// A concurrency limit shared by every clone (and every layer built with
/// it): how many requests may be in flight now, adapted by its algorithm.
///
/// The slot is taken when the request is *called* (`poll_ready` only
/// forwards the inner service's readiness), unlike tower's fixed
/// `ConcurrencyLimit`. Without partitions the limit is a hard cap; with
/// partitions, a partition under its share is admitted once the limit is
/// reached (Netflix's partitioned limiter), so the requests in flight can
/// exceed [`limit`](Self::limit) by up to the sum of the shares' rounding
/// and the reserves in use.
///
/// ```
/// use std::time::Duration;
/// use dephase::limit::{Gradient2, Limiter};
///
/// let limiter = Limiter::builder()
///     .algorithm(Gradient2::new().range(10, 100)?)
///     .max_wait(Duration::from_millis(50)) // wait up to 50 ms for a slot
///     .partition("critical", 0.7)?
///     .partition("sheddable", 0.3)?
///     .build()?;
/// assert_eq!(limiter.limit(), 20); // Gradient2's initial limit
/// assert_eq!(limiter.partition_index("critical"), Some(0));
/// # Ok::<(), dephase::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Limiter {
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    limit: AtomicU32,
    in_flight: AtomicU32,
    partitions: Box<[Partition]>,
    algorithm: Mutex<Box<dyn LimitAlgorithm>>,
    window: Window,
    clock: Clock,
    /// The last window's average round trip, in nanoseconds (0: none yet).
    last_rtt: AtomicU64,
    pub(super) max_wait: Option<Duration>,
    max_queued: usize,
    /// One queue per partition, then one for requests of no partition.
    queue: Mutex<Vec<VecDeque<Arc<Waiter>>>>,
    queued: AtomicUsize,
    rng: RngSource,
    counts: Counts,
}

/// A share of the limit reserved for one class of requests.
struct Partition {
    name: Box<str>,
    share: f64,
    limit: AtomicU32,
    busy: AtomicU32,
}

impl Partition {
    fn try_acquire(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        let mut busy = self.busy.load(Ordering::Relaxed);
        while busy < limit {
            match self.busy.compare_exchange_weak(
                busy,
                busy + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => busy = now,
            }
        }
        false
    }
}

/// The sampling window (Netflix's `WindowedLimit`).
struct Window {
    end: AtomicU64,
    /// The window's shortest round trip: its length is twice that (Netflix's
    /// candidate round trip of an average window).
    rtt_min: AtomicU64,
    rtt_sum: AtomicU64,
    count: AtomicU32,
    max_in_flight: AtomicU32,
    dropped: AtomicBool,
    min_time: u64,
    max_time: u64,
    min_samples: u32,
    min_rtt: u64,
}

#[derive(Debug, Default)]
struct Counts {
    rejected: Count,
    waited: Count,
    timed_out: Count,
}

/// A caller waiting for a slot.
pub(super) struct Waiter {
    pub(super) partition: Option<usize>,
    state: Mutex<WaiterState>,
}

#[derive(Default)]
struct WaiterState {
    waker: Option<Waker>,
    granted: bool,
}

/// What the limit, its requests and its queue look like now, and what it
/// has refused: [`Limiter::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitStats {
    /// The current limit.
    pub limit: u32,
    /// Requests in flight.
    pub in_flight: u32,
    /// Callers waiting for a slot.
    pub queued: usize,
    /// Callers turned away (at once, or after waiting).
    pub rejected: u64,
    /// Callers that waited for a slot and got one.
    pub waited: u64,
    /// Callers whose wait ran out (counted in `rejected` too).
    pub timed_out: u64,
}

/// What a finished request tells the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// Answered: its round trip counts.
    Answered,
    /// Dropped (a retryable failure: the overload signal): its round trip
    /// counts and the window saw a drop.
    Dropped,
    /// A failure that says nothing about load: not sampled.
    Ignored,
}

/// A slot held by a request; released when dropped.
pub(super) struct Permit {
    shared: Arc<Shared>,
    partition: Option<usize>,
    /// When the request was admitted, on the limiter's clock.
    started: u64,
    in_flight: u32,
}

impl Permit {
    /// The request finished: its round trip goes into the window.
    pub(super) fn finish(self, seen: Seen) {
        if seen != Seen::Ignored {
            let now = self.shared.clock.elapsed_nanos();
            let rtt = now.saturating_sub(self.started);
            self.shared
                .sample(rtt, self.in_flight, seen == Seen::Dropped, now);
        }
        // The release is `Drop`'s.
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.release(self.partition);
    }
}

impl Limiter {
    /// A builder with the defaults: [`Gradient2`] with Netflix's defaults,
    /// windows of 1 s with at least 10 samples (round trips under 100 µs
    /// are not sampled), callers over the limit turned away at once, no
    /// partitions.
    pub fn builder() -> LimiterBuilder {
        LimiterBuilder {
            algorithm: Box::new(Gradient2::new()),
            min_window: Duration::from_secs(1),
            max_window: Duration::from_secs(1),
            min_samples: 10,
            min_rtt: Duration::from_micros(100),
            max_wait: None,
            max_queued: 1000,
            partitions: Vec::new(),
            seed: None,
        }
    }

    /// The current limit.
    pub fn limit(&self) -> u32 {
        self.shared.limit.load(Ordering::Relaxed)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// The index of the partition called `name` (what a priority
    /// extractor returns), in the order they were declared.
    pub fn partition_index(&self, name: &str) -> Option<usize> {
        self.shared.partitions.iter().position(|p| &*p.name == name)
    }

    /// The name of partition `index`.
    pub fn partition_name(&self, index: usize) -> Option<&str> {
        self.shared.partitions.get(index).map(|p| &*p.name)
    }

    /// The limit, the requests in flight and queued, and what was refused.
    pub fn stats(&self) -> LimitStats {
        let shared = &*self.shared;
        LimitStats {
            limit: self.limit(),
            in_flight: self.in_flight(),
            queued: shared.queued.load(Ordering::Relaxed),
            rejected: shared.counts.rejected.get(),
            waited: shared.counts.waited.get(),
            timed_out: shared.counts.timed_out.get(),
        }
    }

    /// A slot now for a request of `partition`: a free one if no caller
    /// is waiting before it; else its partition's reserved share, if the
    /// partition is under it (waiting callers do not take a reserve away).
    #[inline]
    pub(super) fn try_acquire(&self, partition: Option<usize>) -> Option<Permit> {
        let shared = &self.shared;
        let in_flight = if shared.queued.load(Ordering::SeqCst) > 0 {
            shared.admit_reserved(partition)?
        } else {
            shared.admit(partition)?
        };
        Some(self.permit(partition, in_flight))
    }

    fn permit(&self, partition: Option<usize>, in_flight: u32) -> Permit {
        Permit {
            shared: Arc::clone(&self.shared),
            partition,
            started: self.shared.clock.elapsed_nanos(),
            in_flight,
        }
    }

    /// Queues a caller of `partition`; `None` when the queue is full.
    pub(super) fn enqueue(&self, partition: Option<usize>) -> Option<Arc<Waiter>> {
        let shared = &*self.shared;
        let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if shared.queued.load(Ordering::Relaxed) >= shared.max_queued {
            return None;
        }
        let waiter = Arc::new(Waiter {
            partition,
            state: Mutex::new(WaiterState::default()),
        });
        let lane = partition
            .filter(|p| *p < shared.partitions.len())
            .unwrap_or(shared.partitions.len());
        queue[lane].push_back(Arc::clone(&waiter));
        shared.queued.fetch_add(1, Ordering::SeqCst);
        drop(queue);
        // A slot may have freed between the caller's try and its queueing.
        shared.grant();
        Some(waiter)
    }

    /// Whether `waiter` has been given a slot; registers `waker` if not.
    pub(super) fn poll_grant(&self, waiter: &Waiter, waker: &Waker) -> Option<Permit> {
        let mut state = waiter.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.granted {
            state.granted = false;
            drop(state);
            self.shared.counts.waited.add();
            // The count before this caller's own slot, as on the direct path.
            let in_flight = self.in_flight().saturating_sub(1);
            return Some(self.permit(waiter.partition, in_flight));
        }
        match &mut state.waker {
            Some(w) if w.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
        None
    }

    /// The waiter gives up (its wait ran out, or its caller went away): out
    /// of the queue, and a slot it was given in the meantime is passed on.
    /// Returns whether it had been given one (then the caller may use it).
    pub(super) fn leave(&self, waiter: &Arc<Waiter>) -> Option<Permit> {
        let shared = &*self.shared;
        let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        for lane in queue.iter_mut() {
            if let Some(at) = lane.iter().position(|w| Arc::ptr_eq(w, waiter)) {
                lane.remove(at);
                shared.queued.fetch_sub(1, Ordering::Relaxed);
                return None;
            }
        }
        drop(queue);
        // Not queued: it was granted a slot.
        let mut state = waiter.state.lock().unwrap_or_else(PoisonError::into_inner);
        if std::mem::take(&mut state.granted) {
            drop(state);
            let in_flight = self.in_flight().saturating_sub(1);
            return Some(self.permit(waiter.partition, in_flight));
        }
        None
    }

    /// A rejection with a jittered `retry_after`: between one and two of
    /// the last window's round trips (1 ms before the first window).
    pub(super) fn reject(
        &self,
        partition: Option<usize>,
        waited: Duration,
        timed_out: bool,
    ) -> LimitExceeded {
        let shared = &*self.shared;
        shared.counts.rejected.add();
        if timed_out {
            shared.counts.timed_out.add();
        }
        crate::telemetry::count::limit_rejected();
        let rtt = match shared.last_rtt.load(Ordering::Relaxed) {
            0 => 1_000_000,
            rtt => rtt,
        };
        let extra = ((u128::from(shared.rng.draw()) * u128::from(rtt)) >> 64) as u64;
        LimitExceeded::new(
            self.limit(),
            self.in_flight(),
            Duration::from_nanos(rtt.saturating_add(extra)),
            waited,
            partition
                .and_then(|p| self.partition_name(p))
                .map(Box::from),
        )
    }
}

impl Shared {
    /// Takes a slot for `partition` if the limit (or the partition's
    /// share of it, once the limit is reached) allows; the count in flight
    /// before it.
    fn admit(&self, partition: Option<usize>) -> Option<u32> {
        let limit = self.limit.load(Ordering::Relaxed);
        let part = partition.and_then(|p| self.partitions.get(p));
        let mut current = self.in_flight.load(Ordering::SeqCst);
        loop {
            if current >= limit {
                // Over the limit: the partition's reserved share still admits.
                if !part.is_some_and(Partition::try_acquire) {
                    return None;
                }
                return Some(self.in_flight.fetch_add(1, Ordering::AcqRel));
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    if let Some(part) = part {
                        part.busy.fetch_add(1, Ordering::Relaxed);
                    }
                    return Some(current);
                }
                Err(now) => current = now,
            }
        }
    }

    /// Takes a slot from `partition`'s reserved share only (over the limit,
    /// with callers waiting for the free slots).
    fn admit_reserved(&self, partition: Option<usize>) -> Option<u32> {
        let part = partition.and_then(|p| self.partitions.get(p))?;
        if self.in_flight.load(Ordering::Relaxed) < self.limit.load(Ordering::Relaxed) {
            // Free slots are the waiting callers'.
            return None;
        }
        if !part.try_acquire() {
            return None;
        }
        Some(self.in_flight.fetch_add(1, Ordering::AcqRel))
    }

    fn release(&self, partition: Option<usize>) {
        if let Some(part) = partition.and_then(|p| self.partitions.get(p)) {
            part.busy.fetch_sub(1, Ordering::Relaxed);
        }
        // SeqCst with the queueing side (`enqueue`: `queued` up, then a
        // look at `in_flight`): one of the two sees the other, so a slot
        // freed while a caller queues is never missed.
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.queued.load(Ordering::SeqCst) > 0 {
            self.grant();
        }
    }

    /// Gives free slots to waiters, first of the first partition first, one
    /// slot each: a freed slot releases one caller, never a crowd.
    fn grant(&self) {
        let mut woken = Vec::new();
        {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            'lanes: for (lane, waiters) in queue.iter_mut().enumerate() {
                let partition = (lane < self.partitions.len()).then_some(lane);
                while !waiters.is_empty() {
                    if self.admit(partition).is_none() {
                        continue 'lanes;
                    }
                    let waiter = waiters.pop_front().expect("not empty");
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                    let mut state = waiter.state.lock().unwrap_or_else(PoisonError::into_inner);
                    state.granted = true;
                    if let Some(waker) = state.waker.take() {
                        woken.push(waker);
                    }
                }
            }
        }
        for waker in woken {
            waker.wake();
        }
    }

    /// Adds a finished request's round trip to the window; rolls the window
    /// if it is over.
    fn sample(&self, rtt: u64, in_flight: u32, dropped: bool, reading: u64) {
        let window = &self.window;
        if rtt < window.min_rtt {
            return;
        }
        window.rtt_sum.fetch_add(rtt, Ordering::Relaxed);
        window.count.fetch_add(1, Ordering::Relaxed);
        // The minimum and maximum change rarely once a window is under way:
        // a load first spares the shared line a write on most samples.
        if rtt < window.rtt_min.load(Ordering::Relaxed) {
            window.rtt_min.fetch_min(rtt, Ordering::Relaxed);
        }
        if in_flight + 1 > window.max_in_flight.load(Ordering::Relaxed) {
            window
                .max_in_flight
                .fetch_max(in_flight + 1, Ordering::Relaxed);
        }
        if dropped {
            window.dropped.store(true, Ordering::Relaxed);
        }
        let end = window.end.load(Ordering::Relaxed);
        if reading >= end {
            self.roll(end, reading);
        }
    }

    /// The window is over: the first caller here feeds it to the algorithm.
    #[cold]
    fn roll(&self, end: u64, now: u64) {
        let window = &self.window;
        let shortest = window.rtt_min.load(Ordering::Relaxed);
        let length = shortest
            .saturating_mul(2)
            .clamp(window.min_time, window.max_time);
        if window
            .end
            .compare_exchange(
                end,
                now.saturating_add(length),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return;
        }
        let count = window.count.swap(0, Ordering::Relaxed);
        let sum = window.rtt_sum.swap(0, Ordering::Relaxed);
        window.rtt_min.store(u64::MAX, Ordering::Relaxed);
        let max_in_flight = window
            .max_in_flight
            .swap(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        let dropped = window.dropped.swap(false, Ordering::Relaxed);
        if count < window.min_samples {
            return; // too few to say anything (Netflix discards them)
        }
        let average = sum / u64::from(count);
        self.last_rtt.store(average, Ordering::Relaxed);
        let sample = Sample {
            rtt: Duration::from_nanos(average),
            in_flight: max_in_flight,
            dropped,
        };
        let estimate = self
            .algorithm
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update(&sample);
        self.set_limit(estimate);
    }

    fn set_limit(&self, estimate: f64) {
        // NaN says nothing: the tightest limit. An infinity is clamped like
        // any other value (`+∞`: no limit to speak of).
        let limit = if estimate.is_nan() {
            1
        } else {
            estimate.floor().clamp(1.0, f64::from(u32::MAX)) as u32
        };
        let old = self.limit.swap(limit, Ordering::Relaxed);
        for part in &*self.partitions {
            // Rounded up and at least 1, as Netflix does: the shares may
            // add up to a little more than the limit.
            let share = (f64::from(limit) * part.share).ceil().max(1.0) as u32;
            part.limit.store(share, Ordering::Relaxed);
        }
        if old != limit {
            crate::telemetry::count::limit_changed(limit);
            tracing::event!(
                target: "dephase::limit",
                tracing::Level::DEBUG,
                dephase.limit.current = i64::from(limit),
                previous = i64::from(old),
                "concurrency limit changed"
            );
        }
        if limit > old && self.queued.load(Ordering::Relaxed) > 0 {
            self.grant();
        }
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("stats", &self.stats())
            .field("max_wait", &self.shared.max_wait)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Limiter`]; [`build`](Self::build) checks the settings.
pub struct LimiterBuilder {
    algorithm: Box<dyn LimitAlgorithm>,
    min_window: Duration,
    max_window: Duration,
    min_samples: u32,
    min_rtt: Duration,
    max_wait: Option<Duration>,
    max_queued: usize,
    partitions: Vec<(Box<str>, f64)>,
    seed: Option<u64>,
}

impl LimiterBuilder {
    /// The algorithm that moves the limit (default [`Gradient2`]).
    pub fn algorithm(mut self, algorithm: impl LimitAlgorithm) -> Self {
        self.algorithm = Box::new(algorithm);
        self
    }

    /// How long a sampling window lasts: twice its shortest round trip (as
    /// Netflix's `WindowedLimit`), between `min` and `max` (default 1 s and 1 s, as Netflix; at least
    /// 1 ms). Shorter windows follow a change faster and see fewer samples.
    pub fn window(mut self, min: Duration, max: Duration) -> Self {
        self.min_window = min;
        self.max_window = max;
        self
    }

    /// Samples a window needs to count (default 10); a window with fewer is
    /// discarded.
    pub fn min_samples(mut self, min_samples: u32) -> Self {
        self.min_samples = min_samples;
        self
    }

    /// Round trips shorter than this are not sampled (default 100 µs, as
    /// Netflix: answers from a local cache say nothing of the backend).
    pub fn min_rtt(mut self, min_rtt: Duration) -> Self {
        self.min_rtt = min_rtt;
        self
    }

    /// Callers over the limit wait up to `max_wait` for a slot, in a queue
    /// that gives each freed slot to one caller (first of the first
    /// partition first); then they are turned away. Default: turned away
    /// at once. Under a sustained overload the queue does not drain, and
    /// the callers it turns away have waited the whole `max_wait` first:
    /// shed traffic fails later than without a wait.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// The most callers waiting at once (default 1000); past it, callers
    /// are turned away at once.
    pub fn max_queued(mut self, max_queued: usize) -> Self {
        self.max_queued = max_queued;
        self
    }

    /// Reserves `share` of the limit for requests of partition `name`
    /// (Netflix's partitioned limiter): below the limit every request is
    /// admitted; once it is reached, a request is admitted only while its
    /// partition has fewer than `⌈limit × share⌉` in flight. Declare the
    /// most important first: waiting callers are also served in that
    /// order. Requests of no partition have no reserve: they are shed
    /// first.
    ///
    /// # Errors
    ///
    /// A share outside `[0, 1]` (`limit.partition`).
    pub fn partition(mut self, name: impl Into<Box<str>>, share: f64) -> Result<Self, ConfigError> {
        let share = check_f64("limit.partition", share, 0.0, 1.0)?;
        self.partitions.push((name.into(), share));
        Ok(self)
    }

    /// Seeds the jitter of the rejections' `retry_after`, for tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A window below 1 ms or `max` below `min` (`limit.window`), zero
    /// samples (`limit.min_samples`), shares adding up to more than 1 or a
    /// name used twice (`limit.partition`).
    pub fn build(self) -> Result<Limiter, ConfigError> {
        if self.min_window < Duration::from_millis(1) || self.max_window < self.min_window {
            return Err(ConfigError::new(
                "limit.window",
                format!(
                    "must be at least 1 ms, with max ≥ min (got {:?} and {:?})",
                    self.min_window, self.max_window
                ),
            ));
        }
        if self.min_samples == 0 {
            return Err(ConfigError::new("limit.min_samples", "must be at least 1"));
        }
        let total: f64 = self.partitions.iter().map(|(_, s)| s).sum();
        if total > 1.0 + 1e-9 {
            return Err(ConfigError::new(
                "limit.partition",
                format!("the shares add up to {total}, more than 1"),
            ));
        }
        for (i, (name, _)) in self.partitions.iter().enumerate() {
            if self.partitions[..i].iter().any(|(n, _)| n == name) {
                return Err(ConfigError::new(
                    "limit.partition",
                    format!("{name:?} is declared twice"),
                ));
            }
        }
        let lanes = self.partitions.len() + 1;
        let min_window = nanos(self.min_window);
        let shared = Shared {
            limit: AtomicU32::new(1),
            in_flight: AtomicU32::new(0),
            partitions: self
                .partitions
                .into_iter()
                .map(|(name, share)| Partition {
                    name,
                    share,
                    limit: AtomicU32::new(1),
                    busy: AtomicU32::new(0),
                })
                .collect(),
            window: Window {
                end: AtomicU64::new(min_window),
                rtt_min: AtomicU64::new(u64::MAX),
                rtt_sum: AtomicU64::new(0),
                count: AtomicU32::new(0),
                max_in_flight: AtomicU32::new(0),
                dropped: AtomicBool::new(false),
                min_time: min_window,
                max_time: nanos(self.max_window),
                min_samples: self.min_samples,
                min_rtt: nanos(self.min_rtt),
            },
            // Round trips read coarsely where that is a tenth of a window
            // (see `crate::clock`): each is off by up to the coarse step,
            // the window's average by less.
            clock: Clock::new(self.min_window),
            last_rtt: AtomicU64::new(0),
            max_wait: self.max_wait,
            max_queued: self.max_queued,
            queue: Mutex::new((0..lanes).map(|_| VecDeque::new()).collect()),
            queued: AtomicUsize::new(0),
            rng: RngSource::from_seed(self.seed),
            algorithm: Mutex::new(self.algorithm),
            counts: Counts::default(),
        };
        let initial = shared
            .algorithm
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .initial();
        shared.set_limit(initial);
        // The gauge from the start, also when the initial limit is 1.
        crate::telemetry::count::limit_changed(shared.limit.load(Ordering::Relaxed));
        Ok(Limiter {
            shared: Arc::new(shared),
        })
    }
}

impl fmt::Debug for LimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimiterBuilder")
            .field("min_window", &self.min_window)
            .field("max_window", &self.max_window)
            .field("min_samples", &self.min_samples)
            .field("max_wait", &self.max_wait)
            .field("max_queued", &self.max_queued)
            .finish_non_exhaustive()
    }
}

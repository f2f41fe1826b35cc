//! What the hedge layer decides: whether a request may be hedged at all,
//! when its next copy is due, and whether that copy is sent — a budget, a
//! gate, a deadline and the number of copies.

use std::any::type_name;
use std::fmt;
use std::time::Duration;

use super::latency::Latencies;
use crate::breaker::{Breaker, State};
use crate::budget::{BudgetDebug, NoBudget, RetryBudget, Withdrawal};
use crate::classify::{Outcome, RetryErrors};
use crate::error::{ConfigError, check_f64};
use crate::retry::{CloneRequest, CloneRequests};
use crate::rng::RngSource;
use crate::tally::Count;
use crate::throttle::Throttler;

/// Whether hedges may be sent now: asked just before each hedge.
///
/// Implemented for a [`Breaker`] (only while it is closed: a half-open
/// breaker admits a bounded number of probes, and a hedge would take a
/// probe's place), a [`Throttler`] (only while it rejects nothing: it is
/// shedding because the backend refuses work, and a hedge is more work),
/// [`Always`] (the default), closures `Fn() -> bool`, and pairs of gates
/// (both must agree).
pub trait HedgeGate {
    /// `true`: a hedge may be sent now.
    fn may_hedge(&self) -> bool;
}

/// The gate that always lets hedges through (the budget still applies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Always;

impl HedgeGate for Always {
    fn may_hedge(&self) -> bool {
        true
    }
}

impl HedgeGate for Breaker {
    fn may_hedge(&self) -> bool {
        self.state() == State::Closed
    }
}

impl HedgeGate for Throttler {
    fn may_hedge(&self) -> bool {
        self.probability() == 0.0
    }
}

impl<F: Fn() -> bool> HedgeGate for F {
    fn may_hedge(&self) -> bool {
        self()
    }
}

impl<A: HedgeGate, B: HedgeGate> HedgeGate for (A, B) {
    fn may_hedge(&self) -> bool {
        self.0.may_hedge() && self.1.may_hedge()
    }
}

/// What a policy's hedges did, counted since it was built (shared by its
/// clones and every layer built from it): [`HedgePolicy::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HedgeStats {
    /// Requests still unanswered when their first hedge was due.
    pub due: u64,
    /// Hedged copies sent.
    pub sent: u64,
    /// Due hedges not sent because the budget said no.
    pub denied_by_budget: u64,
    /// Due hedges not sent because the gate said no.
    pub denied_by_gate: u64,
    /// Due hedges not sent because the deadline in scope left too little time.
    pub denied_by_deadline: u64,
    /// Requests answered by a hedged copy rather than the original.
    pub won_by_hedge: u64,
}

/// The counters behind [`HedgeStats`]: touched only once a hedge is due.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) due: Count,
    pub(super) sent: Count,
    pub(super) budget: Count,
    pub(super) gate: Count,
    pub(super) deadline: Count,
    pub(super) won: Count,
}

/// Everything the [`Hedge`](super::Hedge) layer needs to decide: how many
/// copies, the latency estimate and its bounds, the jitter, the budget
/// `B`, the gate `G`, the classifier `C` (which result is a success) and
/// the request copier `R` (the retry layer's [`CloneRequest`]).
///
/// Clones share the latency estimate and the budget.
pub struct HedgePolicy<C = RetryErrors, R = CloneRequests, B = NoBudget, G = Always> {
    pub(super) max_copies: u32,
    pub(super) latencies: std::sync::Arc<Latencies>,
    pub(super) counters: std::sync::Arc<Counters>,
    pub(super) floor: Duration,
    pub(super) cap: Duration,
    pub(super) jitter: f64,
    pub(super) budget: Option<B>,
    /// Whether this layer deposits each request and books its outcome
    /// (`false`: a retry layer above does, into the same budget).
    pub(super) owns_budget: bool,
    pub(super) gate: G,
    pub(super) min_attempt_time: Duration,
    pub(super) classify: C,
    pub(super) clone: R,
    pub(super) rng: RngSource,
    settings: Settings,
}

/// The estimator's settings, for `Debug`.
#[derive(Debug, Clone, Copy)]
struct Settings {
    percentile: f64,
    window: Duration,
    min_samples: u64,
}

impl HedgePolicy {
    /// A builder with the defaults: 2 copies (the original and one
    /// hedge); the hedge due at the 95th percentile of the last 10 s of
    /// latencies (Dean and Barroso, "The Tail at Scale": deferring the
    /// hedge to the 95th percentile bounds the extra load to about 5%),
    /// once 20 latencies have been seen, never before 1 ms nor after
    /// 10 s, plus up to 20% of jitter; no budget; no gate; every `Ok`
    /// a success; requests copied with `Clone`.
    pub fn builder() -> HedgePolicyBuilder {
        HedgePolicyBuilder {
            max_copies: 2,
            percentile: 0.95,
            window: Duration::from_secs(10),
            min_samples: 20,
            floor: Duration::from_millis(1),
            cap: Duration::from_secs(10),
            jitter: 0.2,
            budget: None,
            owns_budget: true,
            gate: Always,
            min_attempt_time: Duration::ZERO,
            classify: RetryErrors,
            clone: CloneRequests,
            seed: None,
        }
    }
}

impl<C, R, B, G> HedgePolicy<C, R, B, G> {
    /// Copies per request, the original included.
    pub fn max_copies(&self) -> u32 {
        self.max_copies
    }

    /// The current latency estimate (the configured percentile of the last
    /// full window), before the floor, the cap and the jitter; `None`
    /// until a window with enough latencies has ended — no request is
    /// hedged until then. A window ends at the first latency recorded
    /// after its end (no timer runs): after a quiet period, the first
    /// request to finish rolls it, and the requests after it use the new
    /// estimate.
    pub fn estimate(&self) -> Option<Duration> {
        self.latencies.estimate()
    }

    /// What the hedges did so far.
    ///
    /// ```
    /// use dephase::hedge::HedgePolicy;
    ///
    /// let policy = HedgePolicy::builder().build()?;
    /// assert_eq!(policy.stats().sent, 0);
    /// # Ok::<(), dephase::ConfigError>(())
    /// ```
    pub fn stats(&self) -> HedgeStats {
        let c = &*self.counters;
        HedgeStats {
            due: c.due.get(),
            sent: c.sent.get(),
            denied_by_budget: c.budget.get(),
            denied_by_gate: c.gate.get(),
            denied_by_deadline: c.deadline.get(),
            won_by_hedge: c.won.get(),
        }
    }

    /// The shared budget, if any.
    pub fn budget(&self) -> Option<&B> {
        self.budget.as_ref()
    }

    /// The classifier.
    pub fn classifier(&self) -> &C {
        &self.classify
    }

    /// The delay before a hedge if one were due now, without its jitter:
    /// the estimate clamped to the floor and the cap. `None` while there is
    /// no estimate or hedging is off (one copy).
    #[inline]
    pub fn base_delay(&self) -> Option<Duration> {
        if self.max_copies < 2 {
            return None;
        }
        let estimate = self.latencies.estimate()?;
        Some(estimate.clamp(self.floor, self.cap))
    }

    /// This request's jitter on top of `base`: up to `jitter × base`.
    pub(super) fn jitter(&self, base: Duration) -> Duration {
        let spread = crate::clock::nanos(base.mul_f64(self.jitter));
        if spread == 0 {
            return Duration::ZERO;
        }
        let fraction = self.rng.draw();
        Duration::from_nanos(((u128::from(fraction) * u128::from(spread)) >> 64) as u64)
    }
}

/// Why a due hedge is not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The gate (a breaker not closed, a throttle shedding) said no.
    Gate,
    /// The deadline in scope leaves less than the minimum attempt time.
    Deadline,
    /// The request could not be copied (or its copy cannot be sent).
    NoCopy,
    /// The budget said no.
    Budget,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::Gate => "gate",
            Refusal::Deadline => "deadline",
            Refusal::NoCopy => "no_copy",
            Refusal::Budget => "budget",
        }
    }
}

impl<C, R, B: RetryBudget, G: HedgeGate> HedgePolicy<C, R, B, G> {
    /// A new request: the budget learns of it (if this layer owns it).
    #[inline]
    pub(crate) fn on_request(&self) {
        if let (Some(budget), true) = (&self.budget, self.owns_budget) {
            budget.deposit();
        }
    }

    /// A copy (the original or a hedge) answered with a result classified
    /// `outcome`; `last`: that result is the request's answer. Every copy's
    /// outcome is booked (gRFC A6: every failed attempt counts against the
    /// throttle, hedged or not) — except, with a shared budget, the answer
    /// itself, which the retry layer above books.
    pub(crate) fn book(&self, outcome: &Outcome, last: bool) {
        let Some(budget) = &self.budget else { return };
        if !self.owns_budget && last {
            return;
        }
        match outcome {
            Outcome::Success => budget.on_success(None),
            Outcome::Failure { .. } => budget.on_attempt_failure(false),
            Outcome::Retry { .. } => budget.on_attempt_failure(true),
        }
    }

    /// Decides whether a due hedge is sent; `copy` is what it would send,
    /// `remaining` the time the deadline in scope leaves. A hedge that may
    /// go has taken its withdrawal from the budget.
    pub(crate) fn admit<Req>(
        &self,
        copy: Option<&Req>,
        remaining: Option<Duration>,
    ) -> Result<Option<Withdrawal>, Refusal>
    where
        R: CloneRequest<Req>,
    {
        if !copy.is_some_and(|copy| self.clone.can_resend(copy)) {
            return Err(Refusal::NoCopy);
        }
        if remaining.is_some_and(|left| left.is_zero() || left < self.min_attempt_time) {
            return Err(Refusal::Deadline);
        }
        if !self.gate.may_hedge() {
            return Err(Refusal::Gate);
        }
        match &self.budget {
            None => Ok(None),
            Some(budget) => match budget.withdraw_for("hedge") {
                Some(withdrawal) => Ok(Some(withdrawal)),
                None => Err(Refusal::Budget),
            },
        }
    }
}

impl<C, R, B: RetryBudget, G> fmt::Debug for HedgePolicy<C, R, B, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgePolicy")
            .field("max_copies", &self.max_copies)
            .field("percentile", &self.settings.percentile)
            .field("window", &self.settings.window)
            .field("min_samples", &self.settings.min_samples)
            .field("estimate", &self.latencies.estimate())
            .field("floor", &self.floor)
            .field("cap", &self.cap)
            .field("jitter", &self.jitter)
            .field("budget", &self.budget.as_ref().map(BudgetDebug))
            .field("owns_budget", &self.owns_budget)
            .field("gate", &type_name::<G>())
            .field("min_attempt_time", &self.min_attempt_time)
            .field("classify", &type_name::<C>())
            .field("clone", &type_name::<R>())
            .finish()
    }
}

impl<C: Clone, R: Clone, B: Clone, G: Clone> Clone for HedgePolicy<C, R, B, G> {
    fn clone(&self) -> Self {
        HedgePolicy {
            max_copies: self.max_copies,
            latencies: std::sync::Arc::clone(&self.latencies),
            counters: std::sync::Arc::clone(&self.counters),
            floor: self.floor,
            cap: self.cap,
            jitter: self.jitter,
            budget: self.budget.clone(),
            owns_budget: self.owns_budget,
            gate: self.gate.clone(),
            min_attempt_time: self.min_attempt_time,
            classify: self.classify.clone(),
            clone: self.clone.clone(),
            rng: self.rng.clone(),
            settings: self.settings,
        }
    }
}

/// The longest hedge delay a policy accepts: a day.
const MAX_DELAY: Duration = Duration::from_secs(86_400);

/// Builds a [`HedgePolicy`]; [`build`](Self::build) checks the settings.
pub struct HedgePolicyBuilder<C = RetryErrors, R = CloneRequests, B = NoBudget, G = Always> {
    max_copies: u32,
    percentile: f64,
    window: Duration,
    min_samples: u64,
    floor: Duration,
    cap: Duration,
    jitter: f64,
    budget: Option<B>,
    owns_budget: bool,
    gate: G,
    min_attempt_time: Duration,
    classify: C,
    clone: R,
    seed: Option<u64>,
}

impl<C, R, B, G> HedgePolicyBuilder<C, R, B, G> {
    /// Copies per request, the original included (default 2; 1 turns
    /// hedging off). Each further copy is due one more hedge delay after
    /// the one before.
    pub fn max_copies(mut self, max_copies: u32) -> Self {
        self.max_copies = max_copies;
        self
    }

    /// The latency percentile after which a request is hedged, in
    /// `(0, 1]` (default 0.95).
    pub fn percentile(mut self, percentile: f64) -> Self {
        self.percentile = percentile;
        self
    }

    /// The trailing window the percentile is taken over (default 10 s).
    /// A window ends when a latency is recorded after it; with fewer than
    /// `min_samples` latencies it is carried over into the next one.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Latencies a window needs before its percentile is used (default
    /// 20). No request is hedged before the first such window has ended.
    pub fn min_samples(mut self, min_samples: u64) -> Self {
        self.min_samples = min_samples;
        self
    }

    /// The shortest hedge delay (default 1 ms): below it, hedges would
    /// only double the load of fast requests.
    pub fn floor(mut self, floor: Duration) -> Self {
        self.floor = floor;
        self
    }

    /// The longest hedge delay before jitter (default 10 s; at most a day).
    pub fn cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// Each request's hedge delay is the clamped estimate plus a uniform
    /// random extra of up to `jitter` times it (default 0.2; in `[0, 1]`),
    /// so that when a dependency slows down for everybody, the fleet's
    /// hedges do not all fire at the same instant.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Hedges draw from `budget` (one withdrawal each, given back if the
    /// hedge is never sent): no hedge when it says no. This layer deposits
    /// each request into it and books each answer's outcome — use
    /// [`shared_budget`](Self::shared_budget) instead when a
    /// [`Retry`](crate::retry::Retry) layer above does so with the same
    /// budget.
    pub fn budget<B2: RetryBudget + Clone>(self, budget: B2) -> HedgePolicyBuilder<C, R, B2, G> {
        self.with_budget(budget, true)
    }

    /// Hedges draw from `budget`, which a [`Retry`](crate::retry::Retry)
    /// layer *above* this one also holds: that layer deposits each request
    /// and books its outcomes, this one only withdraws (and refunds). A
    /// request and its hedges then count as one request, and hedges and
    /// retries come out of one pool.
    pub fn shared_budget<B2: RetryBudget + Clone>(
        self,
        budget: B2,
    ) -> HedgePolicyBuilder<C, R, B2, G> {
        self.with_budget(budget, false)
    }

    fn with_budget<B2>(self, budget: B2, owns_budget: bool) -> HedgePolicyBuilder<C, R, B2, G> {
        HedgePolicyBuilder {
            max_copies: self.max_copies,
            percentile: self.percentile,
            window: self.window,
            min_samples: self.min_samples,
            floor: self.floor,
            cap: self.cap,
            jitter: self.jitter,
            budget: Some(budget),
            owns_budget,
            gate: self.gate,
            min_attempt_time: self.min_attempt_time,
            classify: self.classify,
            clone: self.clone,
            seed: self.seed,
        }
    }

    /// Asked before each hedge (see [`HedgeGate`]): pass the [`Breaker`]
    /// or the [`Throttler`] of the layer below, so that no hedge is sent
    /// while the breaker probes or the throttle sheds.
    pub fn gate<G2: HedgeGate>(self, gate: G2) -> HedgePolicyBuilder<C, R, B, G2> {
        HedgePolicyBuilder {
            max_copies: self.max_copies,
            percentile: self.percentile,
            window: self.window,
            min_samples: self.min_samples,
            floor: self.floor,
            cap: self.cap,
            jitter: self.jitter,
            budget: self.budget,
            owns_budget: self.owns_budget,
            gate,
            min_attempt_time: self.min_attempt_time,
            classify: self.classify,
            clone: self.clone,
            seed: self.seed,
        }
    }

    /// No hedge is sent when the deadline in scope
    /// ([`Deadline::current`](crate::deadline::Deadline::current)) leaves
    /// less than `min` (default zero: not once it has passed).
    pub fn min_attempt_time(mut self, min: Duration) -> Self {
        self.min_attempt_time = min;
        self
    }

    /// What each copy's result means (default: every `Ok` a success, every
    /// error retryable). As in gRFC A6's hedging: the first copy to answer
    /// with a success answers the request; a result classified
    /// [`Outcome::Failure`] (fatal: another copy would not help) answers it
    /// at once too, cancelling the others; a retryable failure waits for
    /// the copies still in flight, and when every copy sent has answered
    /// so, the last one answers.
    pub fn classify<C2>(self, classify: C2) -> HedgePolicyBuilder<C2, R, B, G> {
        HedgePolicyBuilder {
            max_copies: self.max_copies,
            percentile: self.percentile,
            window: self.window,
            min_samples: self.min_samples,
            floor: self.floor,
            cap: self.cap,
            jitter: self.jitter,
            budget: self.budget,
            owns_budget: self.owns_budget,
            gate: self.gate,
            min_attempt_time: self.min_attempt_time,
            classify,
            clone: self.clone,
            seed: self.seed,
        }
    }

    /// Copies requests for hedges (default: [`Clone`]; for HTTP,
    /// [`IdempotentRequests`](crate::http::IdempotentRequests) — only
    /// idempotent requests are hedged).
    pub fn clone_requests<R2>(self, clone: R2) -> HedgePolicyBuilder<C, R2, B, G> {
        HedgePolicyBuilder {
            max_copies: self.max_copies,
            percentile: self.percentile,
            window: self.window,
            min_samples: self.min_samples,
            floor: self.floor,
            cap: self.cap,
            jitter: self.jitter,
            budget: self.budget,
            owns_budget: self.owns_budget,
            gate: self.gate,
            min_attempt_time: self.min_attempt_time,
            classify: self.classify,
            clone,
            seed: self.seed,
        }
    }

    /// Seeds the jitter, for reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// Zero copies (`hedge.max_copies`), a percentile outside `(0, 1]`
    /// (`hedge.percentile`), a zero window (`hedge.window`), zero samples
    /// (`hedge.min_samples`), a cap below the floor or above a day
    /// (`hedge.cap`), a jitter outside `[0, 1]` (`hedge.jitter`).
    pub fn build(self) -> Result<HedgePolicy<C, R, B, G>, ConfigError> {
        if self.max_copies == 0 {
            return Err(ConfigError::new(
                "hedge.max_copies",
                "must be at least 1 (the original counts)",
            ));
        }
        let percentile = check_f64("hedge.percentile", self.percentile, 0.0, 1.0)?;
        if percentile == 0.0 {
            return Err(ConfigError::new(
                "hedge.percentile",
                "must be greater than zero",
            ));
        }
        if self.window.is_zero() {
            return Err(ConfigError::new(
                "hedge.window",
                "must be greater than zero",
            ));
        }
        if self.min_samples == 0 {
            return Err(ConfigError::new("hedge.min_samples", "must be at least 1"));
        }
        if self.cap < self.floor {
            return Err(ConfigError::new(
                "hedge.cap",
                format!(
                    "must not be less than the floor ({:?} < {:?})",
                    self.cap, self.floor
                ),
            ));
        }
        if self.cap > MAX_DELAY {
            return Err(ConfigError::new(
                "hedge.cap",
                format!("must be at most a day (got {:?})", self.cap),
            ));
        }
        let jitter = check_f64("hedge.jitter", self.jitter, 0.0, 1.0)?;
        Ok(HedgePolicy {
            max_copies: self.max_copies,
            latencies: std::sync::Arc::new(Latencies::new(
                self.window,
                percentile,
                self.min_samples,
            )),
            counters: std::sync::Arc::default(),
            floor: self.floor,
            cap: self.cap,
            jitter,
            budget: self.budget,
            owns_budget: self.owns_budget,
            gate: self.gate,
            min_attempt_time: self.min_attempt_time,
            classify: self.classify,
            clone: self.clone,
            rng: RngSource::from_seed(self.seed),
            settings: Settings {
                percentile,
                window: self.window,
                min_samples: self.min_samples,
            },
        })
    }
}

impl<C, R, B: RetryBudget, G> fmt::Debug for HedgePolicyBuilder<C, R, B, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgePolicyBuilder")
            .field("max_copies", &self.max_copies)
            .field("percentile", &self.percentile)
            .field("window", &self.window)
            .field("min_samples", &self.min_samples)
            .field("floor", &self.floor)
            .field("cap", &self.cap)
            .field("jitter", &self.jitter)
            .field("budget", &self.budget.as_ref().map(BudgetDebug))
            .finish_non_exhaustive()
    }
}

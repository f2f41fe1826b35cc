//! A token bucket: failures and retries drain it, successes refill it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::sync::AtomicU64;

use super::pool::Counts;
use super::{BudgetStats, RetryBudget, Withdrawal};
use crate::error::{ConfigError, check_f64};

/// Tokens are counted in thousandths: exact for gRPC's `token_ratio`, which
/// gRFC A6 limits to three decimal places.
const MILLI: f64 = 1000.0;

/// The largest capacity accepted, in tokens.
const MAX_TOKENS: f64 = 1e12;

/// A retry budget in the form of a token bucket, shared by all its clones.
///
/// Starts full (or at `initial`). A retry is granted while the bucket holds
/// at least `retry_cost` tokens *and* more than `retry_threshold` (if set);
/// granting takes `retry_cost`. Every failed attempt takes `failure_cost`
/// (floored at zero). A successful attempt adds `success_reward` — or, when
/// `refund_retry_cost` is on and the attempt was a retry, gives that retry's
/// cost back instead. Nothing goes above the capacity.
///
/// The two published schemes are presets:
///
/// ```
/// use dephase::budget::{RetryBudget, TokenBucket};
///
/// // AWS SDK standard retry mode: 500 tokens, 5 per retry.
/// let aws = TokenBucket::aws_standard();
/// for _ in 0..100 {
///     let _spent = aws.withdraw().unwrap();
/// }
/// assert!(aws.withdraw().is_none());
///
/// // gRPC retry throttling (gRFC A6), maxTokens 10, tokenRatio 0.1.
/// let grpc = TokenBucket::grpc(10.0, 0.1)?;
/// for _ in 0..5 {
///     grpc.on_failure(); // 10 → 5 tokens
/// }
/// assert!(grpc.withdraw().is_none()); // no retries at or below half
/// grpc.on_success(None); // 5.1
/// assert!(grpc.withdraw().is_some());
/// # Ok::<(), dephase::ConfigError>(())
/// ```
///
/// Every operation is one atomic read-modify-write; no locks.
#[derive(Clone)]
pub struct TokenBucket {
    inner: Arc<Inner>,
}

struct Inner {
    /// Current tokens, in thousandths.
    tokens: AtomicU64,
    capacity: u64,
    retry_cost: u64,
    /// What a retry of a timed-out attempt costs.
    timeout_cost: u64,
    failure_cost: u64,
    /// Only failures that may be retried cost `failure_cost` (gRFC A6).
    retryable_failures_only: bool,
    success_reward: u64,
    refund_retry_cost: bool,
    threshold: Option<u64>,
    counts: Counts,
}

impl TokenBucket {
    /// A builder: capacity 500, retry cost 5, failure cost 0, success reward
    /// 1, refund on — the AWS standard mode.
    pub fn builder() -> TokenBucketBuilder {
        TokenBucketBuilder::default()
    }

    /// The AWS SDK standard retry mode quota: 500 tokens, 5 per retry (10
    /// for a retry of an attempt that timed out), the cost refunded when the
    /// retried call succeeds, 1 token back for each success that needed no
    /// retry.
    pub fn aws_standard() -> TokenBucket {
        TokenBucket::builder()
            .timeout_cost(10.0)
            .build()
            .expect("the AWS standard settings are valid")
    }

    /// gRPC retry throttling (gRFC A6): the bucket starts at `max_tokens`;
    /// every failed attempt that may be retried costs 1 token (A6 counts as
    /// failures only the calls that fail with a retryable status, or whose
    /// server pushed back; a failure the client would not retry costs
    /// nothing), every success adds `token_ratio`, and retries are refused
    /// while the bucket holds `max_tokens / 2` or less.
    ///
    /// `max_tokens` and `token_ratio` are kept to three decimals, as A6
    /// specifies; below one token of capacity, a single failure empties
    /// the bucket.
    ///
    /// # Errors
    ///
    /// `max_tokens` not in `(0, 1000]` or zero at three decimals
    /// (`budget.max_tokens`, gRFC A6's range) or `token_ratio` not positive
    /// and finite (`budget.token_ratio`).
    pub fn grpc(max_tokens: f64, token_ratio: f64) -> Result<TokenBucket, ConfigError> {
        // A6 keeps three decimals: so do the thousandths this bucket counts in.
        if !(max_tokens > 0.0 && max_tokens <= 1000.0) || milli(max_tokens) == 0 {
            return Err(ConfigError::new(
                "budget.max_tokens",
                format!("must be in (0, 1000], with up to three decimals (got {max_tokens})"),
            ));
        }
        if !(token_ratio.is_finite() && token_ratio > 0.0) {
            return Err(ConfigError::new(
                "budget.token_ratio",
                format!("must be positive and finite (got {token_ratio})"),
            ));
        }
        // "token_count > max_tokens / 2", exactly, in whole thousandths:
        // t > m/2 holds for an integer t exactly when t > ⌊m/2⌋.
        let half = (milli(max_tokens) / 2) as f64 / MILLI;
        TokenBucket::builder()
            .capacity(max_tokens)
            .retry_cost(0.0)
            // Each failure takes one token, and the bucket never goes below
            // zero: below one token of capacity that empties it.
            .failure_cost(1.0)
            .success_reward(token_ratio.min(max_tokens))
            .refund_retry_cost(false)
            .retryable_failures_only(true)
            .retry_threshold(half)
            .build()
    }

    /// The tokens in the bucket now (no trait to import).
    pub fn balance(&self) -> f64 {
        self.inner.tokens.load(Ordering::Relaxed) as f64 / MILLI
    }

    /// The capacity, in tokens.
    pub fn capacity(&self) -> f64 {
        self.inner.capacity as f64 / MILLI
    }

    /// Retries granted, refused and given back so far, and the tokens now.
    ///
    /// ```
    /// use dephase::budget::{RetryBudget, TokenBucket};
    ///
    /// let bucket = TokenBucket::builder().capacity(10.0).retry_cost(5.0).build()?;
    /// let _first = bucket.withdraw();
    /// let _second = bucket.withdraw();
    /// assert!(bucket.withdraw().is_none());
    /// let stats = bucket.stats();
    /// assert_eq!((stats.granted, stats.denied, stats.balance), (2, 1, 0.0));
    /// # Ok::<(), dephase::ConfigError>(())
    /// ```
    pub fn stats(&self) -> BudgetStats {
        self.inner.counts.stats(self.balance())
    }

    fn add(&self, amount: u64) {
        if amount == 0 {
            return;
        }
        let capacity = self.inner.capacity;
        let _ = self
            .inner
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(amount).min(capacity))
            });
    }
}

impl RetryBudget for TokenBucket {
    fn withdraw(&self) -> Option<Withdrawal> {
        self.inner
            .counts
            .withdrawn(self.take(self.inner.retry_cost))
    }

    fn withdraw_for(&self, reason: &'static str) -> Option<Withdrawal> {
        let inner = &*self.inner;
        inner.counts.withdrawn(self.take(if reason == "timeout" {
            inner.timeout_cost
        } else {
            inner.retry_cost
        }))
    }

    fn refund(&self, withdrawal: Withdrawal) {
        self.inner.counts.refunded();
        self.add(withdrawal.units());
    }

    fn on_success(&self, retry: Option<Withdrawal>) {
        match retry {
            Some(w) if self.inner.refund_retry_cost => self.add(w.units()),
            _ => self.add(self.inner.success_reward),
        }
    }

    fn on_failure(&self) {
        let cost = self.inner.failure_cost;
        if cost == 0 {
            return;
        }
        let _ = self
            .inner
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(cost))
            });
    }

    fn on_attempt_failure(&self, retryable: bool) {
        if retryable || !self.inner.retryable_failures_only {
            self.on_failure();
        }
    }

    fn balance(&self) -> f64 {
        TokenBucket::balance(self)
    }
}

impl TokenBucket {
    /// Takes `cost` if the bucket holds it and is above its threshold.
    fn take(&self, cost: u64) -> Option<Withdrawal> {
        let inner = &*self.inner;
        inner
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                let above_threshold = inner.threshold.is_none_or(|floor| t > floor);
                (t >= cost && above_threshold).then(|| t - cost)
            })
            .ok()
            .map(|_| Withdrawal::new(cost, 0))
    }
}

impl fmt::Debug for TokenBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &*self.inner;
        f.debug_struct("TokenBucket")
            .field("tokens", &self.balance())
            .field("capacity", &(i.capacity as f64 / MILLI))
            .field("retry_cost", &(i.retry_cost as f64 / MILLI))
            .field("failure_cost", &(i.failure_cost as f64 / MILLI))
            .field("success_reward", &(i.success_reward as f64 / MILLI))
            .field("refund_retry_cost", &i.refund_retry_cost)
            .field("retry_threshold", &i.threshold.map(|t| t as f64 / MILLI))
            .finish()
    }
}

/// Builds a [`TokenBucket`]. Amounts are in tokens and kept to a
/// thousandth of a token.
#[derive(Debug, Clone)]
pub struct TokenBucketBuilder {
    capacity: f64,
    initial: Option<f64>,
    retry_cost: f64,
    timeout_cost: Option<f64>,
    failure_cost: f64,
    retryable_failures_only: bool,
    success_reward: f64,
    refund_retry_cost: bool,
    threshold: Option<f64>,
}

impl Default for TokenBucketBuilder {
    fn default() -> Self {
        TokenBucketBuilder {
            capacity: 500.0,
            initial: None,
            retry_cost: 5.0,
            timeout_cost: None,
            failure_cost: 0.0,
            retryable_failures_only: false,
            success_reward: 1.0,
            refund_retry_cost: true,
            threshold: None,
        }
    }
}

impl TokenBucketBuilder {
    /// The most tokens the bucket holds. Positive, at most 10¹².
    pub fn capacity(mut self, tokens: f64) -> Self {
        self.capacity = tokens;
        self
    }

    /// Tokens at the start (default: full).
    pub fn initial(mut self, tokens: f64) -> Self {
        self.initial = Some(tokens);
        self
    }

    /// Tokens taken by each granted retry.
    pub fn retry_cost(mut self, tokens: f64) -> Self {
        self.retry_cost = tokens;
        self
    }

    /// Tokens taken by a granted retry of an attempt that timed out (the
    /// classifier's reason `"timeout"`; default: the retry cost). AWS's
    /// standard mode charges 10 where a retry costs 5.
    pub fn timeout_cost(mut self, tokens: f64) -> Self {
        self.timeout_cost = Some(tokens);
        self
    }

    /// Whether only failures that may be retried cost `failure_cost`
    /// (default: every failure). gRPC's retry throttling (gRFC A6) counts
    /// only retryable failures: a failure the client will not retry says
    /// nothing about the server's load.
    pub fn retryable_failures_only(mut self, only: bool) -> Self {
        self.retryable_failures_only = only;
        self
    }

    /// Tokens taken by each failed attempt (at most 10¹²; more than the
    /// capacity empties the bucket).
    pub fn failure_cost(mut self, tokens: f64) -> Self {
        self.failure_cost = tokens;
        self
    }

    /// Tokens added by each successful attempt (unless its retry cost is refunded instead).
    pub fn success_reward(mut self, tokens: f64) -> Self {
        self.success_reward = tokens;
        self
    }

    /// Whether a retry that succeeds gives its cost back (AWS: yes).
    pub fn refund_retry_cost(mut self, refund: bool) -> Self {
        self.refund_retry_cost = refund;
        self
    }

    /// Refuses retries while the bucket holds this many tokens or fewer (gRPC: half).
    pub fn retry_threshold(mut self, tokens: f64) -> Self {
        self.threshold = Some(tokens);
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: a capacity that is not positive
    /// and finite or exceeds 10¹² (`budget.capacity`), any other amount that
    /// is NaN, infinite, negative or above the capacity (`budget.initial`,
    /// `budget.retry_cost`, `budget.success_reward`; `budget.failure_cost`
    /// may exceed the capacity, not 10¹²),
    /// or a threshold not below the capacity (`budget.retry_threshold`).
    pub fn build(self) -> Result<TokenBucket, ConfigError> {
        let capacity = check_f64("budget.capacity", self.capacity, 0.0, MAX_TOKENS)?;
        if capacity == 0.0 {
            return Err(ConfigError::new(
                "budget.capacity",
                "must be greater than zero",
            ));
        }
        let amount = |field, value| check_f64(field, value, 0.0, capacity).map(milli);
        let initial = amount("budget.initial", self.initial.unwrap_or(capacity))?;
        let retry_cost = amount("budget.retry_cost", self.retry_cost)?;
        let timeout_cost = match self.timeout_cost {
            Some(cost) => amount("budget.timeout_cost", cost)?,
            None => retry_cost,
        };
        // A failure may cost more than the bucket holds: it empties it.
        let failure_cost =
            check_f64("budget.failure_cost", self.failure_cost, 0.0, MAX_TOKENS).map(milli)?;
        let success_reward = amount("budget.success_reward", self.success_reward)?;
        let threshold = match self.threshold {
            None => None,
            Some(t) => {
                let t = check_f64("budget.retry_threshold", t, 0.0, capacity)?;
                if t >= capacity {
                    return Err(ConfigError::new(
                        "budget.retry_threshold",
                        format!("must be below the capacity (threshold {t}, capacity {capacity})"),
                    ));
                }
                Some(milli(t))
            }
        };
        Ok(TokenBucket {
            inner: Arc::new(Inner {
                tokens: AtomicU64::new(initial),
                capacity: milli(capacity),
                retry_cost,
                timeout_cost,
                failure_cost,
                retryable_failures_only: self.retryable_failures_only,
                success_reward,
                refund_retry_cost: self.refund_retry_cost,
                threshold,
                counts: Counts::default(),
            }),
        })
    }
}

fn milli(tokens: f64) -> u64 {
    (tokens * MILLI).round() as u64
}

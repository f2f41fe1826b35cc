//! A fraction of recent requests, plus a floor per second.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{RetryBudget, Withdrawal};
use crate::error::{ConfigError, check_f64};
use crate::window::Window;

/// One retry, in the budget's internal unit. A deposit is worth
/// `ratio · UNIT`, so any ratio with six decimals is exact.
const UNIT: i64 = 1_000_000;

/// The window is kept as this many time slots (a power of two, so the slot
/// of a generation is a mask, not a division).
const SLOTS: usize = 16;

/// A retry budget of "`ratio` of the requests of the last `ttl`, plus
/// `min_per_sec` retries per second", shared by all its clones.
///
/// This is Finagle's `RetryBudget` (and tower's `TpsBudget`): each request
/// deposits `ratio` of a retry, each retry withdraws one, and a reserve of
/// `min_per_sec · ttl` retries is always there so that low-traffic clients
/// can still retry. Deposits and withdrawals count for one `ttl`: the window
/// is kept in 16 slots of `ttl / 16`, so an entry expires between
/// `15/16 · ttl` and `ttl` after it was made.
///
/// The arithmetic is exact to a millionth of a retry: with `ratio = 0.6`,
/// 5 requests allow exactly 3 retries (tower's `TpsBudget` rounds the cost of
/// a retry down to one deposit and allows 5: tower#857).
///
/// ```
/// use dephase::budget::{RatioBudget, RetryBudget};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), dephase::ConfigError> {
/// let budget = RatioBudget::builder().min_per_sec(0).ratio(0.6).build()?;
/// for _ in 0..5 {
///     budget.deposit();
/// }
/// let granted = std::iter::from_fn(|| budget.withdraw()).count();
/// assert_eq!(granted, 3);
/// # Ok(()) }
/// ```
///
/// A deposit is one read of tokio's clock (so paused-time tests move the
/// window) and one atomic add; a withdrawal is a clock read, an atomic
/// subtraction and a sum of the ten slots. No locks, and concurrent callers
/// can never overdraw the budget (a withdrawal that would is given back).
///
/// The [`balance`](RetryBudget::balance) can be negative for a while:
/// withdrawals outlive the deposits that paid for them when they were made
/// later in the window.
#[derive(Clone)]
pub struct RatioBudget {
    inner: Arc<Inner>,
}

struct Inner {
    /// Deposits (positive) and withdrawals (negative), in `UNIT`s of a retry.
    window: Window,
    deposit: i64,
    /// Always there: `min_per_sec · ttl` retries.
    reserve: i64,
    ttl: Duration,
    min_per_sec: u32,
    ratio: f64,
}

impl RatioBudget {
    /// A builder with Finagle's defaults: ttl 10 s, 10 retries per second, 20%.
    pub fn builder() -> RatioBudgetBuilder {
        RatioBudgetBuilder::default()
    }

    /// The reserve plus every live slot.
    fn available(&self) -> i64 {
        self.inner
            .reserve
            .saturating_add(self.inner.window.sum_signed())
    }
}

impl RetryBudget for RatioBudget {
    fn deposit(&self) {
        if self.inner.deposit != 0 {
            let window = &self.inner.window;
            window.add(window.now(), self.inner.deposit as u64);
        }
    }

    fn withdraw(&self) -> Option<Withdrawal> {
        // Take first, then check: if the balance (which now includes every
        // withdrawal made before ours) went below zero, give it back. Two
        // racing callers may both give back when only one could have had
        // it, but they can never both keep it: whichever reads the balance
        // last sees both withdrawals. No overdraw, no lock.
        let window = &self.inner.window;
        let now = window.now();
        window.add(now, UNIT.wrapping_neg() as u64);
        if self.available() >= 0 {
            Some(Withdrawal::new(UNIT as u64, now))
        } else {
            window.add(now, UNIT as u64);
            None
        }
    }

    fn refund(&self, withdrawal: Withdrawal) {
        // Put it back into the slot it was taken from, unless that slot has
        // expired since: then the withdrawal no longer counts anyway.
        let window = &self.inner.window;
        if window.is_live(withdrawal.stamp(), window.now()) {
            window.add(withdrawal.stamp(), withdrawal.units());
        }
    }

    fn balance(&self) -> f64 {
        self.inner.window.now();
        self.available() as f64 / UNIT as f64
    }
}

impl fmt::Debug for RatioBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RatioBudget")
            .field("balance", &self.balance())
            .field("ttl", &self.inner.ttl)
            .field("min_per_sec", &self.inner.min_per_sec)
            .field("ratio", &self.inner.ratio)
            .finish()
    }
}

/// Builds a [`RatioBudget`].
#[derive(Debug, Clone)]
pub struct RatioBudgetBuilder {
    ttl: Duration,
    min_per_sec: u32,
    ratio: f64,
}

impl Default for RatioBudgetBuilder {
    fn default() -> Self {
        RatioBudgetBuilder {
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            ratio: 0.2,
        }
    }
}

impl RatioBudgetBuilder {
    /// How long deposits and withdrawals count: 1 to 60 seconds (Finagle's range).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Retries per second that are always allowed, whatever the traffic.
    pub fn min_per_sec(mut self, min_per_sec: u32) -> Self {
        self.min_per_sec = min_per_sec;
        self
    }

    /// The fraction of requests that may be retried: 0.2 is 20%; from 0 to
    /// 10 (1000%, Finagle's limit).
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A ttl outside 1–60 s (`budget.ttl`) or a ratio that is NaN,
    /// infinite or outside `[0, 10]` (`budget.ratio`).
    pub fn build(self) -> Result<RatioBudget, ConfigError> {
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "budget.ttl",
                format!("must be between 1 s and 60 s (got {:?})", self.ttl),
            ));
        }
        let ratio = check_f64("budget.ratio", self.ratio, 0.0, 10.0)?;
        let reserve = i128::from(self.min_per_sec) * self.ttl.as_nanos() as i128 * i128::from(UNIT)
            / 1_000_000_000;
        Ok(RatioBudget {
            inner: Arc::new(Inner {
                window: Window::new(self.ttl, SLOTS),
                deposit: (ratio * UNIT as f64).round() as i64,
                reserve: i64::try_from(reserve).unwrap_or(i64::MAX),
                ttl: self.ttl,
                min_per_sec: self.min_per_sec,
                ratio,
            }),
        })
    }
}

//! A fraction of recent requests, plus a floor per second.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::pool::Counts;
use super::{BudgetStats, RetryBudget, Withdrawal};
use crate::error::{ConfigError, check_f64};
use crate::window::{Window, pair};

/// The window is kept as this many time slots (a power of two, so the slot
/// of a generation is a mask, not a division).
const SLOTS: usize = 16;

/// A ratio is kept to this many decimal places.
const DECIMALS: usize = 12;

/// A retry budget of "`ratio` of the requests of the last `ttl`, plus
/// `min_per_sec` retries per second", shared by all its clones.
///
/// This is Finagle's `RetryBudget`: each request
/// deposits `ratio` of a retry, each retry withdraws one, and a reserve of
/// `min_per_sec · ttl` retries is always there so that low-traffic clients
/// can still retry. Deposits and withdrawals count for one `ttl`: the window
/// is kept in 16 slots of `ttl / 16`, so an entry expires between
/// `15/16 · ttl` and `ttl` after it was made.
///
/// The arithmetic is exact: requests and retries are counted, and a retry
/// is granted while `retries ≤ ⌊ratio · requests + reserve⌋` (`retries`
/// counting the one asked for), compared in integers with the ratio as
/// the decimal you wrote (kept to twelve decimal places). With
/// `ratio = 0.6`, 5 requests allow exactly 3 retries (the third is
/// granted, the fourth is not); with `ratio = 4e-7`, 2.5 million requests
/// allow exactly one. No runtime is needed: outside one, the budget reads
/// the system's monotonic clock.
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
/// A deposit is one read of the clock and one atomic add; a withdrawal is
/// a clock read, an atomic add and a sum of the window's sixteen slots
/// (each holds both counts).
/// No locks, and concurrent callers can never overdraw the budget (a
/// withdrawal that would is given back). The clock is tokio's (so
/// paused-time tests move the window), read on Linux from the kernel's
/// coarse clock when the budget is made in a multi-thread runtime (whose
/// clock cannot be paused) and the coarse clock's step is at most a tenth
/// of a slot (`ttl / 16`; 4 ms on a common kernel, against a slot of
/// 62.5 ms or more): an entry made within a step after a slot boundary
/// may then count in the slot before, and so expire up to a step early.
///
/// The [`balance`](RetryBudget::balance) can be negative for a while:
/// withdrawals outlive the deposits that paid for them when they were made
/// later in the window.
#[derive(Clone)]
pub struct RatioBudget {
    inner: Arc<Inner>,
}

struct Inner {
    /// Requests (deposits) in the low 32 bits of each slot, retries
    /// (withdrawals, less refunds) in the high 32 bits: one reading of the
    /// clock and one sum of 16 slots serve both. A slot's requests cannot
    /// carry into its retries: 2³² deposits within one slot (at most
    /// 3.75 s) would take more than a billion atomic adds per second on
    /// one cache line, which no machine does.
    window: Window,
    /// The ratio, `ratio_num / ratio_den` (the decimal as written).
    ratio_num: u128,
    ratio_den: u128,
    /// The reserve, `min_per_sec · ttl`, as `reserve_num / reserve_den` retries.
    reserve_num: u128,
    reserve_den: u128,
    /// `within`'s constants, computed once (exact: each is below 2¹¹⁰).
    per_request: u128,
    reserve_term: u128,
    den: u128,
    /// `per_request` and `den` when both fit in 64 bits (the common
    /// case): `within` then multiplies 64-bit numbers into 128 bits, which
    /// cannot overflow, instead of saturating 128-bit products.
    narrow: Option<(u64, u64)>,
    ttl: Duration,
    min_per_sec: u32,
    ratio: f64,
    counts: Counts,
}

/// One retry, as added to a slot (the high half).
const RETRY: u64 = pair(1, 0);

impl RatioBudget {
    /// A builder with Finagle's defaults: ttl 10 s, 10 retries per second, 20%.
    pub fn builder() -> RatioBudgetBuilder {
        RatioBudgetBuilder::default()
    }

    /// `(requests, retries)` in the window now (a negative count of
    /// retries counts as zero: a refund that races its slot being cleared
    /// takes one from the slot's next generation, which then counts one
    /// retry less until it expires — as with the two windows before).
    #[inline]
    fn counts(&self) -> (u64, u64) {
        let (retries, requests) = self.inner.window.sum_pairs_signed_high();
        (requests, u64::try_from(retries).unwrap_or(0))
    }

    /// Whether `retries ≤ ratio · requests + reserve`, exactly:
    /// `retries · rd · vd ≤ rn · requests · vd + vn · rd`.
    #[inline]
    fn within(&self, requests: u64, retries: u64) -> bool {
        let i = &*self.inner;
        if let Some((per_request, den)) = i.narrow {
            // The counts are sums of sixteen 32-bit halves (below 2³⁶):
            // each product is below 2¹⁰⁰ and `reserve_term` below 2¹¹⁰,
            // so nothing overflows.
            let allowed = u128::from(per_request) * u128::from(requests) + i.reserve_term;
            return u128::from(retries) * u128::from(den) <= allowed;
        }
        let allowed = i
            .per_request
            .saturating_mul(u128::from(requests))
            .saturating_add(i.reserve_term);
        u128::from(retries).saturating_mul(i.den) <= allowed
    }
}

impl RetryBudget for RatioBudget {
    fn deposit(&self) {
        if self.inner.ratio_num != 0 {
            let window = &self.inner.window;
            window.add(window.now(), 1);
        }
    }

    fn withdraw(&self) -> Option<Withdrawal> {
        // Take first, then check: if the count (which now includes every
        // withdrawal made before ours) is over the budget, give it back. Two
        // racing callers may both give back when only one could have had
        // it, but they can never both keep it: whichever reads the counts
        // last sees both withdrawals. No overdraw, no lock.
        let window = &self.inner.window;
        let now = window.now();
        window.add(now, RETRY);
        let (requests, taken) = self.counts();
        let withdrawal = if self.within(requests, taken) {
            Some(Withdrawal::new(1, now))
        } else {
            window.add(now, RETRY.wrapping_neg());
            None
        };
        self.inner.counts.withdrawn(withdrawal)
    }

    fn refund(&self, withdrawal: Withdrawal) {
        // Take it back from the slot it was counted in, unless that slot
        // has expired since: then the withdrawal no longer counts anyway.
        let window = &self.inner.window;
        self.inner.counts.refunded();
        if window.is_live(withdrawal.stamp(), window.now()) {
            let retries = withdrawal.units().min(u64::from(u32::MAX)) << 32;
            window.add(withdrawal.stamp(), retries.wrapping_neg());
        }
    }

    fn balance(&self) -> f64 {
        RatioBudget::balance(self)
    }
}

impl RatioBudget {
    /// How many retries could be withdrawn now (no trait to import).
    pub fn balance(&self) -> f64 {
        let i = &*self.inner;
        i.window.now();
        let (requests, retries) = self.counts();
        let share = (i.ratio_num as f64) * (requests as f64) / (i.ratio_den as f64);
        let reserve = i.reserve_num as f64 / i.reserve_den as f64;
        share + reserve - retries as f64
    }

    /// Retries granted, refused and given back so far, and the balance.
    ///
    /// ```
    /// use dephase::budget::{RatioBudget, RetryBudget};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), dephase::ConfigError> {
    /// let budget = RatioBudget::builder().min_per_sec(0).ratio(0.5).build()?;
    /// budget.deposit();
    /// budget.deposit();
    /// let _granted = budget.withdraw();
    /// assert!(budget.withdraw().is_none());
    /// let stats = budget.stats();
    /// assert_eq!((stats.granted, stats.denied, stats.balance), (1, 1, 0.0));
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> BudgetStats {
        self.inner.counts.stats(self.balance())
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
    /// 1000 (Finagle's range), kept to twelve decimal places.
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A ttl outside 1–60 s (`budget.ttl`) or a ratio that is NaN,
    /// infinite, outside `[0, 1000]`, or positive but below 10⁻¹² (zero at
    /// twelve decimal places) (`budget.ratio`).
    pub fn build(self) -> Result<RatioBudget, ConfigError> {
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "budget.ttl",
                format!("must be between 1 s and 60 s (got {:?})", self.ttl),
            ));
        }
        let ratio = check_f64("budget.ratio", self.ratio, 0.0, 1000.0)?;
        let (ratio_num, ratio_den) = decimal(ratio, DECIMALS);
        if ratio > 0.0 && ratio_num == 0 {
            return Err(ConfigError::new(
                "budget.ratio",
                format!("must be 0 or at least 1e-12 (got {ratio})"),
            ));
        }
        // min_per_sec · ttl, with the ttl in nanoseconds over 10⁹.
        let (reserve_num, reserve_den) = reduce(
            u128::from(self.min_per_sec) * self.ttl.as_nanos(),
            1_000_000_000,
        );
        let (per_request, den) = (ratio_num * reserve_den, ratio_den * reserve_den);
        Ok(RatioBudget {
            inner: Arc::new(Inner {
                window: Window::new(self.ttl, SLOTS),
                ratio_num,
                ratio_den,
                reserve_num,
                reserve_den,
                per_request,
                reserve_term: reserve_num * ratio_den,
                den,
                narrow: u64::try_from(per_request).ok().zip(u64::try_from(den).ok()),
                ttl: self.ttl,
                min_per_sec: self.min_per_sec,
                ratio,
                counts: Counts::default(),
            }),
        })
    }
}

/// `value` as the fraction `num / den` of the decimal that prints it (the
/// shortest that reads back as `value`), rounded to `decimals` places.
fn decimal(value: f64, decimals: usize) -> (u128, u128) {
    let text = format!("{value}");
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let kept = &fraction[..fraction.len().min(decimals)];
    let digits = |s: &str| s.bytes().fold(0u128, |n, d| n * 10 + u128::from(d - b'0'));
    let mut num = digits(whole) * 10u128.pow(kept.len() as u32) + digits(kept);
    if fraction
        .as_bytes()
        .get(decimals)
        .is_some_and(|&d| d >= b'5')
    {
        num += 1; // rounded half up at the last kept place
    }
    reduce(num, 10u128.pow(kept.len() as u32))
}

/// `num / den` in lowest terms.
fn reduce(num: u128, den: u128) -> (u128, u128) {
    let (mut a, mut b) = (num, den);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    match a {
        0 => (0, 1),
        gcd => (num / gcd, den / gcd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_the_decimals_they_print_as() {
        assert_eq!(decimal(0.2, DECIMALS), (1, 5));
        assert_eq!(decimal(4e-7, DECIMALS), (1, 2_500_000));
        assert_eq!(decimal(1.5e-6, DECIMALS), (3, 2_000_000));
        assert_eq!(decimal(1000.0, DECIMALS), (1000, 1));
        assert_eq!(decimal(12.5, DECIMALS), (25, 2));
        assert_eq!(decimal(0.0, DECIMALS), (0, 1));
        // 1/3 = 0.3333333333333333, kept to twelve places
        assert_eq!(
            decimal(1.0 / 3.0, DECIMALS),
            (333_333_333_333, 1_000_000_000_000)
        );
        assert_eq!(
            decimal(2.0 / 3.0, DECIMALS),
            (666_666_666_667, 1_000_000_000_000)
        );
        assert_eq!(decimal(1e-13, DECIMALS), (0, 1));
    }
}

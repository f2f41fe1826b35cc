//! The [`RetryBudget`] trait every budget implements, the [`Withdrawal`]
//! receipt, [`NoBudget`], and the budgets' [`BudgetStats`].

use std::fmt;
use std::sync::Arc;

use crate::tally::Lanes;

/// A pool of retries shared by every holder of a clone.
///
/// The [`Retry`](crate::retry::Retry) layer calls, per request:
/// [`deposit`](Self::deposit) once before the first attempt; after each
/// attempt [`on_success`](Self::on_success) or [`on_failure`](Self::on_failure);
/// before each retry [`withdraw`](Self::withdraw), and
/// [`refund`](Self::refund) if the withdrawn retry is then never sent (the
/// caller went away during the backoff).
///
/// Implementations must be safe to call from many threads at once and must
/// never grant more than they hold.
pub trait RetryBudget: Send + Sync {
    /// A new request (not a retry) is being sent.
    fn deposit(&self) {}

    /// Asks for the right to send one retry; `None` means no.
    fn withdraw(&self) -> Option<Withdrawal>;

    /// Asks for the right to send one retry of an attempt that failed for
    /// `reason` (the classifier's: `"timeout"`, `"unavailable"`...). The
    /// same as [`withdraw`](Self::withdraw) by default; the AWS token bucket
    /// charges a timeout more.
    fn withdraw_for(&self, reason: &'static str) -> Option<Withdrawal> {
        let _ = reason;
        self.withdraw()
    }

    /// Gives back a withdrawal whose retry was never sent.
    fn refund(&self, withdrawal: Withdrawal);

    /// An attempt succeeded. `retry` is the withdrawal that paid for it when
    /// the attempt was a retry.
    fn on_success(&self, retry: Option<Withdrawal>) {
        let _ = retry;
    }

    /// An attempt failed.
    fn on_failure(&self) {}

    /// An attempt failed; `retryable`: the classifier said another attempt
    /// may help. The same as [`on_failure`](Self::on_failure) by default;
    /// gRPC's bucket (gRFC A6) counts only the retryable ones.
    fn on_attempt_failure(&self, retryable: bool) {
        let _ = retryable;
        self.on_failure();
    }

    /// How many retries could be withdrawn now (tokens, for a [`TokenBucket`](super::TokenBucket)).
    fn balance(&self) -> f64;
}

macro_rules! forward_budget {
    ($($pointer:ident),*) => {$(
        impl<B: RetryBudget + ?Sized> RetryBudget for $pointer<B> {
            fn deposit(&self) {
                (**self).deposit();
            }
            fn withdraw(&self) -> Option<Withdrawal> {
                (**self).withdraw()
            }
            fn withdraw_for(&self, reason: &'static str) -> Option<Withdrawal> {
                (**self).withdraw_for(reason)
            }
            fn refund(&self, withdrawal: Withdrawal) {
                (**self).refund(withdrawal);
            }
            fn on_success(&self, retry: Option<Withdrawal>) {
                (**self).on_success(retry);
            }
            fn on_failure(&self) {
                (**self).on_failure();
            }
            fn on_attempt_failure(&self, retryable: bool) {
                (**self).on_attempt_failure(retryable);
            }
            fn balance(&self) -> f64 {
                (**self).balance()
            }
        }
    )*};
}

forward_budget!(Arc, Box);

/// The receipt for one granted retry: what it cost, and when it was taken.
///
/// It is neither `Clone` nor `Copy`: a withdrawal is spent once, either by
/// sending the retry or by handing it back with [`RetryBudget::refund`].
#[must_use = "a withdrawal whose retry is not sent must be refunded"]
#[derive(Debug, PartialEq, Eq)]
pub struct Withdrawal {
    units: u64,
    stamp: u64,
}

impl Withdrawal {
    /// A receipt for `units` of a budget's own unit, taken at `stamp` (a
    /// budget-specific time or generation), for implementations of
    /// [`RetryBudget`] outside this crate.
    pub fn new(units: u64, stamp: u64) -> Withdrawal {
        Withdrawal { units, stamp }
    }

    /// What the retry cost, in the budget's own unit.
    pub fn units(&self) -> u64 {
        self.units
    }

    /// When it was taken, in the budget's own terms.
    pub fn stamp(&self) -> u64 {
        self.stamp
    }
}

/// No limit: every retry is granted. The type of a retry policy that was
/// given no budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoBudget;

impl RetryBudget for NoBudget {
    fn withdraw(&self) -> Option<Withdrawal> {
        Some(Withdrawal::new(0, 0))
    }

    fn refund(&self, _: Withdrawal) {}

    fn balance(&self) -> f64 {
        f64::INFINITY
    }
}

/// `Debug` for budget holders: shows the balance.
pub(crate) struct BudgetDebug<'a, B: ?Sized>(pub(crate) &'a B);

impl<B: RetryBudget + ?Sized> fmt::Debug for BudgetDebug<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("balance", &self.0.balance())
            .finish()
    }
}

/// What a budget has granted and refused since it was built (every clone
/// counts into the same numbers): [`RatioBudget::stats`](super::RatioBudget::stats),
/// [`TokenBucket::stats`](super::TokenBucket::stats).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct BudgetStats {
    /// Retries granted.
    pub granted: u64,
    /// Retries refused.
    pub denied: u64,
    /// Granted retries given back unsent (their caller went away).
    pub refunded: u64,
    /// The balance now: retries (or, for a token bucket, tokens) that could
    /// be withdrawn.
    pub balance: f64,
}

/// The counters behind [`BudgetStats`]: touched only when a retry is asked
/// for or given back, never on a request's way in; in lanes, so that
/// counting a withdrawal adds no atomic read-modify-write to it.
#[derive(Debug, Default)]
pub(crate) struct Counts(Lanes<3>);

const GRANTED: usize = 0;
const DENIED: usize = 1;
const REFUNDED: usize = 2;

impl Counts {
    /// Counts the answer to a withdrawal, and passes it on.
    #[inline]
    pub(crate) fn withdrawn(&self, withdrawal: Option<Withdrawal>) -> Option<Withdrawal> {
        self.0.add(match withdrawal {
            Some(_) => GRANTED,
            None => DENIED,
        });
        withdrawal
    }

    pub(crate) fn refunded(&self) {
        self.0.add(REFUNDED);
    }

    pub(crate) fn stats(&self, balance: f64) -> BudgetStats {
        BudgetStats {
            granted: self.0.get(GRANTED),
            denied: self.0.get(DENIED),
            refunded: self.0.get(REFUNDED),
            balance,
        }
    }
}

/// A granted re-send (a retry, a hedge) that has not been sent: spent when
/// it is, refunded if dropped unspent (the caller went away during the
/// wait, or the service failed to get ready).
pub(crate) struct Unsent<B: RetryBudget> {
    budget: Option<B>,
    withdrawal: Option<Withdrawal>,
}

impl<B: RetryBudget> Unsent<B> {
    pub(crate) fn new(budget: Option<B>, withdrawal: Option<Withdrawal>) -> Self {
        Unsent { budget, withdrawal }
    }
}

impl<B: RetryBudget> crate::later::Ticket for Unsent<B> {
    /// The withdrawal that paid for the re-send, booked with its outcome.
    type Spent = Option<Withdrawal>;

    fn spend(mut self) -> Option<Withdrawal> {
        self.withdrawal.take()
    }
}

impl<B: RetryBudget> Drop for Unsent<B> {
    fn drop(&mut self) {
        if let (Some(budget), Some(withdrawal)) = (&self.budget, self.withdrawal.take()) {
            budget.refund(withdrawal);
        }
    }
}

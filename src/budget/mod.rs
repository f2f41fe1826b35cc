//! Retry budgets: how many retries a whole client (or fleet of services) may send.
//!
//! # Why budgets and not only max attempts?
//!
//! "Retry each request up to 3 times" is safe when failures are rare and
//! independent. When the dependency is down, every request fails, every
//! request is retried, and the dependency sees up to 3× its load at the
//! moment it can least take it — the retries become the outage. A budget
//! caps the retries of *all* requests together: a fraction of the traffic,
//! or a bucket of tokens that failures drain and successes refill. The
//! Google SRE book reports that a per-client 10% budget together with three
//! attempts per request cuts the load on a failing backend from about 3× to
//! about 1.1×.
//!
//! A budget is `Clone`, and clones share one balance: hand the same budget to
//! every [`Retry`](crate::retry::Retry) layer of a process (or of one
//! dependency) and they draw from one pool.
//!
//! Two implementations:
//!
//! - [`TokenBucket`]: the AWS SDK "standard" retry quota (500 tokens, 5 per
//!   retry, refunded when the retried call succeeds) and gRPC's retry
//!   throttling (gRFC A6: failures drain a token, successes add `token_ratio`,
//!   no retries while the bucket is at or below half) are both settings of it.
//! - [`RatioBudget`]: Finagle's `RetryBudget`: a fixed fraction of the
//!   requests of a trailing time window may be retried, plus a minimum
//!   number of retries per second — with exact arithmetic.
//!
//! ```
//! use dephase::budget::{RatioBudget, RetryBudget};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), dephase::ConfigError> {
//! let budget = RatioBudget::builder().min_per_sec(0).ratio(0.5).build()?;
//! let shared = budget.clone(); // e.g. for a second client
//!
//! budget.deposit(); // two requests...
//! shared.deposit();
//! let w = budget.withdraw().expect("50% of 2 requests is one retry");
//! assert!(shared.withdraw().is_none()); // ...and the shared pool is empty
//! budget.refund(w); // the retry was never sent after all
//! assert_eq!(shared.balance(), 1.0);
//! # Ok(()) }
//! ```

mod pool;
mod ratio;
mod token_bucket;

pub(crate) use self::pool::{BudgetDebug, Unsent};
pub use self::pool::{BudgetStats, NoBudget, RetryBudget, Withdrawal};
pub use self::ratio::{RatioBudget, RatioBudgetBuilder};
pub use self::token_bucket::{TokenBucket, TokenBucketBuilder};

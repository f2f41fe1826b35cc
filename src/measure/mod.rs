//! How spread out a set of events is: the numbers that prove dephasing works.
//!
//! # Why
//!
//! "We added jitter" is a claim; "the peak went from 500 requests in one
//! 10 ms bucket to 23" is a result. This module turns event timestamps (and
//! start/end intervals) into the few statistics that show a herd and its
//! spreading:
//!
//! - **count** and **standard deviation** of the timestamps;
//! - **peak per bucket**: the most events in any bucket of a given width;
//! - **peak-to-mean**: that peak over the mean per bucket — 1.0 is perfectly
//!   flat, `n` means everything landed in one of `n` buckets;
//! - **maximum concurrency** of intervals (how many calls were in flight at once).
//!
//! The examples and benches of this crate use it, and so can you: record
//! when your jobs fire (a [`Recorder`] does it from many tasks) and compare.
//!
//! ```
//! use std::time::Duration;
//! use dephase::measure::{Spread, max_concurrency};
//!
//! let ms = Duration::from_millis;
//! // A herd: everything in the first 10 ms.
//! let herd = [ms(0), ms(1), ms(2), ms(3)];
//! // The same events, spread.
//! let spread = [ms(0), ms(10), ms(20), ms(30)];
//!
//! assert_eq!(Spread::in_window(&herd, ms(0)..ms(40), 4)?.peak(), 4);
//! assert_eq!(Spread::in_window(&herd, ms(0)..ms(40), 4)?.peak_to_mean(), 4.0);
//! assert_eq!(Spread::in_window(&spread, ms(0)..ms(40), 4)?.peak_to_mean(), 1.0);
//!
//! let calls = [(ms(0), ms(15)), (ms(10), ms(20)), (ms(20), ms(30))];
//! assert_eq!(max_concurrency(&calls), 2); // an interval ends before one starting at the same instant
//! # Ok::<(), dephase::ConfigError>(())
//! ```

mod recorder;
mod spread;

pub use self::recorder::Recorder;
pub use self::spread::{MAX_BUCKETS, Spread, max_concurrency, std_dev};

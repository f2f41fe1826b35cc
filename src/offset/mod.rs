//! Deterministic offsets for scheduled work, and a ticker that applies them.
//!
//! # Why
//!
//! A cron job at `00:00` on two hundred machines is two hundred requests in
//! the same millisecond. Random delays spread them, but a random delay is
//! different after every restart, hard to reason about and impossible to
//! reproduce. An offset derived from something stable — the job's name, the
//! host's name, an instance's index — spreads the fleet *and* stays put: the
//! same key gets the same offset on every machine and in every release.
//!
//! Three strategies (each records its name, see [`telemetry`](crate::telemetry)):
//!
//! - [`Offset::hash`] (`hash`): `SipHash-2-4(key) mod window`, with a fixed,
//!   documented 128-bit key ([`Offset::DEFAULT_KEY`], the ASCII bytes
//!   `dephase-offset-1`) or your own ([`Offset::hash_with_key`]). SipHash is
//!   specified by its paper and pinned here by test vectors, so offsets do not
//!   change across processes, platforms or releases. This is what systemd's
//!   `RandomizedDelaySec=` + `FixedRandomDelay=yes` and Jenkins' `H` do.
//! - [`Offset::index`] (`index`): instance `i` of `n` gets `i · window / n`,
//!   the most even spread there is, when you know the instances.
//! - [`Offset::splay`] (`random`): one random fraction per process, the same
//!   for every call in that process (Chef's and Puppet's "splay").
//!
//! [`Ticker`] fires at every period boundary plus an offset, on tokio's
//! monotonic clock, without drift.
//!
//! ```
//! use std::time::Duration;
//! use dephase::offset::Offset;
//!
//! let window = Duration::from_secs(60);
//! let a = Offset::hash("backup@db-17", window)?;
//! assert_eq!(a, Offset::hash("backup@db-17", window)?); // stable
//! assert!(a.duration() < window);
//!
//! let third = Offset::index(2, 4, window)?; // instance 2 of 4
//! assert_eq!(third.duration(), Duration::from_secs(30));
//! # Ok::<(), dephase::ConfigError>(())
//! ```

mod siphash;
mod strategy;
mod ticker;

pub(crate) use self::siphash::SipHasher24;
pub(crate) use self::strategy::record_on_span;
pub use self::strategy::{Offset, Strategy};
pub use self::ticker::{MAX_PERIOD, MissedTicks, Tick, Ticker};

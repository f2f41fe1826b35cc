//! What the cache keeps per key, and the two decisions it makes from it:
//! refresh early (XFetch) and how much to stretch a TTL (jitter).

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::BoxError;
use crate::offset::{Offset, siphash24};

/// One cached value with what XFetch needs: how long it took to compute.
#[derive(Debug, Clone)]
pub(super) struct Entry<T> {
    /// The value, or (with a negative TTL) the error, shared.
    pub(super) value: Result<T, Arc<BoxError>>,
    /// Δ: how long the computation took.
    pub(super) delta: Duration,
    pub(super) expires: Instant,
}

/// Whether to refresh now, ahead of expiry (XFetch: Vattani, Chierichetti
/// and Lowenstein, VLDB 2015): `now − Δ·β·ln(U) ≥ expiry` with `U` uniform
/// in (0, 1]. `fraction` draws `U` (a uniform fraction of 2⁶⁴); it is only
/// called when the answer is not already certain.
pub(crate) fn refresh_early(
    now: Instant,
    delta: Duration,
    beta: f64,
    expires: Instant,
    fraction: impl FnOnce() -> u64,
) -> bool {
    // The condition is U ≤ exp(−r / (Δβ)) with r the time left. Far from
    // expiry that probability is below what a 64-bit draw can express, so
    // most hits decide without a logarithm or a random draw.
    let scale = delta.as_secs_f64() * beta;
    let left = expires.saturating_duration_since(now).as_secs_f64();
    if scale == 0.0 || left > 45.0 * scale {
        return false;
    }
    let u = (fraction() as f64 + 1.0) / 2f64.powi(64); // (0, 1]
    scale * -u.ln() >= left
}

/// How entries' TTLs are spread so that entries written together do not
/// expire together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlJitter {
    /// Every entry lives exactly the TTL.
    None,
    /// Each entry lives the TTL plus a random extra in `[0, max]`.
    Random(Duration),
    /// Each key lives the TTL plus its own fixed extra in `[0, max)`:
    /// SipHash-2-4 of the bytes its `Hash` implementation writes, as
    /// [`Offset::hash`] computes it.
    PerKey(Duration),
}

impl TtlJitter {
    /// The most this jitter adds to a TTL.
    pub(crate) fn max(&self) -> Duration {
        match self {
            TtlJitter::None => Duration::ZERO,
            TtlJitter::Random(max) | TtlJitter::PerKey(max) => *max,
        }
    }

    /// The extra life of one entry; `fraction` is a uniform fraction of 2⁶⁴.
    pub(crate) fn offset<K: Hash>(&self, key: &K, fraction: u64) -> Duration {
        match self {
            TtlJitter::None => Duration::ZERO,
            TtlJitter::Random(max) => {
                let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(
                    ((u128::from(fraction) * (u128::from(nanos) + 1)) >> 64) as u64,
                )
            }
            TtlJitter::PerKey(max) if max.is_zero() => Duration::ZERO,
            TtlJitter::PerKey(max) => {
                let mut bytes = Bytes(Vec::new());
                key.hash(&mut bytes);
                let hash = u128::from(siphash24(&Offset::DEFAULT_KEY, &bytes.0));
                let nanos = hash % max.as_nanos();
                Duration::new(
                    (nanos / 1_000_000_000) as u64,
                    (nanos % 1_000_000_000) as u32,
                )
            }
        }
    }
}

/// A `Hasher` that keeps the bytes it is fed, to hash them with SipHash-2-4.
struct Bytes(Vec<u8>);

impl Hasher for Bytes {
    fn finish(&self) -> u64 {
        siphash24(&Offset::DEFAULT_KEY, &self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
}

//! A trailing time window of counters, kept in slots on a [`Clock`].
//!
//! The ratio budget, the circuit breaker and the adaptive throttle all ask
//! "how many of X in the last T?". Each keeps a [`Window`]: `n` slots of
//! `T / n`; slot `g % n` holds generation `g` (the `g`-th slot-width since
//! the window was made). Moving to a new generation clears the slots it
//! reuses, so an entry counts for between `T − T/n` and `T`.
//!
//! Every operation is a read of the clock and a few atomic operations; no
//! locks. The clock is tokio's (so tests with paused time move the
//! window), read coarsely when the window is made in a multi-thread
//! runtime and the coarse clock's step is at most a tenth of a slot (see
//! `crate::clock`): an entry made within a step after a slot boundary may
//! then be counted in the slot before, and so expire up to a step (at most
//! a tenth of a slot) early. A slot is a `u64`
//! that callers use either as one signed counter ([`Window::add`] with a
//! negative amount, [`Window::sum_signed`]) or as two 32-bit counters packed
//! together ([`pair`], [`Window::sum_pairs`]; the ratio budget's high half
//! goes down as well as up, read by [`Window::sum_pairs_signed_high`]).

use std::sync::atomic::Ordering;

use crate::sync::AtomicU64;
use std::time::Duration;

use crate::clock::Clock;
use crate::error::ConfigError;

/// Checks the settings of a window kept in buckets: a span that is not
/// zero, 1 to 10 000 buckets, each at least a millisecond wide.
pub(crate) fn check(
    (span_field, span): (&'static str, Duration),
    (buckets_field, buckets): (&'static str, u32),
) -> Result<(), ConfigError> {
    if span.is_zero() {
        return Err(ConfigError::new(span_field, "must be greater than zero"));
    }
    if buckets == 0 || buckets > 10_000 {
        return Err(ConfigError::new(
            buckets_field,
            format!("must be between 1 and 10000 (got {buckets})"),
        ));
    }
    if span / buckets < Duration::from_millis(1) {
        return Err(ConfigError::new(
            buckets_field,
            format!("{buckets} buckets over {span:?} are narrower than 1 ms"),
        ));
    }
    Ok(())
}

/// Packs two counts into one slot increment: `high` in the upper 32 bits.
pub(crate) const fn pair(high: u32, low: u32) -> u64 {
    ((high as u64) << 32) | low as u64
}

#[derive(Debug)]
pub(crate) struct Window {
    clock: Clock,
    slot_nanos: u64,
    /// The newest generation seen.
    generation: AtomicU64,
    slots: Box<[AtomicU64]>,
    /// `slots.len() - 1` when that is a power of two: a mask instead of a division.
    mask: Option<u64>,
}

impl Window {
    /// `slots` slots spanning `span`. Callers validate: `slots ≥ 1` and
    /// `span / slots` at least a nanosecond.
    pub(crate) fn new(span: Duration, slots: usize) -> Window {
        let slot_nanos = u64::try_from(span.as_nanos() / slots as u128).unwrap_or(u64::MAX);
        Window {
            clock: Clock::new(span / slots.max(1) as u32),
            slot_nanos: slot_nanos.max(1),
            generation: AtomicU64::new(0),
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            mask: slots.is_power_of_two().then(|| slots as u64 - 1),
        }
    }

    /// Moves the window to now, clearing expired slots; returns the
    /// current generation.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.at(self.clock.elapsed_nanos())
    }

    /// [`Window::now`] for a reading of the clock taken `nanos` after the
    /// window was made.
    #[inline]
    pub(crate) fn at(&self, nanos: u64) -> u64 {
        let mut seen = self.generation.load(Ordering::Acquire);
        // Still in the newest generation's slot (nearly always): no division.
        if nanos
            .checked_sub(seen * self.slot_nanos)
            .is_some_and(|into| into < self.slot_nanos)
        {
            return seen;
        }
        let now = nanos / self.slot_nanos;
        while now > seen {
            match self.generation.compare_exchange_weak(
                seen,
                now,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // Generations seen+1..=now reuse slots whose entries have expired.
                    let stale = (now - seen).min(self.slots.len() as u64);
                    for g in now - stale + 1..=now {
                        self.slot(g).store(0, Ordering::Release);
                    }
                    break;
                }
                Err(actual) => seen = actual,
            }
        }
        now
    }

    /// Whether entries made in `generation` still count.
    pub(crate) fn is_live(&self, generation: u64, now: u64) -> bool {
        now < generation.saturating_add(self.slots.len() as u64)
    }

    fn slot(&self, generation: u64) -> &AtomicU64 {
        let index = match self.mask {
            Some(mask) => generation & mask,
            None => generation % self.slots.len() as u64,
        };
        &self.slots[index as usize]
    }

    /// Adds `amount` (wrapping: a negative `i64` cast to `u64` subtracts)
    /// to the slot of `generation`.
    pub(crate) fn add(&self, generation: u64, amount: u64) {
        self.slot(generation).fetch_add(amount, Ordering::SeqCst);
    }

    /// The sum of every slot read as one signed counter.
    pub(crate) fn sum_signed(&self) -> i64 {
        self.slots
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.load(Ordering::SeqCst))) as i64
    }

    /// The sums of the two packed counters of every slot: `(high, low)`.
    pub(crate) fn sum_pairs(&self) -> (u64, u64) {
        self.slots.iter().fold((0, 0), |(high, low), s| {
            let v = s.load(Ordering::SeqCst);
            (high + (v >> 32), low + (v & u64::from(u32::MAX)))
        })
    }

    /// The sums of the two packed counters of every slot, the high one
    /// read as a signed 32-bit count per slot (a slot whose high count was
    /// taken below zero, by a refund racing the slot being cleared, adds a
    /// negative amount): `(high, low)`.
    pub(crate) fn sum_pairs_signed_high(&self) -> (i64, u64) {
        self.slots.iter().fold((0, 0), |(high, low), s| {
            let v = s.load(Ordering::SeqCst);
            (
                high + i64::from((v >> 32) as u32 as i32),
                low + (v & u64::from(u32::MAX)),
            )
        })
    }

    /// Forgets everything.
    pub(crate) fn clear(&self) {
        for s in self.slots.iter() {
            s.store(0, Ordering::Release);
        }
    }
}

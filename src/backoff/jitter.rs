//! The jitter kinds and the one function that draws a jittered delay.

use std::fmt;

use crate::rng::Stream;

/// How a backoff delay is randomised.
///
/// With `d = min(cap, base · multiplier^n)` the exponential delay before the
/// `n`-th retry (`n = 0` for the first):
///
/// | kind | delay | range |
/// |---|---|---|
/// | `None` | `d` | exactly `d` |
/// | `Full` | `U(0, d)` | `[0, d]` |
/// | `Equal` | `d/2 + U(0, d/2)` | `[d/2, d]` |
/// | `Decorrelated` | `min(cap, U(base, 3 · previous))`, `previous` starting at `base` | `[base, cap]` |
///
/// Every kind stays at or below the cap: the jitter is taken *from* the
/// delay, never added on top of it. `Full` spreads simultaneous callers the
/// most (Marc Brooker, "Exponential Backoff And Jitter", AWS Architecture
/// Blog, 2015) and is the default. `Decorrelated` ignores the multiplier: it
/// grows from the previous delay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Jitter {
    /// No randomness: every caller that failed together retries together.
    None,
    /// `U(0, d)`: the widest spread.
    #[default]
    Full,
    /// `d/2 + U(0, d/2)`: keeps at least half of the backoff.
    Equal,
    /// `min(cap, U(base, 3 · previous))` (AWS's "decorrelated jitter").
    Decorrelated,
}

impl Jitter {
    /// Every kind, in the order of the table above.
    pub const ALL: [Jitter; 4] = [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ];

    /// The name recorded as `dephase.jitter`: `none`, `full`, `equal` or `decorrelated`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Jitter::None => "none",
            Jitter::Full => "full",
            Jitter::Equal => "equal",
            Jitter::Decorrelated => "decorrelated",
        }
    }
}

impl fmt::Display for Jitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Draws the jittered delay, in nanoseconds, from the exponential delay `d`.
///
/// `previous` is the last delay returned (for `Decorrelated`); all values
/// satisfy `base <= d <= cap` and `base <= previous <= cap`.
pub(super) fn draw(
    jitter: Jitter,
    d: u64,
    base: u64,
    cap: u64,
    previous: u64,
    rng: &mut Stream,
) -> u64 {
    match jitter {
        Jitter::None => d,
        Jitter::Full => rng.in_range(0, d),
        Jitter::Equal => {
            let half = d / 2;
            // `d - half` rather than `half`, so an odd `d` can still be reached.
            half + rng.in_range(0, d - half)
        }
        Jitter::Decorrelated => {
            let high = previous.saturating_mul(3).max(base);
            rng.in_range(base, high).min(cap)
        }
    }
}

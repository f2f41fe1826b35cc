//! What the cache decides, for either store: how long a value lives (TTL
//! and its jitter), when a request refreshes it early (XFetch), and what a
//! request gets once it has expired (the stale windows). Pure functions of
//! the settings, a value's age and a random draw.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use crate::error::{ConfigError, check_f64};
use crate::offset::{Offset, SipHasher24};

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
                let nanos = crate::clock::nanos(*max);
                Duration::from_nanos(
                    ((u128::from(fraction) * (u128::from(nanos) + 1)) >> 64) as u64,
                )
            }
            TtlJitter::PerKey(max) if max.is_zero() => Duration::ZERO,
            TtlJitter::PerKey(max) => {
                let mut hasher = SipHasher24::new(&Offset::DEFAULT_KEY);
                key.hash(&mut hasher);
                let hash = u128::from(hasher.finish());
                let nanos = hash % max.as_nanos();
                Duration::new(
                    (nanos / 1_000_000_000) as u64,
                    (nanos % 1_000_000_000) as u32,
                )
            }
        }
    }
}

/// The freshness settings both stores share, checked.
#[derive(Debug, Clone)]
pub(crate) struct Freshness {
    pub(crate) ttl: Duration,
    pub(crate) beta: f64,
    pub(crate) early_refresh: bool,
    pub(crate) jitter: TtlJitter,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) negative_ttl: Option<Duration>,
}

/// Where a stored value is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Age {
    /// Fresh for `left` more.
    Fresh { left: Duration },
    /// Expired `ago`.
    Expired { ago: Duration },
}

/// What a request that found a value gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The value; `refresh`: this request also refreshes it early.
    Hit { expires_in: Duration, refresh: bool },
    /// The old value, and a refresh in the background.
    Stale,
    /// A load; `or_stale`: if it fails, the old value instead.
    Load { or_stale: bool },
}

impl Freshness {
    /// What a request for a value of this `age`, computed in `delta`, gets.
    /// `refreshing`: a refresh of it is running. `draw` is a uniform
    /// fraction of 2⁶⁴, asked for only when XFetch needs it.
    pub(crate) fn judge(
        &self,
        age: Age,
        delta: Duration,
        refreshing: bool,
        draw: impl FnOnce() -> u64,
    ) -> Verdict {
        match age {
            Age::Fresh { left } => Verdict::Hit {
                expires_in: left,
                refresh: self.early_refresh && refresh_early(left, delta, self.beta, draw),
            },
            Age::Expired { ago } if ago < self.stale_while_revalidate => Verdict::Stale,
            // With early refresh on, a refresh that is still running when
            // the value expires (it started less than Δ before) is not
            // waited for while within Δ of the expiry: that is the time the
            // value took to compute last time.
            Age::Expired { ago } if self.early_refresh && refreshing && ago < delta => {
                Verdict::Stale
            }
            Age::Expired { ago } => Verdict::Load {
                or_stale: ago < self.stale_if_error,
            },
        }
    }

    /// How long past its expiry a value may still be served (the longer of
    /// the two stale windows): a failure never replaces it before then.
    pub(crate) fn stale_window(&self) -> Duration {
        self.stale_while_revalidate.max(self.stale_if_error)
    }
}

/// Whether to refresh now, ahead of expiry (XFetch: Vattani, Chierichetti
/// and Lowenstein, VLDB 2015): `now − Δ·β·ln(U) ≥ expiry` with `U` uniform
/// in (0, 1], that is `−Δ·β·ln(U) ≥ left`. `fraction` draws `U` (a uniform
/// fraction of 2⁶⁴); it is only called when the answer is not already
/// certain.
pub(crate) fn refresh_early(
    left: Duration,
    delta: Duration,
    beta: f64,
    fraction: impl FnOnce() -> u64,
) -> bool {
    // The condition is U ≤ exp(−left / (Δβ)). Far from expiry that
    // probability is below what a 64-bit draw can express, so most hits
    // decide without a logarithm or a random draw.
    let scale = delta.as_secs_f64() * beta;
    let left = left.as_secs_f64();
    if scale == 0.0 || left > 45.0 * scale {
        return false;
    }
    let u = (fraction() as f64 + 1.0) / 2f64.powi(64); // (0, 1]
    scale * -u.ln() >= left
}

/// How long before its expiry a value computed in `delta` can first be
/// refreshed early: before that, [`refresh_early`] is certain to say no
/// (`None`: it never says yes). A store keeps the instant with the entry,
/// so that most hits decide with one comparison.
pub(crate) fn early_window(delta: Duration, beta: f64, early_refresh: bool) -> Option<Duration> {
    let scale = delta.as_secs_f64() * beta;
    if !early_refresh || scale == 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(45.0 * scale).unwrap_or(Duration::MAX))
}

/// The longest life, window or wait a store accepts: lives are added to
/// the clock (and sent to Redis as milliseconds), so they are kept far from
/// either's overflow.
pub(crate) const MAX_LIFE: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `d`, unless it is over [`MAX_LIFE`].
pub(crate) fn at_most_max_life(field: &'static str, d: Duration) -> Result<Duration, ConfigError> {
    if d > MAX_LIFE {
        return Err(ConfigError::new(field, "must be at most 100 years"));
    }
    Ok(d)
}

/// The names of the freshness settings in one store's errors.
pub(crate) struct Fields {
    pub(crate) ttl: &'static str,
    pub(crate) beta: &'static str,
    pub(crate) negative_ttl: &'static str,
}

/// The freshness settings as a builder holds them, before they are checked.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) ttl: Duration,
    pub(crate) beta: f64,
    pub(crate) early_refresh: bool,
    pub(crate) jitter: Option<TtlJitter>,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) negative_ttl: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ttl: Duration::from_secs(60),
            beta: 1.0,
            early_refresh: true,
            jitter: None,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            negative_ttl: None,
        }
    }
}

impl Settings {
    /// Checks the settings: a TTL that is not zero, a β positive and finite,
    /// a negative TTL that is not zero, and no life over 100 years.
    pub(crate) fn check(&self, fields: &Fields) -> Result<Freshness, ConfigError> {
        if self.ttl.is_zero() {
            return Err(ConfigError::new(fields.ttl, "must be greater than zero"));
        }
        let beta = check_f64(fields.beta, self.beta, 0.0, 1e6)?;
        if beta == 0.0 {
            return Err(ConfigError::new(fields.beta, "must be greater than zero"));
        }
        let jitter = self.jitter.unwrap_or(TtlJitter::Random(self.ttl / 10));
        let longest = (self.ttl.saturating_add(jitter.max()))
            .saturating_add(self.stale_while_revalidate.max(self.stale_if_error));
        at_most_max_life(fields.ttl, longest)?;
        if let Some(negative) = self.negative_ttl {
            if negative.is_zero() {
                return Err(ConfigError::new(
                    fields.negative_ttl,
                    "must be greater than zero",
                ));
            }
            at_most_max_life(fields.negative_ttl, negative)?;
        }
        Ok(Freshness {
            ttl: self.ttl,
            beta,
            early_refresh: self.early_refresh,
            jitter,
            stale_while_revalidate: self.stale_while_revalidate,
            stale_if_error: self.stale_if_error,
            negative_ttl: self.negative_ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn freshness() -> Freshness {
        Settings {
            stale_while_revalidate: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(20),
            ..Settings::default()
        }
        .check(&Fields {
            ttl: "cache.ttl",
            beta: "cache.beta",
            negative_ttl: "cache.negative_ttl",
        })
        .unwrap()
    }

    #[test]
    fn verdicts_follow_the_age() {
        let f = freshness();
        let s = Duration::from_secs;
        let never = || -> u64 { unreachable!("far from expiry: no draw") };
        assert_eq!(
            f.judge(Age::Fresh { left: s(30) }, s(0), false, never),
            Verdict::Hit {
                expires_in: s(30),
                refresh: false
            }
        );
        assert_eq!(
            f.judge(Age::Expired { ago: s(4) }, s(1), false, never),
            Verdict::Stale
        );
        assert_eq!(
            f.judge(Age::Expired { ago: s(6) }, s(1), false, never),
            Verdict::Load { or_stale: true }
        );
        assert_eq!(
            f.judge(Age::Expired { ago: s(21) }, s(1), false, never),
            Verdict::Load { or_stale: false }
        );
        // A refresh running, late by less than Δ.
        let f = Freshness {
            stale_while_revalidate: Duration::ZERO,
            ..f
        };
        assert_eq!(
            f.judge(Age::Expired { ago: s(1) }, s(2), true, never),
            Verdict::Stale
        );
        assert_eq!(
            f.judge(Age::Expired { ago: s(1) }, s(2), false, never),
            Verdict::Load { or_stale: true }
        );
    }

    #[test]
    fn xfetch_refreshes_near_expiry_with_the_published_probability() {
        // P(refresh) = exp(−left / (Δβ)): with left = Δβ, 1/e.
        let delta = Duration::from_millis(100);
        let mut draws = 0u64;
        let trials = 100_000u64;
        let refreshed = (0..trials)
            .filter(|i| {
                refresh_early(delta, delta, 1.0, || {
                    draws += 1;
                    crate::rng::mix64(*i)
                })
            })
            .count() as f64;
        assert_eq!(draws, trials);
        let share = refreshed / trials as f64;
        assert!((share - (-1.0f64).exp()).abs() < 0.01, "{share}");
    }

    /// The store's fast path (`quiet_until`: no judgement before the early
    /// window) gives the answer XFetch would: beyond the window even the
    /// draw most in favour of a refresh (U = 2⁻⁶⁴) says no.
    #[test]
    fn no_draw_can_refresh_before_the_early_window() {
        for (delta_ms, beta) in [(1, 1.0), (50, 1.0), (50, 0.5), (3_000, 2.0), (7, 1e6)] {
            let delta = Duration::from_millis(delta_ms);
            let window = early_window(delta, beta, true).unwrap();
            let just_outside = window + Duration::from_nanos(1);
            assert!(!refresh_early(just_outside, delta, beta, || 0));
            // ... and the window is not much wider than it must be: at 44
            // scales from expiry, the most favourable draw refreshes.
            let scale = delta.as_secs_f64() * beta;
            assert!(refresh_early(
                Duration::from_secs_f64(44.0 * scale),
                delta,
                beta,
                || 0
            ));
        }
        assert_eq!(early_window(Duration::from_millis(5), 1.0, false), None);
        assert_eq!(early_window(Duration::ZERO, 1.0, true), None);
    }
}

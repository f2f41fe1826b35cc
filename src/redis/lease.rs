//! The lease protocol (Facebook's memcache leases, on Redis): who may fill
//! a missing key, and the rule that only the holder of the current lease
//! writes the value.
//!
//! - **Look up**: `GET` and `PTTL` in one pipeline (one round trip; what a
//!   hit costs).
//! - **Look up or lease**, after a miss, one round trip: a script returns
//!   the value and its `PTTL`, or — when the value is still missing — tries
//!   `SET lease token NX PX lease_ttl` and says whether this caller got it.
//! - **Lease for a refresh** (early or stale): a script takes the lease
//!   only if nobody holds it *and* the value has not been rewritten since
//!   this replica read it (its `PTTL` is not above the one read): a replica
//!   whose refresh starts after another replica's refresh ended does not
//!   refresh again.
//! - **Write if holder**: a script writes the value (with `PX`) and deletes
//!   the lease only if the lease still holds this caller's token. A holder
//!   whose lease expired (its load took longer than the lease) writes
//!   nothing: another filler may have taken over.
//! - **Release**: a script deletes the lease only if it holds this token
//!   (a failed or cancelled load frees the key for the next filler at once,
//!   instead of after `lease_ttl`).
//! - **Invalidate**: `DEL` of the value *and* the lease (both keys share a
//!   slot): as in memcache, a delete invalidates the outstanding lease, so
//!   the write of a load that started before it is refused.
//!
//! The value and lease keys of one cache key share a Redis Cluster hash
//! slot (`{key}`), as multi-key scripts require there.

use std::sync::LazyLock;
use std::time::Duration;

use super::server::Connection;
use ::redis::Script;

use super::link::Link;

/// Returns `{value, pttl, 0}` when the value is there; otherwise tries to
/// take the lease and returns `{nil, -2, 1}` (taken) or `{nil, -2, 0}`.
static LOOKUP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local value = redis.call('GET', KEYS[1])
if value then
  return {value, redis.call('PTTL', KEYS[1]), 0}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {false, -2, 1}
end
return {false, -2, 0}
",
    )
});

/// Takes the lease (`ARGV[1]`, `PX ARGV[2]`) unless the value now has more
/// life left than `ARGV[3]` ms (somebody refreshed it meanwhile). 1 if taken.
static REFRESH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('PTTL', KEYS[1]) > tonumber(ARGV[3]) then
  return 0
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
",
    )
});

/// Writes `ARGV[2]` with `PX ARGV[3]` and frees the lease, only if the lease
/// holds `ARGV[1]`. Returns 1 if written.
static WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
",
    )
});

/// Deletes the lease if it holds `ARGV[1]`.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

/// The Redis keys of one cache key: `<prefix>{<key>}:v` for the value,
/// and the same ending in `:l` for the lease, made only when a lease is
/// asked for (a hit formats one key).
#[derive(Debug, Clone)]
pub(super) struct Names {
    pub(super) value: String,
}

impl Names {
    pub(super) fn new(prefix: &str, key: &dyn std::fmt::Display) -> Self {
        Names {
            value: format!("{prefix}{{{key}}}:v"),
        }
    }

    pub(super) fn lease(&self) -> String {
        let mut lease = self.value.clone();
        lease.pop();
        lease.push('l');
        lease
    }
}

/// What a lookup found.
#[derive(Debug)]
pub(super) enum Found {
    /// The stored bytes and Redis's `PTTL` for them.
    Value(Vec<u8>, i64),
    /// No value; this caller now holds the lease.
    Leased,
    /// No value; another caller holds the lease.
    Held,
    /// No value (a lookup that did not ask for the lease).
    Missing,
}

/// Milliseconds for a `PX` argument: at least 1.
pub(super) fn px(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The value of `names`, or the lease for it (`lease: None` never leases).
pub(super) async fn lookup(
    link: &Link,
    names: &Names,
    token: &str,
    lease: Option<Duration>,
) -> Option<Found> {
    let (value, pttl, leased): (Option<Vec<u8>>, i64, i64) = link
        .run(|mut c: Connection| async move {
            // A lookup that must not lease is a plain GET + PTTL pipeline.
            match lease {
                Some(ttl) => {
                    LOOKUP
                        .key(&names.value)
                        .key(names.lease())
                        .arg(token)
                        .arg(px(ttl))
                        .invoke_async(&mut c)
                        .await
                }
                None => {
                    let (value, pttl): (Option<Vec<u8>>, i64) = ::redis::pipe()
                        .get(&names.value)
                        .pttl(&names.value)
                        .query_async(&mut c)
                        .await?;
                    Ok((value, pttl, 0))
                }
            }
        })
        .await?;
    Some(match value {
        Some(bytes) => Found::Value(bytes, pttl),
        None if lease.is_none() => Found::Missing,
        None if leased == 1 => Found::Leased,
        None => Found::Held,
    })
}

/// Takes the lease for a background refresh if nobody holds it and the
/// value has not been rewritten since it was read with `seen_pttl`
/// milliseconds left (a rewrite has more life left than that). `None`:
/// Redis unreachable.
pub(super) async fn acquire(
    link: &Link,
    names: &Names,
    token: &str,
    ttl: Duration,
    seen_pttl: i64,
) -> Option<bool> {
    link.run(|mut c: Connection| async move {
        let taken: i64 = REFRESH
            .key(&names.value)
            .key(names.lease())
            .arg(token)
            .arg(px(ttl))
            .arg(seen_pttl)
            .invoke_async(&mut c)
            .await?;
        Ok(taken == 1)
    })
    .await
}

/// Writes `bytes` for `life` if this caller still holds the lease.
/// `Some(false)`: the lease was lost, nothing written.
pub(super) async fn write(
    link: &Link,
    names: &Names,
    token: &str,
    bytes: &[u8],
    life: Duration,
) -> Option<bool> {
    link.run(|mut c: Connection| async move {
        let written: i64 = WRITE
            .key(&names.value)
            .key(names.lease())
            .arg(token)
            .arg(bytes)
            .arg(px(life))
            .invoke_async(&mut c)
            .await?;
        Ok(written == 1)
    })
    .await
}

/// Frees the lease if this caller holds it.
pub(super) async fn release(link: &Link, names: &Names, token: &str) -> Option<()> {
    link.run(|mut c: Connection| async move {
        let _: i64 = RELEASE
            .key(names.lease())
            .arg(token)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    })
    .await
}

/// Deletes the value and the lease in one command: the next lookup misses,
/// and the write of a load in progress is refused (its token is gone).
pub(super) async fn invalidate(link: &Link, names: &Names) -> Option<()> {
    link.run(|mut c: Connection| async move {
        let _: i64 = ::redis::cmd("DEL")
            .arg(&names.value)
            .arg(names.lease())
            .query_async(&mut c)
            .await?;
        Ok(())
    })
    .await
}

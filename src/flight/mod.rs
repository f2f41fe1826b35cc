//! The flight engine: one call per key in flight, its result handed to
//! every caller of that key. It serves the [`coalesce`](crate::coalesce)
//! layer, the [`cache`](crate::cache)'s loads and refreshes, and the Redis
//! store's lookups; each of them decides *what* call a flight makes, this
//! engine decides who makes it, who waits, and what happens when callers
//! go away.
//!
//! A flight holds the one call made for its key. Exactly one waiter, the
//! *driver*, polls that call (with its own waker); the others register their
//! wakers and are woken once, when the result is there — nobody spins. When
//! the driver goes away, it hands the driving to another waiter; when the
//! last waiter goes away, the call is dropped (cancelled) and the key freed.
//! A panic in the call becomes an error for every waiter and frees the key.
//! The table is sharded by key so that unrelated keys do not contend.
//!
//! Waiters live in a slab whose slots are reused: a flight that never ends
//! while callers keep coming and going holds one slot per caller *still
//! there*, and handing the driving over takes the first registered waiter
//! from a list, in constant time.
//!
//! A flight can be **fenced** ([`Table::fence`]): it leaves the table (the
//! next caller starts a new flight) and its call is told, through its
//! [`Fence`], not to store what it loads — an invalidation wins over every
//! load that started before it.

pub(crate) mod error;
mod future;
mod table;

pub(crate) use self::future::{Keyed, Landed};
pub(crate) use self::table::{Call, Fence, Joined, Table, Waiter};

//! State that must not grow with the number of callers or keys: waiter
//! slots of a flight that never ends, breakers of a keyed set at capacity.
//! Memory is read from a counting allocator (per thread: the tests run in
//! parallel, each on its own thread); time per caller is measured by the
//! `scale` bench, and here only bounded so that a quadratic path fails
//! instead of stalling CI.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dephase::Outcome;
use dephase::breaker::{Breaker, KeyedBreaker, State};
use dephase::cache::{CacheLayer, MemoryStore};
use dephase::coalesce::CoalesceLayer;
use tower::{Layer, Service};

/// Counts the bytes allocated and not yet freed by each thread.
struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

fn live_bytes() -> i64 {
    LIVE.with(Cell::get)
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// thread-local counter is a `const`-initialised `Cell` without a destructor,
// so touching it never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|c| c.set(c.get() + layout.size() as i64));
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|c| c.set(c.get() - layout.size() as i64));
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LIVE.try_with(|c| c.set(c.get() + new_size as i64 - layout.size() as i64));
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Fails the test (instead of stalling CI) when a loop that should take
/// well under a second in a debug build is still running after `limit`.
struct Deadline(Instant, Duration, &'static str);

impl Deadline {
    fn check(&self) {
        assert!(
            self.0.elapsed() < self.1,
            "{}: still running after {:?} (a quadratic path?)",
            self.2,
            self.1
        );
    }
}

/// 100 000 callers overlap on one call that never finishes: each joins,
/// waits (registers its waker), and goes away while ten newer ones wait.
/// Memory after the last caller is what it was after the thousandth (fault
/// 4: a waker slot per caller that ever joined, scanned at every hand-off).
fn overlapping_callers<S: Service<u32>>(mut service: S, key: u32) -> impl Drop {
    let deadline = Deadline(
        Instant::now(),
        Duration::from_secs(60),
        "overlapping callers",
    );
    let mut live = std::collections::VecDeque::new();
    let mut baseline = None;
    for caller in 0..100_000u32 {
        let mut call = tokio_test::task::spawn(service.call(key));
        assert!(call.poll().is_pending(), "the call never finishes");
        live.push_back(call);
        if live.len() > 10 {
            drop(live.pop_front()); // the oldest caller times out
        }
        if caller == 1_000 {
            baseline = Some(live_bytes());
        }
        if caller % 1_000 == 0 {
            deadline.check();
        }
    }
    let growth = live_bytes() - baseline.expect("set at the 1000th caller");
    assert!(
        growth < 16 * 1024,
        "memory grew by {growth} bytes over 99 000 callers that came and went"
    );
    live // the ten callers still there keep the call alive
}

fn never_finishes(
    calls: Arc<AtomicUsize>,
) -> impl Service<u32, Response = u32, Error = std::io::Error, Future: Send + 'static> + Clone {
    tower::service_fn(move |_: u32| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<Result<u32, std::io::Error>>()
    })
}

/// A hung coalesced call with 100 000 overlapping callers keeps flat memory.
#[test]
fn a_flight_kept_alive_by_overlapping_callers_does_not_grow() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = CoalesceLayer::new(|k: &u32| Some(*k)).layer(never_finishes(calls.clone()));
    let coalescer = service.coalescer().clone();
    let _still_there = overlapping_callers(service, 7);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one call for every caller");
    assert!(coalescer.is_in_flight(&7));
}

/// The same through the cache: its loads share the flight engine.
#[test]
fn a_cache_load_kept_alive_by_overlapping_callers_does_not_grow() {
    let calls = Arc::new(AtomicUsize::new(0));
    let store = MemoryStore::builder(10).seed(1).build().unwrap();
    let service =
        CacheLayer::new(store.clone(), |k: &u32| Some(*k)).layer(never_finishes(calls.clone()));
    let _still_there = overlapping_callers(service, 7);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(store.loads_in_flight(), 1);
}

/// 100 000 new keys through a keyed breaker already holding 100 000: each
/// admission evicts one breaker without scanning the set (fault 5: two full
/// scans under the write lock per new key), the set stays within its
/// capacity, and open breakers outlive the closed ones around them.
#[test]
fn a_hundred_thousand_new_keys_at_capacity_are_admitted_in_bounded_time() {
    let deadline = Deadline(
        Instant::now(),
        Duration::from_secs(60),
        "keyed breaker admission",
    );
    let capacity = 100_000;
    let breakers = KeyedBreaker::new(Breaker::builder().consecutive_failures(1), capacity).unwrap();
    for key in 0..capacity as u64 {
        drop(breakers.get(&key));
    }
    // A few hosts are down: their breakers are open.
    for key in 0..10u64 {
        breakers
            .get(&key)
            .acquire()
            .unwrap()
            .record(Outcome::failure("down"));
    }
    for key in capacity as u64..2 * capacity as u64 {
        drop(breakers.get(&key));
        if key % 1_000 == 0 {
            deadline.check();
        }
    }
    assert_eq!(breakers.len(), capacity);
    for key in 0..10u64 {
        assert_eq!(
            breakers.state(&key),
            Some(State::Open),
            "open breaker {key} was evicted"
        );
    }
    // The newest keys are there.
    assert!(breakers.state(&(2 * capacity as u64 - 1)).is_some());
}

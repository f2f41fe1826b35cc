//! The in-flight table: one flight per key, shared by every caller of that key.
//!
//! A flight holds the one call made for its key. Exactly one waiter, the
//! *driver*, polls that call (with its own waker); the others register their
//! wakers and are woken once, when the result is there — nobody spins. When
//! the driver goes away, it hands the driving to another waiter; when the
//! last waiter goes away, the call is dropped (cancelled) and the key freed.
//! A panic in the call becomes an error for every waiter and frees the key.
//! The table is sharded by key so that unrelated keys do not contend.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hash, RandomState};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use super::error::{Panicked, Shared};
use crate::BoxError;

/// The call a flight makes, boxed: it is stored in the shared flight and
/// polled by whichever waiter drives, so its type is erased.
pub(crate) type Call<T> = Pin<Box<dyn Future<Output = Outcome<T>> + Send>>;

/// What every waiter of a flight gets.
pub(crate) type Outcome<T> = Result<T, Arc<BoxError>>;

const SHARDS: usize = 64;

/// One shard of the table: the flights of the keys that hash to it.
type Shard<K, T> = Mutex<HashMap<K, Arc<Flight<K, T>>>>;

pub(crate) struct Table<K, T> {
    shards: Box<[Shard<K, T>]>,
    hasher: RandomState,
}

pub(crate) struct Flight<K, T> {
    key: K,
    table: Weak<Table<K, T>>,
    state: Mutex<State<T>>,
}

struct State<T> {
    call: Option<Call<T>>,
    /// A waiter is polling `call` right now (it is taken out meanwhile).
    polling: bool,
    done: Option<Outcome<T>>,
    /// No more waiters may join: the flight finished or was cancelled.
    closed: bool,
    driver: Option<u64>,
    /// The wakers of waiting callers, indexed by waiter id (ids are handed
    /// out in order, so this is a dense table: registering is O(1)).
    waiters: Vec<Option<Waker>>,
    /// Waiters that have not gone away.
    interested: usize,
    /// Every caller that joined, for telemetry.
    joined: usize,
    next_id: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves the state consistent before it can
    // panic, so a poisoned lock is still good.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a caller got into a flight.
pub(crate) enum Joined<K: Hash + Eq + Clone, T: Clone> {
    /// It started the flight: it must [`start`](Starter::start) the call.
    Leader(Starter<K, T>),
    /// It joined a flight in progress.
    Follower(Waiter<K, T>),
}

impl<K: Hash + Eq + Clone, T: Clone> Table<K, T> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Table {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        })
    }

    fn shard(&self, key: &K) -> &Shard<K, T> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Joins the flight of `key`, or starts one.
    pub(crate) fn join(self: &Arc<Self>, key: K) -> Joined<K, T> {
        let mut shard = lock(self.shard(&key));
        if let Some(flight) = shard.get(&key) {
            let mut state = lock(&flight.state);
            if !state.closed {
                let id = state.add_waiter();
                drop(state);
                return Joined::Follower(Waiter::new(Arc::clone(flight), id, false));
            }
        }
        Joined::Leader(self.start_flight(&mut shard, key))
    }

    /// Starts a flight for `key` only if none is in progress (a background
    /// refresh that nobody waits for): `None` leaves the running one alone.
    pub(crate) fn lead(self: &Arc<Self>, key: K) -> Option<Starter<K, T>> {
        let mut shard = lock(self.shard(&key));
        if shard.get(&key).is_some_and(|f| !lock(&f.state).closed) {
            return None;
        }
        Some(self.start_flight(&mut shard, key))
    }

    fn start_flight(
        self: &Arc<Self>,
        shard: &mut HashMap<K, Arc<Flight<K, T>>>,
        key: K,
    ) -> Starter<K, T> {
        let flight = Arc::new(Flight {
            key: key.clone(),
            table: Arc::downgrade(self),
            state: Mutex::new(State {
                call: None,
                polling: false,
                done: None,
                closed: false,
                driver: Some(0),
                waiters: Vec::new(),
                interested: 1,
                joined: 1,
                next_id: 1,
            }),
        });
        shard.insert(key, Arc::clone(&flight));
        Starter {
            waiter: Some(Waiter::new(flight, 0, true)),
        }
    }

    /// Forgets the flight of `key`: the next caller starts a new one; the
    /// waiters of the forgotten one still get its result.
    pub(crate) fn forget(&self, key: &K) {
        lock(self.shard(key)).remove(key);
    }

    /// Flights in the table.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether `key` has a flight in progress.
    pub(crate) fn contains(&self, key: &K) -> bool {
        lock(self.shard(key)).contains_key(key)
    }

    /// Removes `flight` from the table if it is still the flight of its key.
    fn remove(&self, flight: &Arc<Flight<K, T>>) {
        let mut shard = lock(self.shard(&flight.key));
        if shard
            .get(&flight.key)
            .is_some_and(|f| Arc::ptr_eq(f, flight))
        {
            shard.remove(&flight.key);
        }
    }
}

impl<T> State<T> {
    fn add_waiter(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.interested += 1;
        self.joined += 1;
        id
    }

    fn register(&mut self, id: u64, waker: &Waker) {
        let id = id as usize;
        if self.waiters.len() <= id {
            self.waiters.resize(id + 1, None);
        }
        match &mut self.waiters[id] {
            Some(known) => known.clone_from(waker),
            slot => *slot = Some(waker.clone()),
        }
    }

    fn forget_waiter(&mut self, id: u64) {
        if let Some(slot) = self.waiters.get_mut(id as usize) {
            *slot = None;
        }
    }
}

impl<K: Hash + Eq + Clone, T: Clone> Flight<K, T> {
    /// Ends the flight with `outcome`; returns the wakers to wake.
    fn finish(self: &Arc<Self>, state: &mut State<T>, outcome: Outcome<T>) -> Vec<Waker> {
        state.done = Some(outcome);
        state.closed = true;
        state.call = None;
        std::mem::take(&mut state.waiters)
            .into_iter()
            .flatten()
            .collect()
    }

    fn leave_table(self: &Arc<Self>) {
        if let Some(table) = self.table.upgrade() {
            table.remove(self);
        }
    }
}

/// The leader's handle before its call is in the flight.
pub(crate) struct Starter<K: Hash + Eq + Clone, T: Clone> {
    waiter: Option<Waiter<K, T>>,
}

impl<K: Hash + Eq + Clone, T: Clone> Starter<K, T> {
    /// Puts the call into the flight; the leader becomes its first driver.
    pub(crate) fn start(mut self, call: Call<T>) -> Waiter<K, T> {
        let waiter = self.waiter.take().expect("started once");
        lock(&waiter.flight.state).call = Some(call);
        waiter
    }
}

impl<K: Hash + Eq + Clone, T: Clone> Drop for Starter<K, T> {
    /// Making the call panicked before it was in the flight: every follower
    /// gets an error and the key is freed (the leader's own panic goes on).
    fn drop(&mut self) {
        if let Some(waiter) = self.waiter.take() {
            let flight = Arc::clone(&waiter.flight);
            let wakers = {
                let mut state = lock(&flight.state);
                let error: BoxError = Box::new(Panicked::new(
                    "the inner service panicked when called".into(),
                ));
                flight.finish(&mut state, Err(Arc::new(error)))
            };
            flight.leave_table();
            wakers.into_iter().for_each(Waker::wake);
            drop(waiter);
        }
    }
}

/// One caller's place in a flight.
pub(crate) struct Waiter<K: Hash + Eq + Clone, T: Clone> {
    flight: Arc<Flight<K, T>>,
    id: u64,
    leader: bool,
    finished: bool,
}

impl<K: Hash + Eq + Clone, T: Clone> Waiter<K, T> {
    fn new(flight: Arc<Flight<K, T>>, id: u64, leader: bool) -> Self {
        Waiter {
            flight,
            id,
            leader,
            finished: false,
        }
    }

    /// Whether this caller started the flight.
    pub(crate) fn is_leader(&self) -> bool {
        self.leader
    }

    /// How many callers joined the flight so far.
    pub(crate) fn joined(&self) -> usize {
        lock(&self.flight.state).joined
    }

    /// Waits for the flight's outcome; drives the call if it is this waiter's turn.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, BoxError>> {
        let flight = Arc::clone(&self.flight);
        let mut state = lock(&flight.state);
        if let Some(done) = &state.done {
            self.finished = true;
            return Poll::Ready(deliver(done));
        }
        let my_turn = !state.polling && state.driver.is_none_or(|d| d == self.id);
        let Some(mut call) = my_turn.then(|| state.call.take()).flatten() else {
            state.register(self.id, cx.waker());
            return Poll::Pending;
        };
        state.driver = Some(self.id);
        state.polling = true;
        drop(state);

        let polled = catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx)));

        let mut state = lock(&flight.state);
        state.polling = false;
        let outcome = match polled {
            Ok(Poll::Pending) => {
                state.call = Some(call);
                return Poll::Pending;
            }
            Ok(Poll::Ready(result)) => result,
            Err(payload) => {
                let error: BoxError = Box::new(Panicked::from_payload(payload));
                Err(Arc::new(error))
            }
        };
        let reply = deliver(&outcome);
        let wakers = flight.finish(&mut state, outcome);
        drop(state);
        drop(call);
        flight.leave_table();
        wakers.into_iter().for_each(Waker::wake);
        self.finished = true;
        Poll::Ready(reply)
    }
}

fn deliver<T: Clone>(outcome: &Outcome<T>) -> Result<T, BoxError> {
    match outcome {
        Ok(value) => Ok(value.clone()),
        Err(error) => Err(Box::new(Shared::new(Arc::clone(error)))),
    }
}

impl<K: Hash + Eq + Clone, T: Clone> Drop for Waiter<K, T> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let flight = &self.flight;
        let mut state = lock(&flight.state);
        state.interested -= 1;
        state.forget_waiter(self.id);
        if state.done.is_some() {
            return;
        }
        if state.interested == 0 {
            // Nobody wants the result any more: cancel the call, free the key.
            state.closed = true;
            let call = state.call.take();
            drop(state);
            drop(call);
            flight.leave_table();
            return;
        }
        // Hand the driving to a waiter that is still there: if this waiter
        // drove the call, or if nobody drives it — then this waiter may be
        // the one a leaving driver woke to take over, and it must pass that
        // on (callers that go away together leave in any order).
        if state.driver.is_none_or(|d| d == self.id) {
            state.driver = None;
            let next = state.waiters.iter().flatten().next().cloned();
            drop(state);
            if let Some(waker) = next {
                waker.wake();
            }
        }
    }
}

//! The table of flights and a caller's place in one.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hash, RandomState};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use super::error::{Panicked, SharedError};
use crate::BoxError;

/// The call a flight makes, boxed: it is stored in the shared flight and
/// polled by whichever waiter drives, so its type is erased.
pub(crate) type Call<T> = Pin<Box<dyn Future<Output = Landing<T>> + Send>>;

/// What every waiter of a flight gets.
pub(crate) type Landing<T> = Result<T, Arc<BoxError>>;

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
    done: Option<Landing<T>>,
    /// No more waiters may join: the flight finished or was cancelled.
    closed: bool,
    /// An invalidation came after the call started: it must not store.
    fenced: bool,
    driver: Option<usize>,
    waiters: Slots,
    /// Waiters that have not gone away.
    interested: usize,
    /// Every caller that joined, for telemetry.
    joined: usize,
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
                state.interested += 1;
                state.joined += 1;
                let id = state.waiters.add();
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
        let mut waiters = Slots::default();
        let id = waiters.add();
        let flight = Arc::new(Flight {
            key: key.clone(),
            table: Arc::downgrade(self),
            state: Mutex::new(State {
                call: None,
                polling: false,
                done: None,
                closed: false,
                fenced: false,
                driver: Some(id),
                waiters,
                interested: 1,
                joined: 1,
            }),
        });
        shard.insert(key, Arc::clone(&flight));
        Starter {
            waiter: Some(Waiter::new(flight, id, true)),
        }
    }

    /// Forgets the flight of `key`: the next caller starts a new one; the
    /// waiters of the forgotten one still get its result.
    pub(crate) fn forget(&self, key: &K) {
        lock(self.shard(key)).remove(key);
    }

    /// Forgets the flight of `key` and fences it: its waiters still get its
    /// result, but its call is told not to store it (see [`Fence`]).
    pub(crate) fn fence(&self, key: &K) {
        let flight = lock(self.shard(key)).remove(key);
        if let Some(flight) = flight {
            lock(&flight.state).fenced = true;
        }
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
        // One lookup (a hash and a key comparison) in the usual case; a
        // newer flight of the same key is put back.
        if let Some((key, found)) = shard.remove_entry(&flight.key) {
            if !Arc::ptr_eq(&found, flight) {
                shard.insert(key, found);
            }
        }
    }
}

// ----- the waiters' slab ---------------------------------------------------

const NIL: usize = usize::MAX;

/// Waiter slots, reused once their waiter leaves, with a doubly linked list
/// of the slots that hold a waker (in registration order).
#[derive(Default)]
struct Slots {
    nodes: Vec<Node>,
    /// The first free slot (the free slots are chained through `next`).
    free: Option<usize>,
    head: Option<usize>,
    tail: Option<usize>,
}

struct Node {
    waker: Option<Waker>,
    prev: usize,
    next: usize,
}

impl Slots {
    fn add(&mut self) -> usize {
        let node = Node {
            waker: None,
            prev: NIL,
            next: NIL,
        };
        match self.free {
            Some(id) => {
                self.free = Some(self.nodes[id].next).filter(|&n| n != NIL);
                self.nodes[id] = node;
                id
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        }
    }

    fn register(&mut self, id: usize, waker: &Waker) {
        let node = &mut self.nodes[id];
        match &mut node.waker {
            Some(known) => known.clone_from(waker),
            slot => {
                *slot = Some(waker.clone());
                node.prev = self.tail.unwrap_or(NIL);
                node.next = NIL;
                match self.tail {
                    Some(tail) => self.nodes[tail].next = id,
                    None => self.head = Some(id),
                }
                self.tail = Some(id);
            }
        }
    }

    /// Frees slot `id` (its waiter left).
    fn remove(&mut self, id: usize) {
        let node = &mut self.nodes[id];
        if node.waker.take().is_some() {
            let (prev, next) = (node.prev, node.next);
            match prev {
                NIL => self.head = Some(next).filter(|&n| n != NIL),
                p => self.nodes[p].next = next,
            }
            match next {
                NIL => self.tail = Some(prev).filter(|&p| p != NIL),
                n => self.nodes[n].prev = prev,
            }
        }
        self.nodes[id].next = self.free.unwrap_or(NIL);
        self.free = Some(id);
    }

    /// The waker of the earliest registered waiter.
    fn first(&self) -> Option<&Waker> {
        self.head.and_then(|h| self.nodes[h].waker.as_ref())
    }

    /// Every registered waker, taken out.
    fn take_all(&mut self) -> Vec<Waker> {
        let mut wakers = Vec::new();
        let mut at = self.head.unwrap_or(NIL);
        while at != NIL {
            let node = &mut self.nodes[at];
            wakers.extend(node.waker.take());
            at = node.next;
        }
        self.head = None;
        self.tail = None;
        wakers
    }
}

// ----- flights -------------------------------------------------------------

impl<K: Hash + Eq + Clone, T: Clone> Flight<K, T> {
    /// Ends the flight with `landing` (`None`: its only waiter took it);
    /// returns the wakers to wake.
    fn finish(self: &Arc<Self>, state: &mut State<T>, landing: Option<Landing<T>>) -> Vec<Waker> {
        state.done = landing;
        state.closed = true;
        state.call = None;
        state.waiters.take_all()
    }

    fn leave_table(self: &Arc<Self>) {
        if let Some(table) = self.table.upgrade() {
            table.remove(self);
        }
    }
}

/// A call's view of its flight: whether an invalidation came after it
/// started. Holds the flight weakly (the flight holds the call).
pub(crate) struct Fence<K, T> {
    flight: Weak<Flight<K, T>>,
}

impl<K, T> Fence<K, T> {
    /// Runs `store` unless the flight was fenced (or is gone), with the
    /// flight's state locked so that a fence cannot come in between the
    /// check and the store. `true` if it ran.
    pub(crate) fn store_unless_fenced(&self, store: impl FnOnce()) -> bool {
        let Some(flight) = self.flight.upgrade() else {
            return false;
        };
        let state = lock(&flight.state);
        if state.fenced {
            return false;
        }
        store();
        drop(state);
        true
    }
}

/// The leader's handle before its call is in the flight.
pub(crate) struct Starter<K: Hash + Eq + Clone, T: Clone> {
    waiter: Option<Waiter<K, T>>,
}

impl<K: Hash + Eq + Clone, T: Clone> Starter<K, T> {
    /// The fence the call checks before it stores what it loaded.
    pub(crate) fn fence(&self) -> Fence<K, T> {
        let waiter = self.waiter.as_ref().expect("not started yet");
        Fence {
            flight: Arc::downgrade(&waiter.flight),
        }
    }

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
                flight.finish(&mut state, Some(Err(Arc::new(error))))
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
    id: usize,
    leader: bool,
    finished: bool,
}

impl<K: Hash + Eq + Clone, T: Clone> Waiter<K, T> {
    fn new(flight: Arc<Flight<K, T>>, id: usize, leader: bool) -> Self {
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

    /// Waits for the flight's landing; drives the call if it is this waiter's turn.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, BoxError>> {
        let flight = &self.flight;
        let mut state = lock(&flight.state);
        if let Some(done) = &state.done {
            self.finished = true;
            return Poll::Ready(deliver(done));
        }
        let my_turn = !state.polling && state.driver.is_none_or(|d| d == self.id);
        let Some(mut call) = my_turn.then(|| state.call.take()).flatten() else {
            state.waiters.register(self.id, cx.waker());
            return Poll::Pending;
        };
        state.driver = Some(self.id);
        state.polling = true;
        drop(state);

        let polled = catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx)));

        let mut state = lock(&flight.state);
        state.polling = false;
        let landing = match polled {
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
        // The only waiter left (nobody joined, or every follower went
        // away) takes the value itself instead of a copy: the flight is
        // closed from here on, so no waiter can join and read it.
        let (reply, landing) = match landing {
            Ok(value) if state.interested == 1 => (Ok(value), None),
            landing => (deliver(&landing), Some(landing)),
        };
        let wakers = flight.finish(&mut state, landing);
        drop(state);
        drop(call);
        flight.leave_table();
        wakers.into_iter().for_each(Waker::wake);
        self.finished = true;
        Poll::Ready(reply)
    }
}

/// One waiter's copy of the landing. A panic reaches every waiter as a
/// [`Panicked`] of its own (so that `downcast_ref::<Panicked>()` finds
/// it); any other error as a [`SharedError`] around the one error.
fn deliver<T: Clone>(landing: &Landing<T>) -> Result<T, BoxError> {
    match landing {
        Ok(value) => Ok(value.clone()),
        Err(error) => match error.downcast_ref::<Panicked>() {
            Some(panicked) => Err(Box::new(panicked.clone())),
            None => Err(Box::new(SharedError::new(Arc::clone(error)))),
        },
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
        state.waiters.remove(self.id);
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
            let next = state.waiters.first().cloned();
            drop(state);
            if let Some(waker) = next {
                waker.wake();
            }
        }
    }
}

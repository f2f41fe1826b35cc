//! One breaker per key (per host, per tenant), bounded in number.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use super::builder::BreakerBuilder;
use super::handle::Breaker;
use super::state::{Config, State};
use crate::error::ConfigError;
use crate::guard::GuardLayer;
use crate::rng::{mix64, process_entropy};

/// A set of [`Breaker`]s, one per key, made on first use from one
/// configuration and bounded in number. Clones share the set.
///
/// When the set is full, a new key evicts a breaker chosen as Redis
/// chooses what to evict (its approximated LRU, with Redis's default of
/// five samples): five breakers are drawn at random, and the least
/// recently used *closed* one among them goes — or, if none of the five is
/// closed, the least recently used of them (the memory bound wins over
/// keeping an open breaker). A set of five or fewer looks at every
/// breaker, so it evicts exactly the least recently used closed one.
/// Admitting a new key does the same work at any capacity, without a scan:
/// keys often come from requests (hosts, tenants), and a flood of new keys
/// must not stall every lookup behind the write lock.
///
/// ```
/// use dephase::breaker::{Breaker, KeyedBreaker, State};
///
/// # fn main() -> Result<(), dephase::ConfigError> {
/// let hosts = KeyedBreaker::new(Breaker::builder().consecutive_failures(1), 1000)?;
/// hosts.get(&"db-1").acquire().unwrap().record(dephase::Outcome::failure("down"));
/// assert_eq!(hosts.get(&"db-1").state(), State::Open);
/// assert_eq!(hosts.get(&"db-2").state(), State::Closed); // each key its own breaker
/// # Ok(()) }
/// ```
pub struct KeyedBreaker<K> {
    shared: Arc<Shared<K>>,
}

/// How many breakers are looked at to choose one to evict.
const SAMPLE: usize = 5;

struct Shared<K> {
    config: Config,
    capacity: usize,
    clock: AtomicU64,
    set: RwLock<Set<K>>,
}

/// The breakers in a vector (so that one can be drawn at random), their
/// last uses in a vector of their own (compact: the draws read five of
/// them, and these reads stay in cache at 100 000 breakers), and an index
/// from key to place.
struct Set<K> {
    index: HashMap<K, usize>,
    entries: Vec<(K, Breaker)>,
    last_used: Vec<AtomicU64>,
    /// The state of the eviction draws (SplitMix64).
    draws: u64,
}

impl<K: Hash + Eq + Clone> Set<K> {
    /// The breaker of `key` and its place.
    fn get(&self, key: &K) -> Option<(usize, &Breaker)> {
        self.index.get(key).map(|&i| (i, &self.entries[i].1))
    }

    /// The place of the breaker to evict: the candidates in order of last
    /// use, the first closed one (or the least recently used one). Their
    /// states are read in that order, so that usually one breaker's state
    /// is read, not five (each is a cache miss in a large set).
    fn victim(&mut self) -> Option<usize> {
        let len = self.entries.len();
        let drawn = len.min(SAMPLE);
        let mut candidates = [(0u64, 0usize); SAMPLE];
        for (n, candidate) in candidates.iter_mut().enumerate().take(drawn) {
            let place = if len <= SAMPLE {
                n
            } else {
                self.draws = self.draws.wrapping_add(0x9e37_79b9_7f4a_7c15);
                ((u128::from(mix64(self.draws)) * len as u128) >> 64) as usize
            };
            *candidate = (self.last_used[place].load(Ordering::Relaxed), place);
        }
        let candidates = &mut candidates[..drawn];
        candidates.sort_unstable();
        candidates
            .iter()
            .find(|&&(_, place)| self.entries[place].1.state() == State::Closed)
            .or(candidates.first())
            .map(|&(_, place)| place)
    }

    fn remove(&mut self, place: usize) {
        let (key, _) = self.entries.swap_remove(place);
        self.last_used.swap_remove(place);
        self.index.remove(&key);
        if let Some((moved, _)) = self.entries.get(place) {
            self.index.insert(moved.clone(), place);
        }
    }
}

impl<K: Hash + Eq + Clone> KeyedBreaker<K> {
    /// Breakers built like `builder`, at most `capacity` of them.
    ///
    /// # Errors
    ///
    /// What [`BreakerBuilder::build`] rejects, and a zero capacity (`breaker.capacity`).
    pub fn new(builder: BreakerBuilder, capacity: usize) -> Result<Self, ConfigError> {
        if capacity == 0 {
            return Err(ConfigError::new("breaker.capacity", "must be at least 1"));
        }
        Ok(KeyedBreaker {
            shared: Arc::new(Shared {
                config: builder.config()?,
                capacity,
                clock: AtomicU64::new(0),
                set: RwLock::new(Set {
                    index: HashMap::new(),
                    entries: Vec::new(),
                    last_used: Vec::new(),
                    draws: process_entropy(),
                }),
            }),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Set<K>> {
        self.shared
            .set
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The breaker of `key`, made if it does not exist yet.
    pub fn get(&self, key: &K) -> Breaker {
        let shared = &*self.shared;
        let tick = shared.clock.fetch_add(1, Ordering::Relaxed);
        {
            let set = self.read();
            if let Some((place, breaker)) = set.get(key) {
                set.last_used[place].store(tick, Ordering::Relaxed);
                return breaker.clone();
            }
        }
        let mut set = shared.set.write().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, breaker)) = set.get(key) {
            return breaker.clone();
        }
        if set.entries.len() >= shared.capacity {
            if let Some(victim) = set.victim() {
                set.remove(victim);
            }
        }
        let breaker = Breaker {
            core: Arc::new(super::state::Core::new(shared.config.clone(), false)),
            lanes: None,
        };
        let place = set.entries.len();
        set.index.insert(key.clone(), place);
        set.entries.push((key.clone(), breaker.clone()));
        set.last_used.push(AtomicU64::new(tick));
        breaker
    }

    /// The state of `key`'s breaker, if it has one.
    pub fn state(&self, key: &K) -> Option<State> {
        self.read().get(key).map(|(_, b)| b.state())
    }

    /// How many breakers the set holds.
    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    /// Whether the set holds no breaker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A layer that guards each request with the breaker of
    /// `key(&request)` (`None`: not guarded).
    pub fn layer<F>(&self, key: F) -> GuardLayer<PerKey<K, F>> {
        GuardLayer::new(PerKey::new(self.clone(), key))
    }
}

impl<K> Clone for KeyedBreaker<K> {
    fn clone(&self) -> Self {
        KeyedBreaker {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K> fmt::Debug for KeyedBreaker<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.shared.set.read().map(|s| s.entries.len()).unwrap_or(0);
        f.debug_struct("KeyedBreaker")
            .field("breakers", &len)
            .field("capacity", &self.shared.capacity)
            .finish_non_exhaustive()
    }
}

/// A [`KeyedBreaker`] with the function that picks each request's key:
/// what admits the calls of a keyed breaker's services (see
/// [`KeyedBreaker::layer`]). A request whose key is `None` is not guarded.
pub struct PerKey<K, F> {
    breakers: KeyedBreaker<K>,
    key: F,
}

impl<K, F> PerKey<K, F> {
    /// Guards each request with the breaker of `key(&request)`.
    pub fn new(breakers: KeyedBreaker<K>, key: F) -> Self {
        PerKey { breakers, key }
    }

    /// The set of breakers.
    pub fn breakers(&self) -> &KeyedBreaker<K> {
        &self.breakers
    }

    pub(super) fn key<Req>(&self, request: &Req) -> Option<K>
    where
        F: Fn(&Req) -> Option<K>,
    {
        (self.key)(request)
    }
}

impl<K, F: Clone> Clone for PerKey<K, F> {
    fn clone(&self) -> Self {
        PerKey {
            breakers: self.breakers.clone(),
            key: self.key.clone(),
        }
    }
}

impl<K, F> fmt::Debug for PerKey<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerKey")
            .field("breakers", &self.breakers)
            .finish_non_exhaustive()
    }
}

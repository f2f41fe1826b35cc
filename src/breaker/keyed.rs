//! One breaker per key (per host, per tenant), bounded in number.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::state::Config;
use super::{Breaker, BreakerBuilder, ResponseFuture, State, call_through};
use crate::BoxError;
use crate::classify::{Classify, RetryErrors};
use crate::error::ConfigError;

/// A set of [`Breaker`]s, one per key, made on first use from one
/// configuration and bounded in number. Clones share the set.
///
/// When the set is full, a new key evicts the least recently used breaker
/// that is closed; if none is closed, the least recently used one whatever
/// its state (the memory bound wins over keeping an open breaker).
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

struct Shared<K> {
    config: Config,
    capacity: usize,
    clock: AtomicU64,
    breakers: RwLock<HashMap<K, Entry>>,
}

struct Entry {
    breaker: Breaker,
    last_used: AtomicU64,
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
                breakers: RwLock::new(HashMap::new()),
            }),
        })
    }

    /// The breaker of `key`, made if it does not exist yet.
    pub fn get(&self, key: &K) -> Breaker {
        let shared = &*self.shared;
        let tick = shared.clock.fetch_add(1, Ordering::Relaxed);
        {
            let breakers = shared
                .breakers
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = breakers.get(key) {
                entry.last_used.store(tick, Ordering::Relaxed);
                return entry.breaker.clone();
            }
        }
        let mut breakers = shared
            .breakers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = breakers.get(key) {
            return entry.breaker.clone();
        }
        if breakers.len() >= shared.capacity {
            let oldest = |closed_only: bool| {
                breakers
                    .iter()
                    .filter(|(_, e)| !closed_only || e.breaker.state() == State::Closed)
                    .min_by_key(|(_, e)| e.last_used.load(Ordering::Relaxed))
                    .map(|(k, _)| k.clone())
            };
            if let Some(victim) = oldest(true).or_else(|| oldest(false)) {
                breakers.remove(&victim);
            }
        }
        let breaker = Breaker {
            core: Arc::new(super::state::Core::new(shared.config.clone())),
        };
        breakers.insert(
            key.clone(),
            Entry {
                breaker: breaker.clone(),
                last_used: AtomicU64::new(tick),
            },
        );
        breaker
    }

    /// The state of `key`'s breaker, if it has one.
    pub fn state(&self, key: &K) -> Option<State> {
        let breakers = self
            .shared
            .breakers
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        breakers.get(key).map(|e| e.breaker.state())
    }

    /// How many breakers the set holds.
    pub fn len(&self) -> usize {
        self.shared
            .breakers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the set holds no breaker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        let len = self.shared.breakers.read().map(|b| b.len()).unwrap_or(0);
        f.debug_struct("KeyedBreaker")
            .field("breakers", &len)
            .field("capacity", &self.shared.capacity)
            .finish_non_exhaustive()
    }
}

/// Wraps services in [`KeyedCircuitBreaker`]s: `key` picks each request's breaker.
pub struct KeyedCircuitBreakerLayer<K, F, C = RetryErrors> {
    breakers: KeyedBreaker<K>,
    key: F,
    classify: C,
}

impl<K, F> KeyedCircuitBreakerLayer<K, F> {
    /// A layer that guards each request with the breaker of `key(&request)`.
    pub fn new(breakers: KeyedBreaker<K>, key: F) -> Self {
        KeyedCircuitBreakerLayer {
            breakers,
            key,
            classify: RetryErrors,
        }
    }
}

impl<K, F, C> KeyedCircuitBreakerLayer<K, F, C> {
    /// Decides what counts as a failure.
    pub fn classify<C2>(self, classify: C2) -> KeyedCircuitBreakerLayer<K, F, C2> {
        KeyedCircuitBreakerLayer {
            breakers: self.breakers,
            key: self.key,
            classify,
        }
    }
}

impl<S, K, F: Clone, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<K, F, C> {
    type Service = KeyedCircuitBreaker<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker {
            inner,
            breakers: self.breakers.clone(),
            key: self.key.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<K, F: Clone, C: Clone> Clone for KeyedCircuitBreakerLayer<K, F, C> {
    fn clone(&self) -> Self {
        KeyedCircuitBreakerLayer {
            breakers: self.breakers.clone(),
            key: self.key.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<K, F, C> fmt::Debug for KeyedCircuitBreakerLayer<K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("breakers", &self.breakers)
            .finish_non_exhaustive()
    }
}

/// A service whose requests are each guarded by the breaker of their key.
pub struct KeyedCircuitBreaker<S, K, F, C = RetryErrors> {
    inner: S,
    breakers: KeyedBreaker<K>,
    key: F,
    classify: C,
}

impl<S, K, F, C> KeyedCircuitBreaker<S, K, F, C> {
    /// The set of breakers.
    pub fn breakers(&self) -> &KeyedBreaker<K> {
        &self.breakers
    }

    inner_accessors!();
}

impl<S, K, F, C, Req> Service<Req> for KeyedCircuitBreaker<S, K, F, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone,
    F: Fn(&Req) -> K,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let breaker = self.breakers.get(&(self.key)(&request));
        call_through(&breaker, &mut self.inner, &self.classify, request)
    }
}

impl<S: Clone, K, F: Clone, C: Clone> Clone for KeyedCircuitBreaker<S, K, F, C> {
    fn clone(&self) -> Self {
        KeyedCircuitBreaker {
            inner: self.inner.clone(),
            breakers: self.breakers.clone(),
            key: self.key.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S: fmt::Debug, K, F, C> fmt::Debug for KeyedCircuitBreaker<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .field("breakers", &self.breakers)
            .finish_non_exhaustive()
    }
}

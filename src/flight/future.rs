//! A keyed request's future: its own call (no key), or its place in a
//! flight.

use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::Waiter;
use crate::BoxError;

pin_project! {
    /// The mechanism behind the coalesce and cache futures, which add their
    /// telemetry around it.
    #[project = KeyedProj]
    pub(crate) enum Keyed<F, K, V>
    where
        K: Hash,
        K: Eq,
        K: Clone,
        V: Clone,
    {
        // The request has no key: its own call.
        Direct { #[pin] future: F },
        // The request's place in its key's flight.
        Shared { waiter: Waiter<K, V> },
    }
}

/// How a keyed request ended: its own call's result, or the flight's.
#[derive(Debug)]
pub(crate) enum Landed<R, V> {
    Direct(R),
    Shared(Result<V, BoxError>),
}

impl<F, K: Hash + Eq + Clone, V: Clone> Keyed<F, K, V> {
    pub(crate) fn direct(future: F) -> Self {
        Keyed::Direct { future }
    }

    pub(crate) fn shared(waiter: Waiter<K, V>) -> Self {
        Keyed::Shared { waiter }
    }

    /// The place in a flight, if the request has one.
    pub(crate) fn waiter(&self) -> Option<&Waiter<K, V>> {
        match self {
            Keyed::Shared { waiter } => Some(waiter),
            _ => None,
        }
    }

    /// `direct` or `shared`: for `Debug`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Keyed::Direct { .. } => "direct",
            Keyed::Shared { .. } => "shared",
        }
    }
}

impl<F: Future, K: Hash + Eq + Clone, V: Clone> Keyed<F, K, V> {
    pub(crate) fn poll_landed(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Landed<F::Output, V>> {
        match self.project() {
            KeyedProj::Direct { future } => Poll::Ready(Landed::Direct(ready!(future.poll(cx)))),
            KeyedProj::Shared { waiter } => Poll::Ready(Landed::Shared(ready!(waiter.poll(cx)))),
        }
    }
}

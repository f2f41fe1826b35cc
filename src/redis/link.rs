//! The connection to Redis, and what happens when Redis is slow or gone.
//!
//! One multiplexed connection per store (to one server, or a cluster's
//! connection that routes each command to its slot's node), opened on
//! first use. Every command
//! has a deadline (`op_timeout`). A command that fails or times out marks
//! the link **down**: the connection is dropped, and until a jittered,
//! growing delay has passed (100 ms doubling to 5 s, full jitter: a fleet
//! whose Redis restarts must not reconnect in lockstep) no command is tried
//! at all — callers fall back at once instead of each waiting for a
//! timeout. The first command after the delay reconnects. A `WARN` event
//! says when Redis is lost, an `INFO` event when it is back.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ::redis::RedisError;
use tokio::time::Instant;
use tracing::Level;

use super::server::{Client, Connection};
use crate::backoff::{ExponentialBackoff, Jitter, Sequence};

pub(super) struct Link {
    client: Client,
    /// What its user does without Redis, and with it again (the `WARN`
    /// and `INFO` events say so).
    lost: &'static str,
    back: &'static str,
    op_timeout: Duration,
    reconnect: ExponentialBackoff,
    state: Mutex<State>,
    /// Held while connecting, so that one caller connects and the others
    /// wait for its result instead of opening connections of their own.
    connecting: tokio::sync::Mutex<()>,
    /// When Redis last refused a command (ms since `epoch`; 0: never).
    last_refusal: AtomicU64,
    epoch: std::time::Instant,
}

/// Whether a command's error means the connection (or Redis) is gone,
/// rather than that Redis answered with an error.
fn breaks_link(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
}

struct State {
    /// The connection and its generation (a failure only drops the
    /// connection it happened on).
    connection: Option<(u64, Connection)>,
    generation: u64,
    /// While down: no command is tried before this instant.
    retry_at: Option<Instant>,
    delays: Sequence,
    down: bool,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Link {
    /// A link whose `WARN` says `lost` (what its user does without Redis)
    /// and whose `INFO` says `back`.
    pub(super) fn new(
        client: Client,
        op_timeout: Duration,
        lost: &'static str,
        back: &'static str,
    ) -> Self {
        let reconnect = ExponentialBackoff::builder()
            .base(Duration::from_millis(100))
            .cap(Duration::from_secs(5))
            .jitter(Jitter::Full)
            .build()
            .unwrap_or_default();
        Link {
            client,
            lost,
            back,
            op_timeout,
            state: Mutex::new(State {
                connection: None,
                generation: 0,
                retry_at: None,
                delays: reconnect.sequence(),
                down: false,
            }),
            reconnect,
            connecting: tokio::sync::Mutex::new(()),
            last_refusal: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        }
    }

    /// Whether the last command failed and Redis is not tried for now.
    pub(super) fn is_down(&self) -> bool {
        lock(&self.state).down
    }

    /// Runs `op` on the connection, within the deadline. `None` if Redis is
    /// down, or the command failed (which marks it down).
    pub(super) async fn run<R, F, Fut>(&self, op: F) -> Option<R>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<R, RedisError>>,
    {
        self.run_sent(op).await.0
    }

    /// [`run`](Self::run), and whether the command was sent at all (a
    /// command sent without a reply may still have run in Redis; one never
    /// sent did not).
    pub(super) async fn run_sent<R, F, Fut>(&self, op: F) -> (Option<R>, bool)
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<R, RedisError>>,
    {
        let Some((generation, connection)) = self.connection().await else {
            return (None, false);
        };
        let reply = match tokio::time::timeout(self.op_timeout, op(connection)).await {
            Ok(Ok(reply)) => Some(reply),
            // Redis answered, with an error (WRONGTYPE: another program's
            // data under our key; LOADING, BUSY, OOM...) or a reply of the
            // wrong shape: this command failed, the link is fine.
            Ok(Err(error)) if !breaks_link(&error) => {
                self.refused(&error);
                None
            }
            // A cluster connection repairs its node connections itself: one
            // node's failure must not take every shard down with it.
            Ok(Err(error)) if self.client.is_cluster() => {
                self.refused(&error);
                None
            }
            Err(_) if self.client.is_cluster() => {
                self.refused(&RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no reply within {:?}", self.op_timeout),
                )));
                None
            }
            Ok(Err(error)) => {
                self.fail(Some(generation), &error);
                None
            }
            Err(_) => {
                self.fail(
                    Some(generation),
                    &format_args!("no reply within {:?}", self.op_timeout),
                );
                None
            }
        };
        (reply, true)
    }

    /// Says (at most once a second) that Redis refused a command.
    fn refused(&self, error: &RedisError) {
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_refusal.load(Ordering::Relaxed);
        if (last == 0 || now >= last + 1000)
            && self
                .last_refusal
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::event!(
                target: "dephase::redis",
                Level::WARN,
                %error,
                "Redis refused a command; for that one, {} (said at most once a second)",
                self.lost
            );
        }
    }

    /// The connection, opened if need be; `None` while down.
    async fn connection(&self) -> Option<(u64, Connection)> {
        if let Some(ready) = self.usable()? {
            return Some(ready);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(ready) = self.usable()? {
            return Some(ready); // somebody else connected meanwhile
        }
        // A cluster's setup is several round trips (the seed nodes, the slot
        // map, every node): four deadlines' worth.
        let budget = if self.client.is_cluster() {
            self.op_timeout.saturating_mul(4)
        } else {
            self.op_timeout
        };
        let opened = tokio::time::timeout(budget, self.client.connect(self.op_timeout)).await;
        match opened {
            Ok(Ok(connection)) => {
                let mut state = lock(&self.state);
                state.generation += 1;
                let ready = (state.generation, connection);
                state.connection = Some(ready.clone());
                state.retry_at = None;
                state.delays = self.reconnect.sequence();
                if std::mem::take(&mut state.down) {
                    tracing::event!(
                        target: "dephase::redis",
                        Level::INFO,
                        "Redis is reachable again; {}",
                        self.back
                    );
                }
                Some(ready)
            }
            Ok(Err(error)) => {
                self.fail(None, &error);
                None
            }
            Err(_) => {
                self.fail(
                    None,
                    &format_args!("no connection within {:?}", self.op_timeout),
                );
                None
            }
        }
    }

    /// `Some(Some(_))`: a connection; `Some(None)`: none yet, try to open
    /// one; `None`: down, do not try yet.
    fn usable(&self) -> Option<Option<(u64, Connection)>> {
        let state = lock(&self.state);
        if let Some(ready) = &state.connection {
            return Some(Some(ready.clone()));
        }
        match state.retry_at {
            Some(at) if Instant::now() < at => None,
            _ => Some(None),
        }
    }

    /// Marks the link down after a failure on connection `generation`
    /// (`None`: while connecting).
    fn fail(&self, generation: Option<u64>, error: &dyn fmt::Display) {
        let mut state = lock(&self.state);
        let current = state.connection.as_ref().map(|(g, _)| *g);
        if generation.is_some() && generation != current {
            return; // that connection was already dropped and replaced
        }
        state.connection = None;
        let delay = state.delays.next_delay();
        state.retry_at = Some(Instant::now() + delay);
        if !std::mem::replace(&mut state.down, true) {
            tracing::event!(
                target: "dephase::redis",
                Level::WARN,
                %error,
                retry_in_ms = crate::telemetry::millis(delay),
                "Redis is unreachable; {}",
                self.lost
            );
        }
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("server", &self.client.describe())
            .field("op_timeout", &self.op_timeout)
            .field("down", &self.is_down())
            .finish()
    }
}

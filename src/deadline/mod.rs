//! Deadlines that travel: a request's remaining time carried from one
//! service to the next, and honoured by the layers that wait or re-send.
//!
//! # Why
//!
//! A retry at the edge of a chain of services that does not know its
//! caller gave up 50 ms ago is wasted work, and every hop that retries on
//! its own multiplies the load on the hop below. gRPC solves this with
//! deadlines: the client sends its remaining time (`grpc-timeout`), each
//! server bounds its work by it and passes what is left to its own calls.
//! This module does the same for any tower stack:
//!
//! - a [`Deadline`] is an instant on tokio's clock. It is *in scope* inside
//!   [`Deadline::scope`] (a tokio task-local), where [`Deadline::current`]
//!   finds it; a nested scope keeps the earlier of the two deadlines. The
//!   layers read it when they are *called*: scope the call
//!   (`deadline.scope(service.oneshot(request))`), not a future `call`
//!   returned before the scope;
//! - [`Retry`](crate::retry::Retry), [`Hedge`](crate::hedge::Hedge) and
//!   [`Pace`](crate::pace::Pace) honour the deadline in scope: a retry
//!   never sleeps past it and never starts an attempt with less than its
//!   minimum attempt time left; a hedge is not sent then either; a pacer
//!   turns away (with [`Overloaded`](crate::pace::error::Overloaded)) a
//!   caller whose turn would come after it. Each has its own minimum
//!   (`RetryPolicyBuilder::min_attempt_time`,
//!   `HedgePolicyBuilder::min_attempt_time`,
//!   [`PropagateDeadlineLayer::min_time`]), zero by default: set each
//!   layer's to the least time an attempt needs;
//! - with the `http` feature, [`PropagateDeadlineLayer`] (client side) puts
//!   the remaining time into each outgoing request's header in
//!   `grpc-timeout`'s format ([`format_timeout`]) and fails an attempt that
//!   cannot start or finish in time with [`DeadlineExceeded`];
//!   [`ServerDeadlineLayer`] (server side, axum or hyper) reads that header
//!   ([`parse_timeout`]), bounds the handler by it (answering `504 Gateway
//!   Timeout` once it has passed, whatever the handler answered at that
//!   instant) and puts the deadline in scope for the handler and the
//!   client layers it calls. A handler that answers *before* the deadline
//!   with the [`DeadlineExceeded`] of a call it made can turn it into a
//!   504 itself (with the `axum` feature, `DeadlineExceeded` implements
//!   `IntoResponse`, and `dephase::axum::error_response` finds it). A malformed, negative or huge
//!   header is ignored (a DEBUG event says so) and a client can never make
//!   the server wait longer than the server's own maximum.
//!
//! [`DeadlineExceeded`] is a local rejection, like a breaker's: a breaker
//! above the client layer does not count it as a failure of the service
//! (the caller ran out of time, the service did not fail), and
//! `HttpClassifier` does not retry it. A service that is always slower
//! than its callers' deadlines is seen by a breaker only through its slow
//! calls (`BreakerBuilder::slow_call_rate`).
//!
//! The span field is `dephase.deadline.remaining_ms` (see
//! [`telemetry`](crate::telemetry)).
//!
//! # Runtime
//!
//! Deadlines are instants of tokio's clock, so paused-time tests see them
//! pass as the clock advances. The scope is a tokio task-local: a task you
//! `tokio::spawn` from inside a scope does not inherit it (open a scope in
//! the task with [`Deadline::scope`]).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use dephase::deadline::Deadline;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let outer = Deadline::after(Duration::from_secs(1));
//! outer
//!     .scope(async {
//!         assert_eq!(Deadline::current(), Some(outer));
//!         // A nested scope keeps the earlier deadline.
//!         Deadline::after(Duration::from_secs(5))
//!             .scope(async { assert_eq!(Deadline::current(), Some(outer)) })
//!             .await;
//!     })
//!     .await;
//! assert_eq!(Deadline::current(), None);
//! # }
//! ```

#[cfg(feature = "http")]
mod client;
pub mod error;
#[cfg(feature = "http")]
pub mod future;
#[cfg(feature = "http")]
mod header;
mod scope;
#[cfg(feature = "http")]
mod server;

pub use self::error::DeadlineExceeded;
pub use self::scope::{Deadline, Scoped};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use self::{
    client::{PropagateDeadline, PropagateDeadlineLayer},
    header::{GRPC_TIMEOUT, format_timeout, parse_timeout},
    server::{ServerDeadline, ServerDeadlineLayer},
};

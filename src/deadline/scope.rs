//! [`Deadline`]: an instant on tokio's clock, and the task-local scope in
//! which the layers find it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Deadline;
}

/// The instant by which a request must be answered (on tokio's clock).
///
/// Put it in scope with [`scope`](Deadline::scope); the layers that wait
/// or re-send find it with [`current`](Deadline::current). In an
/// `http::Request`'s extensions it is what
/// [`PropagateDeadline`](super::PropagateDeadline) sends.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// The deadline `timeout` from now (saturating far in the future).
    pub fn after(timeout: Duration) -> Deadline {
        let now = Instant::now();
        Deadline {
            at: now.checked_add(timeout).unwrap_or_else(|| far_future(now)),
        }
    }

    /// The deadline at `at`.
    pub fn at(at: Instant) -> Deadline {
        Deadline { at }
    }

    /// The instant.
    pub fn instant(self) -> Instant {
        self.at
    }

    /// The time left (zero once it has passed).
    pub fn remaining(self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Whether it has passed.
    pub fn is_expired(self) -> bool {
        Instant::now() >= self.at
    }

    /// The deadline in scope, if any: the one the innermost
    /// [`scope`](Deadline::scope) around the caller holds.
    pub fn current() -> Option<Deadline> {
        DEADLINE.try_with(|deadline| *deadline).ok()
    }

    /// The earlier of this deadline and the one in scope.
    pub fn or_current(self) -> Deadline {
        Deadline::current().map_or(self, |current| current.min(self))
    }

    /// Runs `future` with this deadline in scope — or with the deadline
    /// already in scope if that one is earlier (a callee cannot extend its
    /// caller's deadline).
    ///
    /// The layers read the deadline in `call` (a client layer must write
    /// the header before it sends), so the *call* must happen inside the
    /// scope: scope `service.oneshot(request)` or an `async` block that
    /// calls, not a future `call` has already returned —
    /// `deadline.scope(service.call(request))` runs `call` before the
    /// scope is entered, and the request goes without the deadline.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use dephase::deadline::Deadline;
    /// # use tower::{Service, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), std::convert::Infallible> {
    /// # let mut service = tower::service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>(Deadline::current()) });
    /// let deadline = Deadline::after(Duration::from_millis(300));
    /// // Right: the call is made inside the scope.
    /// let seen = deadline.scope(async { service.ready().await?.call(()).await }).await?;
    /// assert_eq!(seen, Some(deadline));
    /// // Also right: `oneshot` calls when it is first polled.
    /// let seen = deadline.scope(service.clone().oneshot(())).await?;
    /// assert_eq!(seen, Some(deadline));
    /// # Ok(()) }
    /// ```
    pub fn scope<F: Future>(self, future: F) -> Scoped<F> {
        Scoped {
            deadline: self,
            future,
        }
    }

    /// Runs `f` with this deadline in scope, as it is (the caller has
    /// already kept the earlier one).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        DEADLINE.sync_scope(self, f)
    }
}

/// About 30 years after `now`: what "no deadline" saturates to.
fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(86400 * 365 * 30)
}

impl fmt::Debug for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deadline")
            .field("remaining", &self.remaining())
            .finish()
    }
}

pin_project! {
    /// A future run with a [`Deadline`] in scope ([`Deadline::scope`]).
    pub struct Scoped<F> {
        deadline: Deadline,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // The earlier of this deadline and the one in scope *where it is
        // polled*: a scoped future made elsewhere and awaited inside a
        // caller's scope cannot extend the caller's deadline.
        let deadline = this.deadline.or_current();
        let future = this.future;
        DEADLINE.sync_scope(deadline, || future.poll(cx))
    }
}

impl<F> fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scoped")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

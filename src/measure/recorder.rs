//! [`Recorder`]: event times and intervals from many tasks.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Collects event times (and intervals) from many tasks, relative to when
/// it was created, on tokio's clock (so paused-time tests work).
///
/// Clones share the same records.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use std::time::Duration;
/// use dephase::measure::Recorder;
///
/// let recorder = Recorder::new();
/// recorder.mark();
/// tokio::time::sleep(Duration::from_millis(5)).await;
/// recorder.mark();
/// assert_eq!(recorder.times(), vec![Duration::ZERO, Duration::from_millis(5)]);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Recorder {
    origin: Instant,
    records: Arc<Mutex<Records>>,
}

#[derive(Debug, Default)]
struct Records {
    times: Vec<Duration>,
    intervals: Vec<(Duration, Duration)>,
}

impl Recorder {
    /// A recorder whose time zero is now.
    pub fn new() -> Recorder {
        Recorder::starting_at(Instant::now())
    }

    /// A recorder whose time zero is `origin`.
    pub fn starting_at(origin: Instant) -> Recorder {
        Recorder {
            origin,
            records: Arc::default(),
        }
    }

    /// Records an event now.
    pub fn mark(&self) {
        self.mark_at(Instant::now());
    }

    /// Records an event at `at` (before the origin counts as the origin).
    pub fn mark_at(&self, at: Instant) {
        let t = at.saturating_duration_since(self.origin);
        self.lock().times.push(t);
    }

    /// Records an interval that started at `start` and ends now.
    pub fn mark_interval(&self, start: Instant) {
        let end = Instant::now().saturating_duration_since(self.origin);
        let start = start.saturating_duration_since(self.origin);
        self.lock().intervals.push((start, end));
    }

    /// The recorded event times, sorted.
    pub fn times(&self) -> Vec<Duration> {
        let mut times = self.lock().times.clone();
        times.sort_unstable();
        times
    }

    /// The recorded intervals, in the order they were recorded.
    pub fn intervals(&self) -> Vec<(Duration, Duration)> {
        self.lock().intervals.clone()
    }

    /// Time zero of this recorder.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        // The records stay consistent even if a recording thread panicked.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

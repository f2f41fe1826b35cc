//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Field values as the tests compare them.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    F64(f64),
    U64(u64),
    I64(i64),
    Bool(bool),
}

impl Value {
    pub fn as_f64(&self) -> f64 {
        match self {
            Value::F64(v) => *v,
            Value::U64(v) => *v as f64,
            Value::I64(v) => *v as f64,
            other => panic!("not a number: {other:?}"),
        }
    }

    pub fn as_u64(&self) -> u64 {
        match self {
            Value::U64(v) => *v,
            Value::I64(v) if *v >= 0 => *v as u64,
            other => panic!("not an unsigned integer: {other:?}"),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Value::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }
}

pub type Fields = HashMap<String, Value>;

/// What a test subscriber saw: span fields by span name, and events.
#[derive(Default, Debug)]
pub struct Captured {
    spans: Mutex<HashMap<u64, (String, Fields)>>,
    events: Mutex<Vec<(String, Fields)>>,
}

impl Captured {
    /// The fields of the (last created) span called `name`.
    pub fn span(&self, name: &str) -> Fields {
        let spans = self.spans.lock().unwrap();
        let mut found: Vec<_> = spans.iter().filter(|(_, (n, _))| n == name).collect();
        found.sort_by_key(|(id, _)| **id);
        found
            .last()
            .map(|(_, (_, f))| f.clone())
            .unwrap_or_default()
    }

    /// Every event's target and fields (the message is the field `message`).
    pub fn events(&self) -> Vec<(String, Fields)> {
        self.events.lock().unwrap().clone()
    }

    /// Events of `target` whose message contains `text`.
    pub fn events_with(&self, target: &str, text: &str) -> Vec<Fields> {
        self.events()
            .into_iter()
            .filter(|(t, f)| {
                t == target
                    && f.get("message")
                        .is_some_and(|m| matches!(m, Value::Str(s) if s.contains(text)))
            })
            .map(|(_, f)| f)
            .collect()
    }
}

/// Routes everything to the [`Captured`] of the current thread, if any.
struct Capture;

thread_local! {
    static CURRENT: std::cell::RefCell<Option<Arc<Captured>>> = const { std::cell::RefCell::new(None) };
}

fn current() -> Option<Arc<Captured>> {
    CURRENT.with(|c| c.borrow().clone())
}

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), Value::F64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::U64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_string(), Value::Str(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), Value::Str(format!("{value:?}")));
    }
}

impl<S> Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        let Some(captured) = current() else { return };
        let mut fields = Fields::new();
        attrs.record(&mut Visitor(&mut fields));
        captured
            .spans
            .lock()
            .unwrap()
            .insert(id.into_u64(), (attrs.metadata().name().to_string(), fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let Some(captured) = current() else { return };
        if let Some((_, fields)) = captured.spans.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Visitor(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(captured) = current() else { return };
        let mut fields = Fields::new();
        event.record(&mut Visitor(&mut fields));
        captured
            .events
            .lock()
            .unwrap()
            .push((event.metadata().target().to_string(), fields));
    }
}

/// Stops capturing on this thread when dropped.
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

/// Captures this thread's spans and events until the guard is dropped.
///
/// The subscriber is installed once, globally, and routes by thread: a
/// thread-local default subscriber would race with `tracing`'s callsite
/// interest cache when tests run in parallel (an event first seen by a
/// thread without a subscriber can stay disabled for the others).
pub fn capture() -> (Arc<Captured>, CaptureGuard) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Capture))
            .expect("no other global subscriber in the tests");
    });
    let captured = Arc::new(Captured::default());
    CURRENT.with(|c| *c.borrow_mut() = Some(captured.clone()));
    (captured, CaptureGuard(()))
}

/// A proptest configuration with a fixed seed: the cases are random-looking
/// but the same in every run, so a failure always reproduces.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x00de_9a5e),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

/// Runs `future` on the paused clock, failing (not hanging) if it takes more
/// than an hour of simulated time: a waiter that is never woken fails the
/// test instead of stalling CI.
pub async fn bounded<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(3600), future)
        .await
        .expect("hung: still pending after an hour of (paused) time")
}

/// A token bucket that counts what it grants and what comes back, to check
/// that every withdrawal is either spent on a re-send or refunded.
#[derive(Clone)]
pub struct Counting {
    pub inner: dephase::budget::TokenBucket,
    pub granted: Arc<std::sync::atomic::AtomicU64>,
    pub refunded: Arc<std::sync::atomic::AtomicU64>,
}

impl Counting {
    pub fn new(inner: dephase::budget::TokenBucket) -> Self {
        Counting {
            inner,
            granted: Arc::default(),
            refunded: Arc::default(),
        }
    }

    /// Withdrawals granted, less those refunded.
    pub fn spent(&self) -> u64 {
        use std::sync::atomic::Ordering::SeqCst;
        self.granted.load(SeqCst) - self.refunded.load(SeqCst)
    }
}

impl dephase::budget::RetryBudget for Counting {
    fn deposit(&self) {
        self.inner.deposit();
    }
    fn withdraw(&self) -> Option<dephase::budget::Withdrawal> {
        let w = self.inner.withdraw();
        if w.is_some() {
            self.granted
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        w
    }
    fn refund(&self, withdrawal: dephase::budget::Withdrawal) {
        self.refunded
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.refund(withdrawal);
    }
    fn on_success(&self, retry: Option<dephase::budget::Withdrawal>) {
        self.inner.on_success(retry);
    }
    fn on_failure(&self) {
        self.inner.on_failure();
    }
    fn balance(&self) -> f64 {
        self.inner.balance()
    }
}

/// Starts one copy of this test binary that runs only the ignored test
/// `test` (the body of a worker process), with `var` set to `spec`.
pub fn worker(test: &str, var: &str, spec: &str) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            test,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(var, spec)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the worker process starts")
}

/// Wall-clock milliseconds since the epoch: how worker processes agree on
/// an instant to start together.
pub fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis() as u64
}

/// Holders of something scarce now, and the most there ever were.
#[derive(Debug, Default)]
pub struct Holders {
    pub now: std::sync::atomic::AtomicUsize,
    pub max: std::sync::atomic::AtomicUsize,
}

impl Holders {
    /// One more holder.
    pub fn enter(&self) {
        use std::sync::atomic::Ordering;
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
    }

    /// One holder fewer.
    pub fn leave(&self) {
        self.now.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

//! The attributes dephase puts on your spans, exported with the
//! OpenTelemetry SDK to stdout.
//!
//! ```text
//! cargo run --example otel_stdout
//! ```
//!
//! `tracing` spans go through `tracing-opentelemetry` to an SDK tracer
//! provider whose exporter prints each finished span. A local axum origin
//! on `127.0.0.1:0` answers `503` once; a hyper-util client with retries
//! calls it, and two callers share one call through the coalesce layer.
//! Look for `http.request.resend_count`, `dephase.retry.delay_ms`,
//! `dephase.jitter` and `dephase.coalesce.role` in the output.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use dephase::BoxError;
use dephase::backoff::{ExponentialBackoff, Jitter};
use dephase::coalesce::CoalesceLayer;
use dephase::http::{HttpClassifier, IdempotentRequests};
use dephase::retry::{RetryLayer, RetryPolicy};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use tower::{ServiceBuilder, ServiceExt};
use tracing::Instrument;
use tracing::field::Empty as Unset;
use tracing_subscriber::layer::SubscriberExt;

async fn once_unavailable(State(calls): State<Arc<AtomicUsize>>) -> StatusCode {
    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

/// A tracer provider that hands every finished span to `exporter` at once.
pub fn provider<E: SpanExporter + 'static>(exporter: E) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .build()
}

/// Runs the demo with spans going to `provider`; returns the statuses of
/// the retried request and of the two coalesced lookups.
pub async fn run(provider: &SdkTracerProvider) -> Result<Vec<u16>, BoxError> {
    // Spans at INFO and above, and dephase's own events (DEBUG); not hyper's chatter.
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(tracing::Level::INFO)
        .with_target("dephase", tracing::Level::DEBUG);
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("otel_stdout")))
        .with(filter);
    let guard = tracing::subscriber::set_default(subscriber);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let app = Router::new()
        .route("/report", axum::routing::get(once_unavailable))
        .with_state(Arc::new(AtomicUsize::new(0)));
    let server = tokio::spawn(axum::serve(listener, app).into_future());

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let policy = RetryPolicy::builder()
        .max_attempts(3)
        .backoff(
            ExponentialBackoff::builder()
                .base(Duration::from_millis(20))
                .jitter(Jitter::Full)
                .build()?,
        )
        .classify(HttpClassifier::new())
        .clone_requests(IdempotentRequests::new())
        .build()?;
    let retrying = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .service(client.clone());
    let uri = format!("http://{address}/report");
    let mut statuses = Vec::new();

    let span = tracing::info_span!(
        "GET /report",
        http.request.resend_count = Unset,
        dephase.retry.delay_ms = Unset,
        dephase.jitter = Unset,
        dephase.retry.reason = Unset,
    );
    let request = http::Request::get(&uri).body(Empty::new())?;
    let response = retrying.oneshot(request).instrument(span).await?;
    statuses.push(response.status().as_u16());

    // Two lookups of the same report at once: one call, shared.
    let coalesced = ServiceBuilder::new()
        .layer(CoalesceLayer::new(|path: &&'static str| Some(*path)))
        .service(tower::service_fn(move |path: &'static str| {
            let client = client.clone();
            let uri: Result<hyper::Uri, _> = format!("http://{address}{path}").parse();
            async move {
                let response = client.get(uri?).await?;
                let status = response.status().as_u16();
                response.into_body().collect().await?;
                Ok::<_, BoxError>(status)
            }
        }));
    let lookup = |who: &'static str| {
        let span = tracing::info_span!(
            "lookup /report",
            caller = who,
            dephase.coalesce.role = Unset,
            dephase.coalesce.waiters = Unset,
        );
        coalesced.clone().oneshot("/report").instrument(span)
    };
    let (first, second) = tokio::join!(lookup("first"), lookup("second"));
    statuses.extend([first?, second?]);

    server.abort();
    drop(guard);
    provider.force_flush()?;
    Ok(statuses)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let provider = provider(opentelemetry_stdout::SpanExporter::default());
    let statuses = run(&provider).await?;
    provider.shutdown()?;
    println!("statuses: {statuses:?}");
    Ok(())
}

//! The rest of the middleware chain as a tower service: what the dephase
//! stack calls for each attempt.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Extensions;
use reqwest_middleware::Next;
use tower_service::Service;

use crate::pace::Pacer;
use crate::retry::Attempt;

/// Sends each attempt down the rest of the chain, after the pacer's turn
/// (if there is a pacer), with the chain's extensions (shared by the
/// attempts, one at a time) and the attempt's number in them.
#[derive(Clone)]
pub(super) struct NextService<'a> {
    pub(super) next: Next<'a>,
    pub(super) extensions: Arc<tokio::sync::Mutex<&'a mut Extensions>>,
    pub(super) pacer: Option<Pacer>,
    pub(super) attempts: Arc<std::sync::atomic::AtomicU32>,
}

type Sent<'a> =
    Pin<Box<dyn Future<Output = reqwest_middleware::Result<reqwest::Response>> + Send + 'a>>;

impl<'a> Service<reqwest::Request> for NextService<'a> {
    type Response = reqwest::Response;
    type Error = reqwest_middleware::Error;
    type Future = Sent<'a>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: reqwest::Request) -> Self::Future {
        let next = self.next.clone();
        let extensions = Arc::clone(&self.extensions);
        let pacer = self.pacer.clone();
        let attempt = self
            .attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        Box::pin(async move {
            if let Some(pacer) = pacer {
                pacer
                    .wait()
                    .await
                    .map_err(reqwest_middleware::Error::middleware)?;
            }
            let mut extensions = extensions.lock().await;
            extensions.insert(Attempt::new(attempt));
            next.run(request, &mut extensions).await
        })
    }
}

//! Replaying request bodies for the retry layer: bodies that are cheap to
//! clone are cloned; a streaming body is recorded as it is sent, up to a
//! cap, and replayed by each re-send. Only idempotent requests are copied.

mod body;
mod copier;
mod layer;
mod service;

pub use self::body::{ReplayBody, ReplayableBody};
pub use self::copier::{IDEMPOTENCY_KEY, IdempotentRequests};
pub use self::layer::ReplayLayer;
pub use self::service::Replay;

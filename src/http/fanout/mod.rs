//! Sharing HTTP responses between the callers of a coalesced or cached
//! call: bodies collected into `Bytes` up to a limit and copied to each
//! caller; over the limit, each caller makes its own call.

mod collect;
mod collected;
pub(crate) mod future;
mod layer;
mod service;

pub use self::collect::{Collect, CollectFuture};
pub use self::collected::{Collected, FanoutBody};
pub use self::layer::FanoutLayer;
pub use self::service::Fanout;

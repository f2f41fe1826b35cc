//! The futures of the HTTP layers.

pub use super::fanout::CollectFuture;
pub use super::fanout::future::FanoutFuture;

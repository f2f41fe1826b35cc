//! dephase as a `reqwest-middleware` middleware (feature
//! `reqwest-middleware`): see [`DephaseMiddleware`].

mod handle;
mod next;

pub use self::handle::DephaseMiddleware;

//! The errors a coalesced request can end with besides the inner
//! service's own: that error shared by every caller ([`SharedError`]), or
//! a panic in the call ([`Panicked`]).

pub use crate::flight::error::{Panicked, SharedError};

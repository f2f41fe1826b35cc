//! The errors a cached request can end with besides the inner service's
//! own: a load's error shared by every caller that waited for it, or a
//! cached error (with a `negative_ttl`) ([`SharedError`]); a panic in the
//! load ([`Panicked`]).

pub use crate::flight::error::{Panicked, SharedError};

//! The guard engine: admit a call, make it, book its outcome. The
//! [`breaker`](crate::breaker), the keyed breaker and the
//! [`throttle`](crate::throttle) are guards that differ only in what they
//! decide ([`Admit`]); the service, the layer and the future are written
//! once, here. A new admission policy (a concurrency limit, a quota) is an
//! `Admit` implementation put in a [`GuardLayer`].
//!
//! ```
//! use dephase::classify::Outcome;
//! use dephase::guard::{Admit, Book, GuardLayer};
//! use tower::{Layer, ServiceExt};
//!
//! /// Lets requests under 100 through.
//! #[derive(Clone)]
//! struct Small;
//!
//! struct Ticket;
//!
//! impl Book for Ticket {
//!     fn book(self, _outcome: Outcome) {}
//! }
//!
//! impl Admit<u32> for Small {
//!     type Permit = Ticket;
//!     type Rejection = std::io::Error;
//!     fn admit(&mut self, request: &u32) -> Result<Ticket, std::io::Error> {
//!         if *request < 100 { Ok(Ticket) } else { Err(std::io::Error::other("too big")) }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let service = GuardLayer::new(Small)
//!     .layer(tower::service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n) }));
//! assert_eq!(service.clone().oneshot(7).await.unwrap(), 7);
//! assert!(service.oneshot(700).await.is_err());
//! # }
//! ```

mod admit;
pub mod future;
mod layer;
mod service;

pub use self::admit::{Admit, Book};
pub use self::layer::GuardLayer;
pub use self::service::Guard;

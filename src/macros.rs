//! The crate's macros: written once, used by every layer.

/// `get_ref`, `get_mut` and `into_inner` for a middleware whose inner
/// service is its field `inner`, of type `S` (every service here has them,
/// as in tower).
macro_rules! inner_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Unwraps the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

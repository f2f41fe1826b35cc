//! The error a fault layer injects.

use std::fmt;

/// What was injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One of the share of calls that fail.
    Error,
    /// A call inside an outage.
    Outage,
    /// A call inside an outage that refuses connections.
    Refused,
}

/// A failure injected by a [`Fault`](super::Fault) layer: the call did
/// not reach the service. For an outage that refuses connections, its
/// [`source`](std::error::Error::source) is an `io::Error` of kind
/// `ConnectionRefused`, so classifiers treat it as the refusal it mimics.
#[derive(Debug)]
pub struct Injected {
    kind: Kind,
    refused: Option<std::io::Error>,
}

impl Injected {
    pub(crate) fn new(kind: Kind) -> Injected {
        let refused = (kind == Kind::Refused).then(|| {
            std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused (injected)",
            )
        });
        Injected { kind, refused }
    }

    /// Whether the call fell inside a scheduled outage (rather than the
    /// share of calls that fail).
    pub fn is_outage(&self) -> bool {
        self.kind != Kind::Error
    }

    /// Whether it mimics a refused connection.
    pub fn is_refused(&self) -> bool {
        self.kind == Kind::Refused
    }
}

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::Error => "injected fault: the call failed",
            Kind::Outage => "injected fault: an outage",
            Kind::Refused => "injected fault: connection refused",
        })
    }
}

impl std::error::Error for Injected {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.refused
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

//! Where the fleet stores connect: one Redis or a Redis Cluster, in the
//! clear or over TLS.

use std::fmt;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, TlsCertificates, Value,
};

use crate::error::ConfigError;

/// The Redis a fleet store ([`RedisStore`](super::RedisStore),
/// [`FleetGate`](super::FleetGate), [`FleetPacer`](super::FleetPacer),
/// [`FleetBudget`](super::FleetBudget)) connects to. A URL converts into
/// one, so every builder takes `"redis://host:6379/"` as it is.
///
/// - `redis://[user:password@]host:port/db` or `unix:///path`: one server.
/// - `rediss://…`: the same over TLS (rustls). The server's certificate is
///   checked against the system's roots, or against
///   [`root_certificate`](Self::root_certificate) if set; a certificate
///   that does not check out is refused like an unreachable server (the
///   store's `WARN` event carries rustls's reason).
/// - [`Server::cluster`]: a Redis Cluster, from some of its nodes. Every
///   script of the fleet stores touches the keys of one hash slot (their
///   keys share a `{…}` tag), so each runs on the node that owns it. Nodes
///   that are not in cluster mode are refused when the store first
///   connects, like an unreachable server: the store's `WARN` event says
///   why.
///
/// ```
/// use dephase::redis::{FleetGate, Server};
///
/// # fn main() -> Result<(), dephase::ConfigError> {
/// let ca = b"-----BEGIN CERTIFICATE-----\n...".to_vec();
/// let _tls = Server::new("rediss://redis.internal:6380/").root_certificate(ca);
/// let cluster = Server::cluster(["redis://10.0.0.1:7000/", "redis://10.0.0.2:7000/"]);
/// let _gate = FleetGate::builder(cluster, "restarts").slots(3).build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Server {
    nodes: Nodes,
    root_certificate: Option<Vec<u8>>,
}

#[derive(Clone, Debug)]
enum Nodes {
    One(String),
    Cluster(Vec<String>),
}

impl Server {
    /// One Redis server at `url`.
    pub fn new(url: impl Into<String>) -> Server {
        Server {
            nodes: Nodes::One(url.into()),
            root_certificate: None,
        }
    }

    /// A Redis Cluster, found from `nodes` (one is enough; the client
    /// learns the rest of the cluster from it).
    pub fn cluster<I, S>(nodes: I) -> Server
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Server {
            nodes: Nodes::Cluster(nodes.into_iter().map(Into::into).collect()),
            root_certificate: None,
        }
    }

    /// For `rediss://` URLs: trust this certificate authority (PEM) instead
    /// of the system's roots.
    pub fn root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Server {
        self.root_certificate = Some(pem.into());
        self
    }

    /// The client, checked: `field` names the URL setting in the error,
    /// `certificate` the root certificate's.
    pub(super) fn open(
        &self,
        field: &'static str,
        certificate: &'static str,
        op_timeout: Duration,
    ) -> Result<Client, ConfigError> {
        let bad = |e: RedisError| ConfigError::new(field, e.to_string());
        let urls: Vec<&str> = match &self.nodes {
            Nodes::One(url) => vec![url.as_str()],
            Nodes::Cluster(nodes) => nodes.iter().map(String::as_str).collect(),
        };
        if urls.iter().any(|url| url.starts_with("rediss://")) {
            // rustls with ring, whatever else the application turned on: an
            // application with rustls's aws-lc-rs too would leave rustls no
            // default to pick. A provider already installed is kept.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        if let Some(pem) = &self.root_certificate {
            if let Some(url) = urls.iter().find(|url| !url.starts_with("rediss://")) {
                return Err(ConfigError::new(
                    certificate,
                    format!("is for TLS, and {} is not a rediss:// URL", host_of(url)),
                ));
            }
            // Checked here, so that a bad file is said at build time.
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            match CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>() {
                Ok(certificates) if !certificates.is_empty() => {}
                Ok(_) => {
                    return Err(ConfigError::new(certificate, "holds no PEM certificate"));
                }
                Err(e) => {
                    return Err(ConfigError::new(certificate, format!("is not PEM: {e}")));
                }
            }
        }
        let certificates = || TlsCertificates {
            client_tls: None,
            root_cert: self.root_certificate.clone(),
        };
        match &self.nodes {
            Nodes::One(url) => {
                let client = match &self.root_certificate {
                    Some(_) => ::redis::Client::build_with_tls(url.as_str(), certificates()),
                    None => ::redis::Client::open(url.as_str()),
                }
                .map_err(bad)?;
                Ok(Client::One(client))
            }
            Nodes::Cluster(nodes) => {
                if nodes.is_empty() {
                    return Err(ConfigError::new(field, "a cluster needs at least one node"));
                }
                let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .connection_timeout(op_timeout)
                    .response_timeout(op_timeout);
                if self.root_certificate.is_some() {
                    builder = builder.certs(certificates());
                }
                Ok(Client::Cluster(builder.build().map_err(bad)?))
            }
        }
    }
}

impl From<&str> for Server {
    fn from(url: &str) -> Server {
        Server::new(url)
    }
}

impl From<String> for Server {
    fn from(url: String) -> Server {
        Server::new(url)
    }
}

impl From<&String> for Server {
    fn from(url: &String) -> Server {
        Server::new(url.as_str())
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // URLs may hold a password: only where they point.
        let hosts: Vec<String> = match &self.nodes {
            Nodes::One(url) => vec![host_of(url)],
            Nodes::Cluster(nodes) => nodes.iter().map(|n| host_of(n)).collect(),
        };
        f.debug_struct("Server")
            .field("cluster", &matches!(self.nodes, Nodes::Cluster(_)))
            .field("hosts", &hosts)
            .field("root_certificate", &self.root_certificate.is_some())
            .finish()
    }
}

/// `host:port` of a URL (what follows the scheme and any `user:password@`).
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split('/').next().unwrap_or("").to_owned()
}

/// A checked client: one server's or a cluster's (made once per store, so
/// the sizes do not matter).
#[allow(clippy::large_enum_variant)]
pub(super) enum Client {
    One(::redis::Client),
    Cluster(ClusterClient),
}

impl Client {
    /// Opens a connection (the caller bounds the wait).
    pub(super) async fn connect(&self, op_timeout: Duration) -> Result<Connection, RedisError> {
        match self {
            Client::One(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(op_timeout))
                    .set_response_timeout(None);
                Ok(Connection::One(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
            Client::Cluster(client) => {
                Ok(Connection::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// Whether it is a cluster's.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Client::Cluster(_))
    }

    /// Where it points, for `Debug`.
    pub(super) fn describe(&self) -> String {
        match self {
            Client::One(client) => client.get_connection_info().addr().to_string(),
            Client::Cluster(_) => "a Redis Cluster".to_owned(),
        }
    }
}

/// A connection to one server or to a cluster: what the stores' commands
/// and scripts run on.
#[derive(Clone)]
pub(super) enum Connection {
    One(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::One(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::One(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::One(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

//! The fleet stores against a real 3-master Redis Cluster and a real
//! TLS-only `redis-server`, both started on free loopback ports
//! (`redis-server --cluster-enabled yes` × 3 + `redis-cli --cluster
//! create`; `redis-server --tls-port` with certificates made at test time
//! by the `openssl` command). Without the binaries each test says it
//! skipped — except in CI, where that is a failure (`.ci/run` installs
//! Debian's `redis-server`, `redis-tools` and `openssl`).
#![cfg(feature = "redis")]

#[allow(dead_code)]
#[path = "../examples/fleet/main.rs"]
mod fleet;
mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dephase::budget::RetryBudget;
use dephase::cache::CacheLayer;
use dephase::redis::error::GateError;
use dephase::redis::{FleetBudget, FleetGate, FleetPacer, RedisStore, Server};
use tower::{Layer, ServiceExt};

/// The binaries the tests need, or `None` after saying they skip (a
/// failure in CI).
fn tools(names: &[&str]) -> Option<Vec<PathBuf>> {
    let found: Vec<Option<PathBuf>> = names
        .iter()
        .map(|name| {
            if *name == "redis-server" {
                return fleet::server::binary();
            }
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        })
        .collect();
    if found.iter().all(Option::is_some) {
        return Some(found.into_iter().flatten().collect());
    }
    let missing = format!(
        "skipped: this test needs {names:?} on the PATH (Debian: redis-server, redis-tools, openssl)"
    );
    assert!(std::env::var_os("CI").is_none(), "CI is set: {missing}");
    eprintln!("{missing}");
    None
}

/// A directory of its own under the system's temporary one, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dephase-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Servers killed on drop.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(program: &Path, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits until something listens on `port`.
fn listening(port: u16) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "port {port} never listened"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn redis_server(binary: &Path, args: &[String]) -> Child {
    Command::new(binary)
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--loglevel", "warning", "--daemonize", "no"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Three masters on free ports, their slots assigned, the cluster `ok`.
fn start_cluster(server: &Path, cli: &Path, dir: &Scratch) -> (Servers, Vec<String>) {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let servers = Servers(
        ports
            .iter()
            .map(|port| {
                redis_server(
                    server,
                    &[
                        "--port".into(),
                        port.to_string(),
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        format!("nodes-{port}.conf"),
                        "--dir".into(),
                        dir.0.display().to_string(),
                    ],
                )
            })
            .collect(),
    );
    for port in &ports {
        listening(*port);
    }
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut args: Vec<&str> = vec!["--cluster", "create"];
    args.extend(nodes.iter().map(String::as_str));
    args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    run(cli, &args);
    let started = Instant::now();
    for port in &ports {
        while !run(cli, &["-p", &port.to_string(), "cluster", "info"]).contains("cluster_state:ok")
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the cluster never came up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    (
        servers,
        nodes.iter().map(|n| format!("redis://{n}/")).collect(),
    )
}

/// The gate, the pacer, the budget and the cache on a 3-master cluster:
/// each script touches one slot, and their keys land on different nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_stores_work_on_a_redis_cluster() {
    let Some(tools) = tools(&["redis-server", "redis-cli"]) else {
        return;
    };
    let dir = Scratch::new("cluster");
    let (_servers, nodes) = start_cluster(&tools[0], &tools[1], &dir);
    let cluster = || Server::cluster(nodes.clone());

    // The gate: at most 2 holders of 12 jobs over 3 replicas.
    let gates: Vec<FleetGate> = (0..3)
        .map(|_| {
            FleetGate::builder(cluster(), "jobs")
                .slots(2)
                .lease_ttl(Duration::from_millis(900))
                .op_timeout(Duration::from_millis(250))
                .restart_grace(false)
                .build()
                .unwrap()
        })
        .collect();
    let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let jobs: Vec<_> = (0..12)
        .map(|i| {
            let (gate, now, max) = (gates[i % 3].clone(), now.clone(), max.clone());
            tokio::spawn(async move {
                let slot = gate.acquire().await.unwrap();
                let holding = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(holding, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                slot.release().await;
            })
        })
        .collect();
    for job in jobs {
        job.await.unwrap();
    }
    assert!(max.load(Ordering::SeqCst) <= 2);
    assert_eq!(gates.iter().map(|g| g.stats().acquired).sum::<u64>(), 12);

    // The pacer: 11 turns at 100 a second take 100 ms or more.
    let pacer = FleetPacer::builder(cluster(), "warmup")
        .rate(100, Duration::from_secs(1))
        .op_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    for _ in 0..11 {
        pacer.wait().await.unwrap();
    }
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(pacer.stats().local_turns, 0, "every turn from the cluster");

    // The budget: tokens leased from the cluster.
    let budget = FleetBudget::builder(cluster(), "retries")
        .reserve_per_sec(100.0)
        .sync_every(Duration::from_millis(20))
        .op_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    budget.deposit();
    let started = Instant::now();
    while budget.withdraw().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            budget.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(budget.stats().failed_syncs, 0);

    // The cache: one load for many keys, spread over the masters' slots.
    let store: RedisStore<String, String> = RedisStore::builder(cluster())
        .prefix("cached:")
        .ttl(Duration::from_secs(60))
        .early_refresh(false)
        .op_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let origin = {
        let loads = loads.clone();
        tower::service_fn(move |key: String| {
            loads.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, std::io::Error>(format!("value of {key}")) }
        })
    };
    let service = CacheLayer::new(store.clone(), |k: &String| Some(k.clone())).layer(origin);
    for round in 0..2 {
        for key in ["a", "b", "c", "d", "e", "f"] {
            let value = service.clone().oneshot(key.to_string()).await.unwrap();
            assert_eq!(value, format!("value of {key}"), "round {round}");
        }
    }
    assert_eq!(loads.load(Ordering::SeqCst), 6, "the second round hit");
    assert_eq!(store.stats().degraded, 0);
}

/// A CA and a certificate for 127.0.0.1 it signed, and another CA.
fn certificates(openssl: &Path, dir: &Scratch) {
    let p = |name: &str| dir.path(name).display().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        let (key, crt, subject) = (
            p(&format!("{ca}.key")),
            p(&format!("{ca}.crt")),
            format!("/CN=dephase test {ca}"),
        );
        args.extend([
            "-keyout", &key, "-out", &crt, "-days", "1", "-subj", &subject,
        ]);
        run(openssl, &args);
    }
    let (key, csr, crt, ext) = (
        p("server.key"),
        p("server.csr"),
        p("server.crt"),
        p("server.ext"),
    );
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
    run(openssl, &args);
    let (ca_crt, ca_key) = (p("ca.crt"), p("ca.key"));
    run(
        openssl,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "1",
            "-extfile",
            &ext,
        ],
    );
}

/// `rediss://` with the server's CA works; with another CA it is refused,
/// and the `WARN` says why.
#[tokio::test]
async fn tls_with_the_right_ca_works_and_a_wrong_ca_is_refused_clearly() {
    let Some(tools) = tools(&["redis-server", "openssl"]) else {
        return;
    };
    let dir = Scratch::new("tls");
    certificates(&tools[1], &dir);
    let port = free_port();
    let p = |name: &str| dir.path(name).display().to_string();
    let _server = Servers(vec![redis_server(
        &tools[0],
        &[
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            p("server.crt"),
            "--tls-key-file".into(),
            p("server.key"),
            "--tls-ca-cert-file".into(),
            p("ca.crt"),
            "--tls-auth-clients".into(),
            "no".into(),
        ],
    )]);
    listening(port);
    let url = format!("rediss://127.0.0.1:{port}/");
    let ca = std::fs::read(dir.path("ca.crt")).unwrap();
    let gate = FleetGate::builder(Server::new(url.as_str()).root_certificate(ca), "tls")
        .restart_grace(false)
        .op_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let slot = gate.acquire().await.unwrap();
    assert!(slot.fence().is_some(), "a slot over TLS");
    slot.release().await;

    let (captured, _guard) = support::capture();
    let other = std::fs::read(dir.path("other-ca.crt")).unwrap();
    let refused = FleetGate::builder(Server::new(url.as_str()).root_certificate(other), "tls")
        .restart_grace(false)
        .op_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let error = refused.acquire().await.unwrap_err();
    assert!(matches!(error, GateError::Unavailable { .. }), "{error}");
    let warned = captured.events_with("dephase::redis", "Redis is unreachable");
    assert_eq!(warned.len(), 1);
    let reason = format!("{:?}", warned[0].get("error"));
    eprintln!("the WARN says: {reason}");
    assert!(
        reason.contains("certificate") || reason.contains("UnknownIssuer"),
        "the WARN says why: {reason}"
    );
}

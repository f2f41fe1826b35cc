//! The Redis store against a real `redis-server`, through a TCP proxy on
//! loopback that can hold the replies of one connection: a command runs on
//! the server while its caller never hears back. Redis runs on the real
//! clock; every wait is bounded (seconds).

#[path = "../../examples/fleet/server.rs"]
mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dephase::BoxError;
use dephase::cache::CacheLayer;
use dephase::redis::RedisStore;
use server::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};
use tower::{Layer, Service, ServiceExt};

/// The server, or `None` after saying that the test is skipped (a failure
/// in CI).
fn server() -> Option<RedisServer> {
    server::for_test()
}

/// A proxy in front of a Redis server. Once armed, it starts holding the
/// server's replies when the client sends a script call (`EVALSHA`): the
/// script runs, its caller hears nothing until [`release`](Self::release).
#[derive(Clone)]
struct Proxy {
    port: u16,
    armed: Arc<AtomicBool>,
    holding: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<u8>>>,
    released: Arc<tokio::sync::Notify>,
}

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            port: listener.local_addr().unwrap().port(),
            armed: Arc::default(),
            holding: Arc::default(),
            held: Arc::default(),
            released: Arc::default(),
        };
        let this = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
                tokio::spawn(this.clone().pipe(client, upstream));
            }
        });
        proxy
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Hold every reply after the next script call.
    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    fn is_holding(&self) -> bool {
        self.holding.load(Ordering::SeqCst)
    }

    /// Forwards what was held and stops holding.
    fn release(&self) {
        self.armed.store(false, Ordering::SeqCst);
        self.holding.store(false, Ordering::SeqCst);
        self.released.notify_waiters();
    }

    async fn pipe(self, client: TcpStream, upstream: TcpStream) {
        let (mut from_client, mut to_client) = client.into_split();
        let (mut from_upstream, mut to_upstream) = upstream.into_split();
        let requests = {
            let this = self.clone();
            async move {
                let mut buffer = vec![0u8; 64 * 1024];
                loop {
                    let n = match from_client.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let chunk = &buffer[..n];
                    if this.armed.load(Ordering::SeqCst)
                        && chunk.windows(7).any(|w| w.eq_ignore_ascii_case(b"EVALSHA"))
                    {
                        this.holding.store(true, Ordering::SeqCst);
                    }
                    if to_upstream.write_all(chunk).await.is_err() {
                        return;
                    }
                }
            }
        };
        let replies = async move {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let read = tokio::select! {
                    read = from_upstream.read(&mut buffer) => read,
                    () = self.released.notified() => Ok(usize::MAX),
                };
                let chunk = match read {
                    Ok(0) | Err(_) => return,
                    Ok(usize::MAX) => Vec::new(), // released: flush below
                    Ok(n) => buffer[..n].to_vec(),
                };
                let mut held = self.held.lock().await;
                held.extend_from_slice(&chunk);
                if !self.is_holding() {
                    let out = std::mem::take(&mut *held);
                    if to_client.write_all(&out).await.is_err() {
                        return;
                    }
                }
            }
        };
        tokio::join!(requests, replies);
    }
}

/// An origin gated by a semaphore (one permit per call) that counts its
/// calls and answers `value:<key>:<call>`; keys starting with `fail` fail.
#[derive(Clone)]
struct Origin {
    calls: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

impl Origin {
    fn new(open: bool) -> Self {
        let gate = Semaphore::new(if open { Semaphore::MAX_PERMITS / 2 } else { 0 });
        Origin {
            calls: Arc::default(),
            gate: Arc::new(gate),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn service(
        &self,
    ) -> impl Service<String, Response = String, Error = BoxError, Future: Send> + Clone + Send + 'static
    {
        let origin = self.clone();
        tower::service_fn(move |key: String| {
            let origin = origin.clone();
            async move {
                let call = origin.calls.fetch_add(1, Ordering::SeqCst) + 1;
                origin.gate.acquire().await?.forget();
                if key.starts_with("fail") {
                    return Err::<String, BoxError>("origin failed".into());
                }
                Ok(format!("value:{key}:{call}"))
            }
        })
    }
}

fn store(url: &str) -> dephase::cache::StoreBuilder<dephase::redis::Redis<String, String>> {
    RedisStore::builder(url)
        .prefix("adv:")
        .ttl(Duration::from_secs(60))
        .early_refresh(false)
        .lease_ttl(Duration::from_secs(600))
        .op_timeout(Duration::from_secs(5))
        .seed(11)
}

fn cached(
    store: &RedisStore<String, String>,
    origin: &Origin,
) -> impl Service<String, Response = String, Error = BoxError, Future: Send> + Clone + Send + 'static
{
    CacheLayer::new(store.clone(), |k: &String| Some(k.clone())).layer(origin.service())
}

/// Waits (real time, at most 10 s) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

fn exists(server: &RedisServer, key: &str) -> bool {
    server.command(&format!("EXISTS {key}")).unwrap() == ":1"
}

/// A caller dropped after the lease script ran but before its reply came
/// back leaves no lease behind (fault 3: the lease stayed, owned by nobody,
/// for the whole `lease_ttl`, and every replica waited on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_dropped_before_the_lease_reply_leaves_no_lease() {
    let Some(server) = server() else { return };
    let port: u16 = server
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let proxy = Proxy::start(port).await;
    let origin = Origin::new(true);
    let store = store(&proxy.url()).build().unwrap();
    let service = cached(&store, &origin);
    // Every script is loaded once (a load, a failed load), so that the
    // held call below runs as it is.
    assert_eq!(
        service.clone().oneshot("warm".into()).await.unwrap(),
        "value:warm:1"
    );
    assert!(service.clone().oneshot("fail-warm".into()).await.is_err());

    proxy.arm();
    let caller = tokio::spawn(service.clone().oneshot("k".to_string()));
    until("the lease script ran", || {
        proxy.is_holding() && exists(&server, "adv:{k}:l")
    })
    .await;
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    until("the orphaned lease is freed", || {
        !exists(&server, "adv:{k}:l")
    })
    .await;
    proxy.release();
    assert_eq!(
        origin.calls(),
        2,
        "the dropped caller never reached the origin"
    );
    assert_eq!(store.flights_in_progress(), 0);

    // Another replica fills the key at once, without waiting on a lease.
    let other = store_direct(&server).build().unwrap();
    assert_eq!(
        cached(&other, &origin).oneshot("k".into()).await.unwrap(),
        "value:k:3"
    );
    assert_eq!(other.stats().waited, 0);
}

fn store_direct(
    server: &RedisServer,
) -> dephase::cache::StoreBuilder<dephase::redis::Redis<String, String>> {
    store(&server.url()).lease_wait(Duration::from_secs(30))
}

/// A delete also invalidates the outstanding lease, as memcache's does
/// (fault 7): a load that started before the invalidation does not write
/// its value, and a request after it, in the same replica, does not join
/// the old load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_during_a_load_refuses_its_write() {
    let Some(server) = server() else { return };
    let origin = Origin::new(false);
    let store = store_direct(&server).build().unwrap();
    let service = cached(&store, &origin);
    let before = tokio::spawn(service.clone().oneshot("k".to_string()));
    until("the load started", || origin.calls() == 1).await;
    store.invalidate(&"k".to_string()).await.unwrap();
    let after = tokio::spawn(service.clone().oneshot("k".to_string()));
    until("a new load started", || origin.calls() == 2).await;
    origin.gate.add_permits(2);
    assert_eq!(before.await.unwrap().unwrap(), "value:k:1");
    assert_eq!(after.await.unwrap().unwrap(), "value:k:2");
    // Only the load that started after the invalidation wrote.
    let other = store_direct(&server).build().unwrap();
    assert_eq!(
        cached(&other, &origin).oneshot("k".into()).await.unwrap(),
        "value:k:2"
    );
    assert_eq!(origin.calls(), 2);

    // With nobody asking after the invalidation, nothing is written.
    let before = tokio::spawn(service.clone().oneshot("j".to_string()));
    until("the load started", || origin.calls() == 3).await;
    store.invalidate(&"j".to_string()).await.unwrap();
    origin.gate.add_permits(1);
    assert_eq!(before.await.unwrap().unwrap(), "value:j:3");
    assert!(
        !exists(&server, "adv:{j}:v"),
        "the fenced value was written"
    );
}

/// The Redis cache over `ConcurrencyLimit(1)` and a one-slot `Buffer`,
/// driven with `ready().await?.call(req)`: the flight calls the origin
/// through the instance that was readied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_cache_sends_the_instance_it_readied() {
    let Some(server) = server() else { return };
    let origin = Origin::new(true);
    let store = store_direct(&server).build().unwrap();
    let layer = CacheLayer::new(store.clone(), |k: &String| Some(k.clone()));
    let check = |mut svc: tower::util::BoxCloneService<String, String, BoxError>| async move {
        for i in 0..6 {
            let key = format!("r{}", i % 3);
            let ready = svc.ready().await.unwrap();
            assert!(ready.call(key).await.unwrap().starts_with("value:r"));
        }
        let herd: Vec<_> = (0..10)
            .map(|i| tokio::spawn(svc.clone().oneshot(format!("h{}", i % 2))))
            .collect();
        for caller in herd {
            caller.await.unwrap().unwrap();
        }
    };
    let limited = layer.layer(tower::limit::ConcurrencyLimit::new(origin.service(), 1));
    tokio::time::timeout(
        Duration::from_secs(20),
        check(tower::util::BoxCloneService::new(limited)),
    )
    .await
    .expect("hung over ConcurrencyLimit(1)");
    let buffered = layer.layer(tower::buffer::Buffer::new(origin.service(), 1));
    tokio::time::timeout(
        Duration::from_secs(20),
        check(tower::util::BoxCloneService::new(buffered)),
    )
    .await
    .expect("hung over a Buffer");
}

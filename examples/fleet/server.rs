//! A throwaway `redis-server` on a free loopback port, for the fleet
//! example, the Redis tests and the Redis bench.
//!
//! The binary is `$DEPHASE_REDIS_SERVER` or `redis-server` on the `PATH`
//! (Debian's package `redis-server`, which `.ci/run` installs). Without it,
//! [`RedisServer::start`] returns `Ok(None)` and the caller says that it
//! skipped. No data is saved to disk; the server is killed when dropped.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
}

/// Where the `redis-server` binary is, if anywhere.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("DEPHASE_REDIS_SERVER") {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("redis-server"))
        .find(|path| path.is_file())
}

/// The line a caller prints when there is no server to test against.
pub const SKIPPED: &str = "skipped: no redis-server binary (install Debian's redis-server package, as .ci/run does, or set DEPHASE_REDIS_SERVER)";

/// A server for a test: `None` (after printing [`SKIPPED`]) when there is no
/// `redis-server` binary — except in CI (`CI` set), where a test that
/// cannot run is a failure, not a skip.
pub fn for_test() -> Option<RedisServer> {
    let started = RedisServer::start().expect("redis-server failed to start");
    if started.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set and this test needs a Redis server: {SKIPPED}"
        );
        eprintln!("{SKIPPED}");
    }
    started
}

impl RedisServer {
    /// Starts a server on a free loopback port; `Ok(None)` if there is no
    /// `redis-server` binary.
    pub fn start() -> io::Result<Option<RedisServer>> {
        let Some(binary) = binary() else {
            return Ok(None);
        };
        let mut last = None;
        // A port found free can be taken by someone else before the server
        // binds it: try a few.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut server = RedisServer {
                binary: binary.clone(),
                port,
                child: None,
            };
            match server.restart() {
                Ok(()) => return Ok(Some(server)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    /// The URL of the server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server: its port refuses connections until [`restart`](Self::restart).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again, empty, on the same port, and waits until
    /// it answers `PING`.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--loglevel", "warning", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if self
                .command("PING")
                .is_ok_and(|reply| reply.starts_with("+PONG"))
            {
                return Ok(());
            }
            let exited = match &mut self.child {
                Some(child) => child.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                self.child = None;
                return Err(io::Error::other(format!("redis-server exited: {status}")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        Err(io::Error::other(
            "redis-server did not answer PING within 10 s",
        ))
    }

    /// Sends one inline command and returns the first line of the reply.
    pub fn command(&self, line: &str) -> io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(format!("{line}\r\n").as_bytes())?;
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            if stream.read(&mut byte)? == 0 {
                break;
            }
            reply.push(byte[0]);
        }
        Ok(String::from_utf8_lossy(&reply).trim_end().to_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

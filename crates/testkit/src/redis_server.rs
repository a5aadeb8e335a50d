//! A Redis server of the test's own (`redis-server` as a child process on a free loopback port,
//! nothing saved to disk), for tests that stop and restart Redis: the shared test Redis of
//! [`crate::services`] must never be restarted. Killed on drop.
//!
//! `$DAVPUSH_TEST_REDIS_SERVER` names the binary (default `redis-server` from `PATH`). When it is
//! missing the test fails, or is skipped when skipping was chosen ([`crate::require`]).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `redis-server` of the test's own.
#[derive(Debug)]
pub struct RedisServer {
    bin: String,
    port: u16,
    child: Option<Child>,
}

fn binary() -> String {
    std::env::var("DAVPUSH_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

impl RedisServer {
    /// Starts a fresh server on a free port; `None` (skip) when `redis-server` is not installed
    /// and skipping was chosen.
    pub async fn start() -> Option<RedisServer> {
        let bin = binary();
        if Command::new(&bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            crate::require::missing(&format!("{bin} is not installed"), "apt-get install redis-server");
            return None;
        }
        // A port taken meanwhile by someone else makes the server exit: try another one.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
            let mut server = RedisServer { bin: bin.clone(), port, child: None };
            if server.spawn_and_wait().await {
                return Some(server);
            }
        }
        panic!("{bin} did not start on any of 5 free ports");
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL: connections break as in a crash) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts a fresh one (empty, no clients) on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        assert!(self.spawn_and_wait().await, "{} did not start again on port {}", self.bin, self.port);
    }

    /// A new connection to this server, for the test's own commands.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).expect("a valid URL");
        client.get_multiplexed_async_connection().await.expect("connect to the test's redis-server")
    }

    /// How many connections are subscribed to `channel` (`PUBSUB NUMSUB`).
    pub async fn subscribers(&self, channel: &str) -> i64 {
        let mut c = self.connection().await;
        let counts: Vec<(String, i64)> =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query_async(&mut c).await.expect("PUBSUB NUMSUB");
        counts.first().map_or(0, |(_, n)| *n)
    }

    /// The names of the connected clients (`CLIENT LIST`, those that set one).
    pub async fn client_names(&self) -> Vec<String> {
        let mut c = self.connection().await;
        let list: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut c).await.expect("CLIENT LIST");
        list.lines()
            .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("name=")))
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Starts the process and waits (at most 10 s) until it answers; `false` if it exited.
    async fn spawn_and_wait(&mut self) -> bool {
        let port = self.port.to_string();
        let child = Command::new(&self.bin)
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin));
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            if ping(self.port).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{} on port {} did not answer within 10 s", self.bin, self.port);
    }
}

async fn ping(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"PING\r\n").await?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(&buf == b"+PONG\r\n")
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), attempt).await, Ok(Ok(true)))
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

//! The real PostgreSQL and Redis the scale-out tests use (`.ci/run` starts them).
//!
//! `$DAVPUSH_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1/test`) and
//! `$DAVPUSH_TEST_REDIS` (default `redis://127.0.0.1:6379`) name them. An unreachable service
//! fails the calling test, or skips it (`None`) when skipping was chosen ([`crate::require`]).

use std::time::Duration;

use sqlx::Connection;

/// Fails the test, or records a skip when skipping was chosen (the caller then returns early).
#[track_caller]
fn unavailable(what: &str, url: &str, why: &str) {
    let var = if what == "Redis" { "DAVPUSH_TEST_REDIS" } else { "DAVPUSH_TEST_POSTGRES" };
    let package = if what == "Redis" { "redis-server" } else { "postgresql" };
    crate::require::missing(
        &format!("{what} at {url} is unreachable ({why})"),
        &format!("apt-get install {package} and start it, or set {var} to one that runs"),
    );
}

/// A random lowercase suffix for names of schemas and channels.
pub fn unique_suffix() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS has randomness");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A schema of its own in the test database, dropped by [`PgSchema::drop_schema`] (or, as a
/// fallback, when dropped).
#[derive(Debug)]
pub struct PgSchema {
    base: String,
    name: String,
    dropped: bool,
}

impl PgSchema {
    /// A URL whose connections use only this schema.
    pub fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options[search_path]={}", self.base, self.name)
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the schema and everything in it.
    pub async fn drop_schema(mut self) {
        self.dropped = true;
        drop_now(&self.base, &self.name).await;
    }
}

async fn drop_now(base: &str, name: &str) {
    if let Ok(mut c) = sqlx::PgConnection::connect(base).await {
        let sql = format!("DROP SCHEMA IF EXISTS {name} CASCADE");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
        let _ = c.close().await;
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (base, name) = (self.base.clone(), self.name.clone());
        // A test that panicked: clean up from a thread of its own (no runtime may be running here).
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(drop_now(&base, &name));
            }
        })
        .join();
    }
}

/// Creates a fresh schema in the test PostgreSQL database, or skips (see the module documentation).
pub async fn postgres_schema() -> Option<PgSchema> {
    let base =
        std::env::var("DAVPUSH_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1/test".to_owned());
    let connect = tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&base)).await;
    let mut conn = match connect {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            unavailable("PostgreSQL", &base, &e.to_string());
            return None;
        }
        Err(_) => {
            unavailable("PostgreSQL", &base, "timed out");
            return None;
        }
    };
    let name = format!("davpush_test_{}", unique_suffix());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
        .execute(&mut conn)
        .await
        .expect("create a test schema");
    let _ = conn.close().await;
    Some(PgSchema { base, name, dropped: false })
}

/// The test Redis's URL if it answers, or skips (see the module documentation).
pub async fn redis_url() -> Option<String> {
    let url = std::env::var("DAVPUSH_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let addr = url
        .strip_prefix("redis://")
        .map(|rest| rest.split(['/', '?']).next().unwrap_or(rest))
        .map(|hp| hp.rsplit('@').next().unwrap_or(hp).to_owned())
        .unwrap_or_default();
    let ping = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(b"PING\r\n").await?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await?;
        if &buf == b"+PONG\r\n" {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("unexpected answer {:?}", String::from_utf8_lossy(&buf))))
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), ping).await {
        Ok(Ok(())) => Some(url),
        Ok(Err(e)) => {
            unavailable("Redis", &url, &e.to_string());
            None
        }
        Err(_) => {
            unavailable("Redis", &url, "timed out");
            None
        }
    }
}

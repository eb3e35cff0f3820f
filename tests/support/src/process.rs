//! Processes of a test's own, on free loopback ports, stopped by PID: `redis-server`, a PostgreSQL cluster, the
//! service binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;

use tokio::net::TcpStream;
use tonic::transport::Channel;
use trading_monitor::storage;
use uuid::Uuid;

use crate::TestApp;
use crate::app::{serve_args, spawn_with_args};

/// A `redis-server` of this test's own on a free port, killed when dropped.
pub struct RedisServer {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl RedisServer {
    /// Starts one on `port` (a free one if `None`), waiting until it accepts connections.
    pub async fn start(port: Option<u16>) -> RedisServer {
        let port =
            port.unwrap_or_else(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
        let args = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
        let child = Process::new("redis-server")
            .args(args)
            .args(["--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let server = RedisServer { child, port };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not start on port {port}");
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends a signal (`-STOP` freezes it: connections stay open, nothing answers; `-CONT` resumes it).
    pub fn signal(&self, signal: &str) {
        let status = Process::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Kills it and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `redis-cli -p <port> <args>` and returns its output.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Process::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A PostgreSQL cluster of this test's own (initdb + pg_ctl on a free loopback port, in a temporary directory),
/// for tests that stop and restart PostgreSQL; stopped and removed when dropped. The server programs run as the
/// `postgres` user when the tests run as root (PostgreSQL refuses to run as root).
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    /// Its port.
    pub port: u16,
}

impl PgCluster {
    /// A new, running cluster (trust authentication, fsync off: it holds only test data).
    pub fn start() -> PgCluster {
        let bindir = Process::new("pg_config").arg("--bindir").output().expect("pg_config is installed");
        let bin = PathBuf::from(String::from_utf8_lossy(&bindir.stdout).trim());
        let dir = std::env::temp_dir().join(format!("tm-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cluster = PgCluster { dir, bin, port };
        cluster.chown();
        let data = cluster.dir.join("data");
        let status = cluster
            .as_postgres(&cluster.bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb failed");
        cluster.resume();
        cluster
    }

    fn chown(&self) {
        if is_root() {
            let _ = Process::new("chown").args(["-R", "postgres"]).arg(&self.dir).status();
        }
    }

    fn as_postgres(&self, program: &Path) -> Process {
        if is_root() {
            let mut command = Process::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Process::new(program)
        }
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let status = self
            .as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(status.success(), "pg_ctl {args:?} failed");
    }

    /// Starts it (again), waiting until it accepts connections.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
            self.port,
            self.dir.display()
        );
        self.pg_ctl(&["-w", "-o", &options, "start"]);
    }

    /// Stops it at once, as a crash would (`-m immediate`).
    pub fn kill(&self) {
        self.pg_ctl(&["-m", "immediate", "stop"]);
    }

    /// Makes it what a promoted standby would be: the same cluster (system identifier, databases) on a new
    /// timeline. Stopped, restarted in standby mode (`standby.signal`, no primary to follow) and promoted, as
    /// `pg_ctl promote` does to a real standby at failover.
    pub fn fail_over(&self) {
        self.pg_ctl(&["-w", "-m", "fast", "stop"]);
        let signal = self.dir.join("data").join("standby.signal");
        std::fs::write(&signal, b"").unwrap();
        self.chown();
        self.resume();
        self.pg_ctl(&["-w", "promote"]);
    }

    /// The URL of `database` on it.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable", self.port)
    }

    /// A server (with the default test settings) on a new database `database` of this cluster.
    pub async fn serve(&self, database: &str) -> TestApp {
        storage::create_database_if_missing(&self.url(database)).await.unwrap();
        let mut args = serve_args(database);
        args.database.database_url = self.url(database);
        // The name given to TestApp is not a database of the shared cluster: dropping it there at the end is
        // harmless (this cluster goes as a whole).
        spawn_with_args(args, format!("{database}_{}", Uuid::new_v4().simple())).await
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self
            .as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Process::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A child process, killed when dropped (should a test fail half-way).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the gRPC server at `port` reports SERVING (10 s at most).
pub async fn until_serving(port: u16) -> Channel {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect_lazy();
    let mut health = HealthClient::new(channel.clone());
    for _ in 0..100 {
        if let Ok(r) = health.check(HealthCheckRequest { service: String::new() }).await
            && r.into_inner().status() == ServingStatus::Serving
        {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server never became SERVING");
}

/// A free loopback port (free when asked: a test binds it at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Sends SIGTERM to `child` and waits (at most `limit`) for it to exit.
pub async fn terminate(child: &mut KillOnDrop, limit: Duration) -> std::process::ExitStatus {
    let signalled = std::time::Instant::now();
    let status = Process::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            return exit;
        }
        assert!(signalled.elapsed() < limit, "still running {limit:?} after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! Two replicas on a local Redis Cluster (three primaries, three replicas, on loopback ports this test owns):
//! users on every primary, a primary killed and failed over while reads go on: no read fails, and no read is
//! staler than the bound.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use trading_monitor::pb;
use uuid::Uuid;

use trading_testkit::*;

/// A Redis Cluster of six `redis-server`s (3 primaries with one replica each), stopped by PID when dropped.
struct RedisCluster {
    nodes: Vec<(u16, Child)>,
    dir: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl RedisCluster {
    fn start() -> RedisCluster {
        let dir = std::env::temp_dir().join(format!("tm-cluster-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let (port, bus) = (free_port(), free_port());
            let config = format!("nodes-{port}.conf");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes"])
                .args(["--cluster-port", &bus.to_string(), "--cluster-config-file", &config])
                .args(["--cluster-node-timeout", "1000", "--repl-diskless-sync-delay", "0"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server runs");
            nodes.push((port, child));
        }
        let cluster = RedisCluster { nodes, dir };
        for (port, _) in &cluster.nodes {
            wait_until(Duration::from_secs(10), || redis_cli(*port, &["PING"]) == "PONG");
        }
        let addresses: Vec<String> = cluster.nodes.iter().map(|(p, _)| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stdout));
        cluster.wait_ok();
        cluster
    }

    /// Every node as a seed: a client whose only seed is the node that died cannot find the cluster again (fred
    /// rebuilds its routing from the configured seeds after losing a connection).
    fn url(&self) -> String {
        let (first, _) = &self.nodes[0];
        let others: Vec<String> = self.nodes[1..].iter().map(|(p, _)| format!("node=127.0.0.1:{p}")).collect();
        format!("redis-cluster://127.0.0.1:{first}?{}", others.join("&"))
    }

    /// Waits until every live node says the cluster is healthy (every slot served).
    fn wait_ok(&self) {
        wait_until(Duration::from_secs(30), || {
            self.nodes.iter().all(|(port, _)| redis_cli(*port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
    }

    /// Ports of the current primaries (live nodes only).
    fn primaries(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .map(|(port, _)| *port)
            .filter(|port| redis_cli(*port, &["ROLE"]).starts_with("master"))
            .collect()
    }

    /// Kills a node with SIGKILL and forgets it.
    fn kill(&mut self, port: u16) {
        let i = self.nodes.iter().position(|(p, _)| *p == port).expect("a node of this cluster");
        let (_, mut child) = self.nodes.remove(i);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_until(within: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready() {
        assert!(Instant::now() < deadline, "not ready within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The primary (by port) that owns `key`: the one that answers a read of it without a MOVED redirect.
fn owner(primaries: &[u16], key: &str) -> u16 {
    *primaries.iter().find(|port| !redis_cli(**port, &["EXISTS", key]).starts_with("MOVED")).expect("an owner")
}

async fn total_syncs(app: &TestApp, user: Uuid) -> Result<i64, tonic::Status> {
    let request = pb::GetReconciliationStatusRequest::default();
    let response = app.recon().get_reconciliation_status(authed(request, &token(user, &[]))).await?;
    Ok(response.into_inner().total_syncs)
}

/// Writes a sync on `writer`, then reads on `reader` until it shows: how long that took.
async fn staleness(reader: &TestApp, writer: &TestApp, user: Uuid) -> Duration {
    let before = total_syncs(reader, user).await.unwrap();
    writer.submit(sync(user, "10000", vec![], vec![])).await.unwrap();
    let acknowledged = Instant::now();
    while total_syncs(reader, user).await.unwrap() <= before {
        assert!(acknowledged.elapsed() < Duration::from_secs(20), "never seen");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    acknowledged.elapsed()
}

#[tokio::test]
async fn on_a_redis_cluster_a_failover_during_reads_fails_no_read_and_serves_nothing_staler_than_the_bound() {
    let mut cluster = RedisCluster::start();
    let ttl = Duration::from_secs(5);
    let (a, b) = spawn_replicas_with(|args| args.cache.redis_url = cluster.url()).await;
    until_hearing(&a).await;
    until_hearing(&b).await;
    // Users until every primary owns some.
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    let mut users: Vec<(Uuid, u16)> = Vec::new();
    while users.len() < 30 || primaries.iter().any(|p| !users.iter().any(|(_, o)| o == p)) {
        let user = Uuid::new_v4();
        b.submit(sync(user, "10000", vec![], vec![])).await.unwrap();
        users.push((user, owner(&primaries, &format!("{}:gen:{{u:{user}}}", b.key_prefix))));
    }

    // A reader on A that never stops until the end, counting failed reads.
    let (stop, failed, reads) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = {
        let (stop, failed, reads, ids) =
            (stop.clone(), failed.clone(), reads.clone(), users.iter().map(|(u, _)| *u).collect::<Vec<_>>());
        let mut client = a.recon();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for user in &ids {
                    let request = pb::GetReconciliationStatusRequest::default();
                    if client.get_reconciliation_status(authed(request, &token(*user, &[]))).await.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let mut before = Vec::new();
    for (user, _) in users.iter().take(6) {
        before.push(staleness(&a, &b, *user).await);
    }

    // Kill the primary owning the first user; write to users of every primary while it fails over.
    let victim = users[0].1;
    cluster.kill(victim);
    let killed = Instant::now();
    let mut during = Vec::new();
    for primary in &primaries {
        let (user, _) = users.iter().find(|(_, o)| o == primary).unwrap();
        during.push(staleness(&a, &b, *user).await);
    }
    tokio::task::spawn_blocking({
        let ports: Vec<u16> = cluster.nodes.iter().map(|(p, _)| *p).collect();
        move || {
            wait_until(Duration::from_secs(30), || {
                ports.iter().all(|port| redis_cli(*port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
            })
        }
    })
    .await
    .unwrap();
    let failover = killed.elapsed();
    until_hearing(&a).await;
    until_hearing(&b).await;
    // The first write after the failover may still meet a stale slot map (a MOVED answer makes fred refresh it,
    // and the invalidation is retried): bound by the TTL like the writes during it.
    during.push(staleness(&a, &b, users[0].0).await);
    let mut after = Vec::new();
    for (user, _) in users.iter().take(6) {
        after.push(staleness(&a, &b, *user).await);
    }
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();

    let report = format!("failover {failover:?}; staleness before {before:?}, during {during:?}, after {after:?}");
    println!("{report}"); // shown with --nocapture

    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed reads out of {}: {report}", reads.load(Ordering::Relaxed));
    assert!(before.iter().chain(&after).all(|d| *d <= Duration::from_millis(100)), "{report}");
    assert!(during.iter().all(|d| *d <= ttl), "{report}");
    assert_ne!(cluster.primaries(), primaries, "a replica took over: {report}");
}

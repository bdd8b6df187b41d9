//! More than one machine: two server replicas share their sessions through a real
//! `redis-server` (the Debian package; this test starts it on a free loopback port), and a
//! client alternates between them: keys uploaded to one replica, queries answered by both,
//! the bundle stored in chunks; a session deleted through one replica is gone on the other.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{config, infer_top1, mnist, open, reference_top1};
use henn_serve::client::HttpClient;
use henn_serve::{KeyStoreKind, REDIS_CHUNK_BYTES, Running};

/// A `redis-server` child process on a free loopback port, killed when dropped.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): install the Debian package redis-server (.ci/run does)"
                )
            });
        let server = Self { child, port };
        let start = Instant::now();
        loop {
            if let Ok(c) = redis::Client::open(server.url())
                && let Ok(mut conn) = c.get_connection()
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return server;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not answer within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn keys(&self, pattern: &str) -> Vec<String> {
        let mut conn = redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("KEYS").arg(pattern).query(&mut conn).unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_replicas_share_sessions_through_redis() {
    let redis = RedisServer::start();
    let replica = || {
        let mut cfg = config();
        cfg.key_store = KeyStoreKind::Redis(redis.url());
        Running::start(cfg).unwrap()
    };
    let (a, b) = (replica(), replica());
    let (ha, hb) = (HttpClient::new(&a.url()), HttpClient::new(&b.url()));
    let images = mnist(4);
    let want = reference_top1(&images);

    // keys uploaded to replica A only
    let (client, session) = open(&ha);
    let chunks = redis.keys(&format!("henn:session:{session}:chunk:*"));
    let bundle = client.evaluation_keys().unwrap().to_bytes().unwrap().len();
    assert_eq!(
        chunks.len(),
        bundle.div_ceil(REDIS_CHUNK_BYTES),
        "chunked bundle"
    );
    assert_eq!(b.app().sessions().count(), 0);
    // queries alternate between the replicas: B reads the session from Redis
    for (i, x) in images.iter().enumerate() {
        let h = if i % 2 == 0 { &ha } else { &hb };
        assert_eq!(
            infer_top1(h, &client, &session, x),
            want[i],
            "image {i} via replica {}",
            i % 2
        );
    }
    assert_eq!(
        b.app().sessions().count(),
        1,
        "replica B holds the session now"
    );

    // deleted through B: gone on A too, and from Redis
    hb.close_session(&session).unwrap();
    assert!(redis.keys(&format!("henn:session:{session}:*")).is_empty());
    let q = client
        .encrypt_query(&images[..1])
        .unwrap()
        .to_bytes()
        .unwrap();
    let (status, body) = ha
        .raw("POST", &format!("/v1/sessions/{session}/infer"), &q)
        .unwrap();
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));

    // a session created on B serves on A
    let (c2, s2) = open(&hb);
    assert_eq!(infer_top1(&ha, &c2, &s2, &images[0]), want[0]);
}

//! Benchmarks (ignored by default; run in release):
//!
//! ```text
//! FFS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo test --release -p internal-db-agent --test it bench:: -- --ignored --nocapture
//! ```
//!
//! 1. authorize + record-download round trips per second through a real commlink (listen
//!    mode, loopback, 3DES-HMAC suite), on SQLite and PostgreSQL, one requester at a time
//!    and 16 at once;
//! 2. the argon2id login cost at the default parameters (19 MiB, 2 passes): correct,
//!    wrong password and unknown login, which must cost the same.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{Backend, PASSWORD, TestDb, seed, serve};
use commlink::msg::agent as m;
use commlink::stats::percentile;
use internal_db_agent::{Agent, AgentConfig, Mode};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn open(db: &TestDb, real_argon: bool, sync: &str) -> (Arc<Agent>, AgentConfig) {
    let mut cfg = db.config();
    cfg.pg_synchronous_commit = sync.to_owned();
    if real_argon {
        let d = AgentConfig::default();
        cfg.argon2_memory_kib = d.argon2_memory_kib;
        cfg.argon2_iterations = d.argon2_iterations;
    }
    cfg.pool_size = 8;
    cfg.lockout_threshold = 1_000_000;
    let agent = Agent::open_async(&cfg).await.unwrap();
    seed(&agent, &cfg);
    (Arc::new(agent), cfg)
}

async fn pair(c: &commlink::Client, bob: i64, i: u64) -> Duration {
    let t = Instant::now();
    c.request(&m::Authorize {
        customer_id: bob,
        product: "widget".into(),
        version: "2.5.0".into(),
    })
    .await
    .unwrap();
    c.request(&m::RecordDownload {
        customer_id: bob,
        product: "widget".into(),
        version: "2.5.0".into(),
        files: vec!["widget-2.5.0.iso".into(), "SHA256SUMS".into()],
        area_id: format!("bench-{i}"),
        client_addr: "198.51.100.1".into(),
    })
    .await
    .unwrap();
    t.elapsed()
}

async fn round_trips(backend: Backend, sync: &str) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let (agent, _) = open(&db, false, sync).await;
    let served = serve(agent.clone(), Mode::Listen).await;
    let c = served.client.clone();
    let bob = c
        .request(&m::Login {
            login: "bob".into(),
            password: PASSWORD.into(),
            client_addr: String::new(),
        })
        .await
        .unwrap()
        .customer
        .id;
    for i in 0..200 {
        pair(&c, bob, i).await;
    }
    for conc in [1usize, 16] {
        let per_task = if conc == 1 { 2000 } else { 250 };
        let start = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..conc {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_task);
                for i in 0..per_task {
                    lat.push(pair(&c, bob, (t * per_task + i) as u64 + 1_000_000).await);
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        let wall = start.elapsed();
        lat.sort();
        println!(
            "BENCH round-trips backend={backend:?} pg_synchronous_commit={sync} concurrency={conc} pairs={} wall={:.2}s \
             pairs/s={:.0} p50={:.3}ms p99={:.3}ms",
            lat.len(),
            wall.as_secs_f64(),
            lat.len() as f64 / wall.as_secs_f64(),
            ms(percentile(&lat, 50.0)),
            ms(percentile(&lat, 99.0)),
        );
    }
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
async fn bench_authorize_record_round_trips() {
    round_trips(Backend::Sqlite, "on").await;
    round_trips(Backend::Postgres, "on").await;
    round_trips(Backend::Postgres, "off").await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
async fn bench_argon2_login_cost() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let (agent, _) = open(&db, true, "on").await;
    let served = serve(agent.clone(), Mode::Listen).await;
    let c = served.client.clone();
    let cases = [
        ("correct", "bob", PASSWORD),
        ("wrong-password", "bob", "not the password"),
        ("unknown-login", "nobody-here", PASSWORD),
    ];
    // Warm-up.
    for (_, l, p) in cases {
        let _ = c
            .request(&m::Login {
                login: l.into(),
                password: p.into(),
                client_addr: String::new(),
            })
            .await;
    }
    // Round-robin over the cases so that load changes on the machine hit all of them alike.
    let n = 40;
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for _ in 0..n {
        for (k, (_, l, p)) in cases.iter().enumerate() {
            let t = Instant::now();
            let _ = c
                .request(&m::Login {
                    login: (*l).into(),
                    password: (*p).into(),
                    client_addr: String::new(),
                })
                .await;
            lat[k].push(t.elapsed());
        }
    }
    for (k, (name, _, _)) in cases.iter().enumerate() {
        let l = &mut lat[k];
        l.sort();
        let mean = l.iter().sum::<Duration>() / n;
        println!(
            "BENCH login case={name} n={n} mean={:.1}ms p50={:.1}ms p99={:.1}ms (argon2id m=19456KiB t=2 p=1, over the commlink)",
            ms(mean),
            ms(percentile(l, 50.0)),
            ms(percentile(l, 99.0)),
        );
    }
    // The hash alone, without link or database.
    let h = AgentConfig::default().hasher().unwrap();
    let stored = h.hash(PASSWORD).unwrap();
    let mut direct: Vec<Vec<Duration>> = vec![Vec::new(); 3];
    for _ in 0..n {
        let t = Instant::now();
        assert!(h.verify(PASSWORD, &stored));
        direct[0].push(t.elapsed());
        let t = Instant::now();
        assert!(!h.verify("not the password", &stored));
        direct[1].push(t.elapsed());
        let t = Instant::now();
        h.verify_dummy(PASSWORD);
        direct[2].push(t.elapsed());
    }
    for (k, name) in ["verify-correct", "verify-wrong", "verify-dummy"]
        .iter()
        .enumerate()
    {
        let l = &mut direct[k];
        l.sort();
        println!(
            "BENCH argon2 {name} n={n} p50={:.1}ms p99={:.1}ms",
            ms(percentile(l, 50.0)),
            ms(percentile(l, 99.0))
        );
    }
    // Concurrent logins: how many per second the default cost allows on this machine.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                c.request(&m::Login {
                    login: "bob".into(),
                    password: PASSWORD.into(),
                    client_addr: String::new(),
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "BENCH login throughput: 80 correct logins from 8 requesters in {:.2}s = {:.1} logins/s",
        start.elapsed().as_secs_f64(),
        80.0 / start.elapsed().as_secs_f64()
    );
    served.shutdown().await;
}

//! Shared test helpers: a fresh database per test on either backend, seeded customers,
//! and agents served over real commlink sockets.

use std::sync::Arc;
use std::time::Duration;

use commlink::{Client, KeyBag, LinkConfig};
use diesel::connection::SimpleConnection as _;
use diesel::{Connection as _, PgConnection};
use internal_db_agent::admin::{self, NewCustomer};
use internal_db_agent::{Agent, AgentConfig, Mode};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The database backends a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of its own: a temp SQLite file, or a fresh PostgreSQL schema dropped at the end.
pub struct TestDb {
    pub url: String,
    /// Keeps the SQLite file's directory (or an unused one for PostgreSQL) alive.
    _dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

impl TestDb {
    /// A fresh database. PostgreSQL comes from FFS_TEST_POSTGRES_URL: unset or unreachable
    /// fails the test with a hint (`./test.sh` sets it and starts the server); `None` only
    /// when FFS_TEST_SKIP names `postgres`.
    pub fn new(backend: Backend) -> Option<TestDb> {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => Some(TestDb {
                url: format!("sqlite://{}", dir.path().join("ffs.db").display()),
                _dir: dir,
                pg: None,
            }),
            Backend::Postgres => {
                let (base, mut c) = ffs_testkit::prereq::obtain(
                    "postgres",
                    || {
                        let base = std::env::var("FFS_TEST_POSTGRES_URL").map_err(|_| {
                            "FFS_TEST_POSTGRES_URL is not set (e.g. \
                             postgres://postgres@127.0.0.1:5432/test)"
                                .to_owned()
                        })?;
                        let c = PgConnection::establish(&base)
                            .map_err(|e| format!("cannot connect to {base}: {e}"))?;
                        Ok::<_, String>((base, c))
                    },
                    "apt-get install postgresql, start it (pg_ctlcluster --skip-systemctl-redirect \
                     <version> main start) and set FFS_TEST_POSTGRES_URL",
                )?;
                let schema = format!("ffs_test_{}_{}", std::process::id(), rand::random::<u32>());
                c.batch_execute(&format!("CREATE SCHEMA {schema}")).unwrap();
                let sep = if base.contains('?') { '&' } else { '?' };
                Some(TestDb {
                    url: format!(
                        "{base}{sep}options=-csearch_path%3D{schema}&application_name={schema}"
                    ),
                    _dir: dir,
                    pg: Some((base, schema)),
                })
            }
        }
    }

    pub fn config(&self) -> AgentConfig {
        AgentConfig {
            database: self.url.clone(),
            // Cheap hashes keep the tests fast; the benchmark measures the real cost.
            argon2_memory_kib: 256,
            argon2_iterations: 1,
            lockout_threshold: 3,
            lockout_window_secs: 600,
            lockout_secs: 600,
            pool_size: 4,
            ..AgentConfig::default()
        }
    }
}

impl TestDb {
    /// PostgreSQL: ends every server session this test's agent has open (as a restart of
    /// the database server would). Returns how many were ended.
    pub fn kill_pg_sessions(&self) -> i64 {
        use diesel::RunQueryDsl as _;
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let (base, schema) = self.pg.as_ref().expect("a PostgreSQL test database");
        let mut c = PgConnection::establish(base).unwrap();
        diesel::sql_query(format!(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
             WHERE application_name = '{schema}'"
        ))
        .get_result::<N>(&mut c)
        .unwrap()
        .n
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((base, schema)) = &self.pg
            && let Ok(mut c) = PgConnection::establish(base)
        {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
    }
}

pub const PASSWORD: &str = "correct horse battery";

/// Seeds: alice (admin), bob (customer) with widget ">=2.0, <3" and an expired gadget
/// entitlement, carol (disabled).
pub fn seed(agent: &Agent, cfg: &AgentConfig) {
    let hasher = cfg.hasher().unwrap();
    let pool = agent.service().pool().clone();
    admin::with(&pool, |c| {
        for (login, is_admin) in [("alice", true), ("bob", false), ("carol", false)] {
            admin::add_customer(
                c,
                &hasher,
                &NewCustomer {
                    login,
                    name: &format!("{login} Example"),
                    email: &format!("{login}@example.com"),
                    password: PASSWORD,
                    admin: is_admin,
                },
            )?;
        }
        admin::entitle(c, "bob", "widget", ">=2.0, <3", None)?;
        admin::entitle(c, "bob", "gadget", "*", Some("2020-01-01"))?;
        admin::set_disabled(c, "carol", true)?;
        Ok(())
    })
    .unwrap();
}

/// Opens and seeds an agent.
pub async fn seeded_agent(db: &TestDb) -> (Arc<Agent>, AgentConfig) {
    let cfg = db.config();
    let agent = Agent::open_async(&cfg).await.unwrap();
    seed(&agent, &cfg);
    (Arc::new(agent), cfg)
}

/// The agent's longest accepted line in these tests.
pub const AGENT_MAX_LINE: usize = 64 * 1024;

/// Link settings; the requester accepts longer lines than the agent so that an oversized
/// request really reaches the agent.
pub fn link_cfg(bag: &Arc<KeyBag>, max_line: usize) -> LinkConfig {
    let mut c = ffs_testkit::link::config_with(bag.clone());
    c.max_line = max_line;
    c
}

/// A running agent and a client to it; dropping `stop` ends the server.
pub struct Served {
    pub client: Client,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Served {
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Serves `agent` in `mode` over loopback and returns a connected client.
pub async fn serve(agent: Arc<Agent>, mode: Mode) -> Served {
    let bag = Arc::new(KeyBag::generate(16).unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let (client, task) = match mode {
        Mode::Listen => {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let cfg = link_cfg(&bag, AGENT_MAX_LINE);
            let task = tokio::spawn(async move {
                agent.serve(listener, cfg, shutdown).await.unwrap();
            });
            (
                Client::dial(addr.to_string(), link_cfg(&bag, 1 << 20)),
                task,
            )
        }
        Mode::DialOut => {
            // The web frontend's side listens; the agent dials out to it.
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = Client::accept(listener, link_cfg(&bag, 1 << 20));
            let cfg = link_cfg(&bag, AGENT_MAX_LINE);
            let task = tokio::spawn(async move {
                agent.serve_dialout(addr.to_string(), cfg, shutdown).await;
            });
            (client, task)
        }
    };
    assert!(
        client.wait_up(Duration::from_secs(5)).await,
        "link did not come up in {mode:?} mode"
    );
    Served {
        client,
        stop: Some(stop),
        task,
    }
}

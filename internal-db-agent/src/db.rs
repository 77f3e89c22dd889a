//! Opening the database: URL → backend, start-up checks, migrations, and a small pool.
//!
//! The backend is chosen from the URL scheme here rather than by
//! `AnyConnection::establish`, which would replace each backend's real error with
//! "Invalid connection url for multiconnection".

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use diesel::connection::SimpleConnection as _;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness as _, embed_migrations};

/// Migrations for SQLite.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
/// Migrations for PostgreSQL.
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

pub use any::AnyConnection;

mod any {
    // The derive generates a backend and helper items without docs.
    #![allow(missing_docs)]
    use diesel::pg::PgConnection;
    use diesel::sqlite::SqliteConnection;

    /// A connection to either backend; queries written once run on both.
    #[derive(diesel::MultiConnection)]
    pub enum AnyConnection {
        /// PostgreSQL (production, scale).
        Postgresql(PgConnection),
        /// SQLite (embedded default).
        Sqlite(SqliteConnection),
    }
}

/// Where the database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbUrl {
    /// An SQLite file (or `:memory:`).
    Sqlite(PathBuf),
    /// A PostgreSQL URL as given to libpq.
    Postgres(String),
}

/// Why the database could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is neither SQLite nor PostgreSQL.
    #[error("database URL {0:?} not understood: use sqlite://PATH or postgres://user:pass@host/db")]
    BadUrl(String),
    /// The SQLite file's directory does not exist.
    #[error(
        "database directory {} does not exist: create it (mkdir -p {}) or point [db-agent] database elsewhere",
        .0.display(), .0.display()
    )]
    DirMissing(PathBuf),
    /// The SQLite file's "directory" is not a directory.
    #[error(
        "database directory {} is not a directory: point [db-agent] database at a file in a directory",
        .0.display()
    )]
    NotADirectory(PathBuf),
    /// The SQLite file's directory cannot be written (SQLite needs it for its journal).
    #[error(
        "database directory {} is not writable by this user ({source}): fix its permissions or point [db-agent] database elsewhere",
        dir.display()
    )]
    DirUnwritable {
        /// The directory.
        dir: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The SQLite file exists but cannot be opened for writing.
    #[error(
        "database file {} is not writable by this user ({source}): fix its permissions",
        path.display()
    )]
    FileUnwritable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The SQLite file or one of its `-wal`/`-shm` companions can be read by group or
    /// others (it holds password hashes and customers' details).
    #[error("customer database: {0}")]
    NotPrivate(commlink::secret_file::SecretFileError),
    /// The backend refused the connection (the backend's own message is kept).
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL, password removed.
        url: String,
        /// The backend's error.
        source: diesel::ConnectionError,
    },
    /// Setting up the connection or running migrations failed.
    #[error("cannot prepare database {url}: {message}")]
    Setup {
        /// The URL, password removed.
        url: String,
        /// What failed.
        message: String,
    },
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// A worker thread failed.
    #[error("database worker failed: {0}")]
    Worker(String),
}

impl DbUrl {
    /// Parses `sqlite://PATH`, `sqlite:PATH`, `postgres://…`, `postgresql://…` or a bare path.
    pub fn parse(url: &str) -> Result<DbUrl, DbError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DbUrl::Postgres(url.to_owned()));
        }
        let path = if let Some(p) = url.strip_prefix("sqlite://") {
            p
        } else if let Some(p) = url.strip_prefix("sqlite:") {
            p
        } else if url.contains("://") {
            return Err(DbError::BadUrl(url.to_owned()));
        } else {
            url
        };
        if path.is_empty() {
            return Err(DbError::BadUrl(url.to_owned()));
        }
        Ok(DbUrl::Sqlite(PathBuf::from(path)))
    }

    /// The URL with any password replaced by `***`, for messages and logs.
    pub fn redacted(&self) -> String {
        match self {
            DbUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
            DbUrl::Postgres(u) => redact_password(u),
        }
    }

    /// Checks, for SQLite, that the file can be created or written (clear errors at
    /// start-up instead of SQLite's "unable to open database file").
    pub fn check_writable(&self) -> Result<(), DbError> {
        let DbUrl::Sqlite(path) = self else {
            return Ok(());
        };
        if path.as_os_str() == ":memory:" {
            return Ok(());
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        match std::fs::metadata(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DbError::DirMissing(dir));
            }
            Err(e) if e.raw_os_error() == Some(20) => return Err(DbError::NotADirectory(dir)),
            Err(source) => return Err(DbError::DirUnwritable { dir, source }),
            Ok(m) if !m.is_dir() => return Err(DbError::NotADirectory(dir)),
            Ok(_) => {}
        }
        probe_dir(&dir).map_err(|source| DbError::DirUnwritable {
            dir: dir.clone(),
            source,
        })?;
        if path.exists() {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|source| DbError::FileUnwritable {
                    path: path.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// The SQLite file and its `-wal`/`-shm` companions (none for PostgreSQL or `:memory:`).
    fn sqlite_files(&self) -> Vec<PathBuf> {
        match self {
            DbUrl::Sqlite(p) if p.as_os_str() != ":memory:" => {
                let mut files = vec![p.clone()];
                for suffix in ["-wal", "-shm"] {
                    let mut f = p.clone().into_os_string();
                    f.push(suffix);
                    files.push(f.into());
                }
                files
            }
            _ => Vec::new(),
        }
    }

    /// Refuses, for SQLite, a database file or `-wal`/`-shm` companion that group or others
    /// have any permission on: the secret-file rule (`commlink::secret_file`), whose message
    /// names the `chmod` to run. Missing files are fine (they will be created 0600).
    pub fn check_private(&self) -> Result<(), DbError> {
        for f in self.sqlite_files() {
            match commlink::secret_file::check_private(&f) {
                Err(commlink::secret_file::SecretFileError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                r => r.map_err(DbError::NotPrivate)?,
            }
        }
        Ok(())
    }

    /// Creates a missing SQLite file empty with mode 0600 before SQLite opens it; SQLite then
    /// gives its `-wal` and `-shm` files the database file's mode. (SQLite itself would
    /// create it 0644 under the usual umask.)
    fn create_private(&self) -> Result<(), DbError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let Some(path) = self.sqlite_files().into_iter().next() else {
            return Ok(());
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(source) => Err(DbError::FileUnwritable { path, source }),
        }
    }

    fn connect_and_migrate_with(&self, tuning: &Tuning) -> Result<AnyConnection, DbError> {
        let mut conn = self.connect_with(tuning)?;
        let setup = |message: String| DbError::Setup {
            url: self.redacted(),
            message,
        };
        match &mut conn {
            AnyConnection::Sqlite(c) => c
                .run_pending_migrations(SQLITE_MIGRATIONS)
                .map(|_| ())
                .map_err(|e| setup(format!("migrations failed: {e}")))?,
            AnyConnection::Postgresql(c) => c
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|_| ())
                .map_err(|e| setup(format!("migrations failed: {e}")))?,
        }
        Ok(conn)
    }

    /// Opens one connection (no migrations).
    pub fn connect(&self) -> Result<AnyConnection, DbError> {
        self.connect_with(&Tuning::default())
    }

    fn connect_with(&self, tuning: &Tuning) -> Result<AnyConnection, DbError> {
        match self {
            DbUrl::Postgres(u) => {
                let mut c = PgConnection::establish(u).map_err(|source| DbError::Connect {
                    url: self.redacted(),
                    source,
                })?;
                // Validated in Tuning::new: one of a fixed set of words.
                c.batch_execute(&format!(
                    "SET synchronous_commit = {}",
                    tuning.pg_synchronous_commit
                ))
                .map_err(|e| DbError::Setup {
                    url: self.redacted(),
                    message: e.to_string(),
                })?;
                Ok(AnyConnection::Postgresql(c))
            }
            DbUrl::Sqlite(p) => {
                let s = p.to_string_lossy();
                let mut c = SqliteConnection::establish(&s).map_err(|source| DbError::Connect {
                    url: self.redacted(),
                    source,
                })?;
                // busy_timeout: concurrent writers wait instead of failing; WAL lets readers
                // run beside a writer; foreign keys are off by default in SQLite.
                c.batch_execute(
                    "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                )
                .map_err(|e| DbError::Setup {
                    url: self.redacted(),
                    message: e.to_string(),
                })?;
                Ok(AnyConnection::Sqlite(c))
            }
        }
    }
}

/// Creates and removes a file in `dir`. Its name is unique to this call (process id and a
/// per-process counter), so agents starting together on one directory, in one process or
/// several, do not take each other's probe for a fault; a name that exists anyway (a stale
/// probe of a crashed process whose id came back) is skipped for the next.
fn probe_dir(dir: &Path) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PROBES: AtomicU64 = AtomicU64::new(0);
    let mut tries = 0;
    loop {
        let probe = dir.join(format!(
            ".ffs-write-probe-{}-{}",
            std::process::id(),
            PROBES.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
        {
            Ok(_) => return std::fs::remove_file(&probe),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Replaces the password in `scheme://user:password@host…` with `***`.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (auth, tail) = rest.split_at(auth_end);
    match auth.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Per-connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    pg_synchronous_commit: &'static str,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            pg_synchronous_commit: "on",
        }
    }
}

impl Tuning {
    /// PostgreSQL's `synchronous_commit` for the agent's sessions: `on` (default: a
    /// recorded download survives a server crash) or `off` / `local` / `remote_write` /
    /// `remote_apply` (see the PostgreSQL manual; `off` may lose the last fraction of a
    /// second of history on a crash, never corrupts).
    pub fn new(pg_synchronous_commit: &str) -> Result<Tuning, DbError> {
        const OK: [&str; 5] = ["on", "off", "local", "remote_write", "remote_apply"];
        match OK.iter().find(|v| **v == pg_synchronous_commit) {
            Some(v) => Ok(Tuning {
                pg_synchronous_commit: v,
            }),
            None => Err(DbError::Setup {
                url: "[db-agent] pg_synchronous_commit".into(),
                message: format!(
                    "{pg_synchronous_commit:?} is not one of on, off, local, remote_write, remote_apply"
                ),
            }),
        }
    }
}

thread_local! {
    /// Inside [`Pool::inline`]: the address of the pool whose [`Turn`] this thread holds (0
    /// outside), so that pool's queries run on this thread, under that turn.
    static INLINE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// One of a pool's `size` places, held: queries run under it without waiting for one.
pub struct Turn {
    _place: tokio::sync::OwnedSemaphorePermit,
    /// The pool's address (what `INLINE` holds).
    pool: usize,
}

/// A few open connections shared by blocking workers. Work runs on tokio's blocking pool
/// (diesel is synchronous); at most `size` queries run at once.
pub struct Pool {
    url: DbUrl,
    tuning: Tuning,
    idle: Mutex<Vec<AnyConnection>>,
    permits: Arc<tokio::sync::Semaphore>,
    /// SQLite's one writer at a time, among this pool's connections (see [`Pool::run_write`]).
    writer: Mutex<()>,
}

impl Pool {
    /// Checks the location, connects, migrates and keeps the connection as the first idle one.
    pub fn open(url: &str, size: usize) -> Result<Pool, DbError> {
        Pool::open_tuned(url, size, Tuning::default())
    }

    /// [`Pool::open`] with per-connection settings.
    pub fn open_tuned(url: &str, size: usize, tuning: Tuning) -> Result<Pool, DbError> {
        let url = DbUrl::parse(url)?;
        url.check_writable()?;
        url.check_private()?;
        url.create_private()?;
        let first = url.connect_and_migrate_with(&tuning)?;
        Ok(Pool {
            url,
            tuning,
            idle: Mutex::new(vec![first]),
            permits: Arc::new(tokio::sync::Semaphore::new(size.max(1))),
            writer: Mutex::new(()),
        })
    }

    /// The URL, password removed.
    pub fn redacted_url(&self) -> String {
        self.url.redacted()
    }

    /// What identifies this pool in `INLINE` and in a [`Turn`].
    fn addr(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Waits for one of the pool's places (as a task: a request waiting here holds no
    /// thread).
    pub async fn turn(self: &Arc<Self>) -> Result<Turn, DbError> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map(|p| Turn {
                _place: p,
                pool: self.addr(),
            })
            .map_err(|e| DbError::Worker(e.to_string()))
    }

    /// Runs `f` on this thread, which may block, holding `turn`: [`Pool::run`] calls made
    /// on this thread meanwhile run their queries here, one after another under that turn,
    /// instead of each waiting for a place and a hand-off to the blocking pool (for a request
    /// answered whole on a blocking thread, which drives its async handler with `block_on`).
    pub fn inline<T>(turn: Turn, f: impl FnOnce() -> T) -> T {
        struct Reset {
            was: usize,
            _turn: Turn,
        }
        impl Drop for Reset {
            fn drop(&mut self) {
                INLINE.set(self.was);
            }
        }
        let _reset = Reset {
            was: INLINE.replace(turn.pool),
            _turn: turn,
        };
        f()
    }

    /// Runs `f` with a connection, on the current thread (for the CLI and blocking workers).
    pub fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut AnyConnection) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let taken = self.idle.lock().map(|mut v| v.pop()).unwrap_or(None);
        let mut conn = match taken {
            Some(c) => c,
            None => self.url.connect_with(&self.tuning)?,
        };
        let out = f(&mut conn);
        // A connection whose server went away is dropped; the next call opens a new one.
        let broken = matches!(
            &out,
            Err(DbError::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ClosedConnection
                    | diesel::result::DatabaseErrorKind::UnableToSendCommand,
                _
            )))
        );
        if !broken && let Ok(mut v) = self.idle.lock() {
            v.push(conn);
        }
        out
    }

    /// [`Pool::run`] for a write transaction. SQLite has one writer at a time: this pool's
    /// writers take turns here, each woken the moment the one before it is done, instead of
    /// meeting SQLite's busy handler, which sleeps a millisecond or more between attempts
    /// (other processes, such as the admin CLI, still meet it). On PostgreSQL writers run
    /// side by side as before.
    pub async fn run_write<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut AnyConnection) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let pool = Arc::clone(self);
        self.run(move |c| {
            let _writer = matches!(pool.url, DbUrl::Sqlite(_))
                .then(|| pool.writer.lock().unwrap_or_else(PoisonError::into_inner));
            f(c)
        })
        .await
    }

    /// Runs `f` with a connection on tokio's blocking pool, at most `size` at once; on this
    /// thread, under its turn, when called inside [`Pool::inline`].
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut AnyConnection) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        if INLINE.get() == self.addr() {
            return self.with_conn(f);
        }
        let turn = self.turn().await?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            pool.with_conn(f)
        })
        .await
        .map_err(|e| DbError::Worker(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_backend() {
        assert_eq!(
            DbUrl::parse("sqlite://ffs.db").unwrap(),
            DbUrl::Sqlite("ffs.db".into())
        );
        assert_eq!(
            DbUrl::parse("sqlite:///var/x.db").unwrap(),
            DbUrl::Sqlite("/var/x.db".into())
        );
        assert_eq!(
            DbUrl::parse("/var/x.db").unwrap(),
            DbUrl::Sqlite("/var/x.db".into())
        );
        assert!(matches!(
            DbUrl::parse("postgresql://u@h/d").unwrap(),
            DbUrl::Postgres(_)
        ));
        assert!(DbUrl::parse("mysql://u@h/d").is_err());
        assert!(DbUrl::parse("sqlite://").is_err());
    }

    #[test]
    fn synchronous_commit_takes_only_known_words() {
        assert!(Tuning::new("off").is_ok());
        assert!(Tuning::new("on; DROP TABLE customers").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_password("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact_password("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_password("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn missing_directory_is_named() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("nope/ffs.db");
        let e = DbUrl::Sqlite(p).check_writable().unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, DbError::DirMissing(_)), "{msg}");
        assert!(msg.contains("nope") && msg.contains("mkdir -p"), "{msg}");
    }

    #[test]
    fn a_file_as_directory_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        let e = DbUrl::Sqlite(f.join("ffs.db"))
            .check_writable()
            .unwrap_err();
        assert!(matches!(e, DbError::NotADirectory(_)), "{e}");
    }

    #[test]
    fn unwritable_directory_is_refused() {
        // /proc refuses new files even for root, so this holds whoever runs the tests.
        let e = DbUrl::Sqlite("/proc/ffs-test.db".into())
            .check_writable()
            .unwrap_err();
        assert!(matches!(e, DbError::DirUnwritable { .. }), "{e}");
        assert!(e.to_string().contains("/proc"), "{e}");
    }

    #[test]
    fn agents_checking_one_directory_at_once_all_pass() {
        // Two agents in one process used to share the probe's name: one of them failed
        // with "File exists" when they started together.
        let dir = tempfile::tempdir().expect("tempdir");
        let url = DbUrl::Sqlite(dir.path().join("ffs.db"));
        std::thread::scope(|s| {
            let checks: Vec<_> = (0..8)
                .map(|_| s.spawn(|| (0..200).map(|_| url.check_writable()).collect::<Vec<_>>()))
                .collect();
            for c in checks {
                for r in c.join().expect("joined") {
                    r.expect("writable");
                }
            }
        });
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("lists").count(),
            0,
            "every probe removed"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn inside_inline_queries_run_on_the_calling_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("ffs.db").display());
        let pool = Arc::new(Pool::open(&url, 2).expect("pool"));
        let query = |c: &mut AnyConnection| {
            crate::store::list_customers(c)?;
            Ok(std::thread::current().id())
        };
        // Outside: on the blocking pool, not on the worker that awaits it.
        let here = std::thread::current().id();
        assert_ne!(pool.run(query).await.expect("query"), here);
        // Inside: on the thread that drives the handler (and only there), several queries
        // one after another under the one turn held (with a pool of 2 and the other place
        // taken, a query that waited for a place of its own would never run).
        let second_db = format!("sqlite://{}", dir.path().join("second.db").display());
        let second_pool = Arc::new(Pool::open(&second_db, 1).expect("second pool"));
        let other = pool.turn().await.expect("a place");
        let turn = pool.turn().await.expect("the last place");
        let rt = tokio::runtime::Handle::current();
        let inside = tokio::task::spawn_blocking(move || {
            let thread = std::thread::current().id();
            let ran_on = Pool::inline(turn, || {
                rt.block_on(async {
                    let first = pool.run(query).await?;
                    let second = pool.run(query).await?;
                    // Another pool's queries are not under this turn: they go as usual.
                    let elsewhere = second_pool.run(query).await?;
                    Ok::<_, DbError>(([first, second], elsewhere))
                })
            })
            .expect("queries");
            let (ran_on, elsewhere) = ran_on;
            assert_ne!(elsewhere, thread, "another pool's query ran inline");
            (
                thread,
                ran_on,
                INLINE.get() != 0,
                pool.permits.available_permits(),
            )
        });
        let (thread, ran_on, after, free) =
            tokio::time::timeout(std::time::Duration::from_secs(10), inside)
                .await
                .expect("the queries did not wait for a place")
                .expect("joined");
        assert_eq!(ran_on, [thread, thread]);
        assert!(!after, "the thread is back to handing queries off");
        assert_eq!(free, 1, "the turn is given back when inline ends");
        drop(other);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pools_sqlite_writers_take_turns_without_the_busy_handler() {
        use diesel::connection::SimpleConnection as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("ffs.db").display());
        let pool = Arc::new(Pool::open(&url, 4).expect("pool"));
        pool.run(|c| {
            c.batch_execute("CREATE TABLE turns (x INTEGER)")
                .map_err(DbError::Query)
        })
        .await
        .expect("table");
        // With no busy timeout, a writer that met another's transaction would fail at once
        // ("database is locked"); taking turns, all of them commit.
        let mut writers = tokio::task::JoinSet::new();
        for i in 0..16 {
            let pool = pool.clone();
            writers.spawn(async move {
                pool.run_write(move |c| {
                    c.batch_execute(&format!(
                        "PRAGMA busy_timeout = 0; BEGIN IMMEDIATE; INSERT INTO turns VALUES ({i});"
                    ))
                    .map_err(DbError::Query)?;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    c.batch_execute("COMMIT").map_err(DbError::Query)
                })
                .await
            });
        }
        while let Some(done) = writers.join_next().await {
            done.expect("joined").expect("a writer committed");
        }
    }
}

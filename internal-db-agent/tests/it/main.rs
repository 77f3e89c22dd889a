//! The agent's integration tests, one test binary.
//!
//! - `agent`: behaviour on SQLite and PostgreSQL, directly and over real commlink sockets;
//! - `concurrent`: two agents on one database at once (deliveries once, lockout counts,
//!   history rows; dial-out agents each serving two webs);
//! - `no_secrets_in_logs`: every log line captured while logging in, checked for secrets;
//! - `statements`: the prepare path's queries stay prepared statements (no re-prepare);
//! - `bench`: throughput and login cost (ignored by default; run in release);
//! - `common`: fresh databases, seeded customers, agents served over real sockets.

/// `on_both_backends!(f, g)`: a SQLite and a PostgreSQL `#[tokio::test]` for each
/// `async fn f(Backend)` of the module (`sqlite::f`, `postgres::f`). Defined before the
/// modules so each can use it.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
    };
}

mod agent;
mod bench;
mod common;
mod concurrent;
mod no_secrets_in_logs;
mod statements;

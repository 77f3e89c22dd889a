//! Runs logins (right, wrong, unknown, locked), admin reads and edits over a real commlink
//! with every log line captured at TRACE level, then checks that neither a plaintext
//! password nor any argon2 hash appears. It installs the global subscriber so that every
//! thread (blocking workers included) is captured; nextest gives each test its own
//! process, so no other test's subscriber is in the way.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::common::{Backend, PASSWORD, TestDb, seeded_agent, serve};
use commlink::msg::agent as m;
use internal_db_agent::Mode;

#[derive(Clone)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_no_password_and_no_hash() {
    let buf = Buf(Arc::new(Mutex::new(Vec::new())));
    let w = buf.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || w.clone())
        .init();

    const WRONG: &str = "wrong-password-typed-by-alice";
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(db) = TestDb::new(backend) else {
            continue;
        };
        let (agent, _) = seeded_agent(&db).await;
        for mode in [Mode::Listen, Mode::DialOut] {
            let served = serve(agent.clone(), mode).await;
            let c = served.client.clone();
            let login = |l: &str, pw: &str| m::Login {
                login: l.into(),
                password: pw.into(),
                client_addr: "203.0.113.9".into(),
            };
            let alice = c.request(&login("alice", PASSWORD)).await.unwrap().customer;
            assert!(c.request(&login("alice", WRONG)).await.is_err());
            assert!(c.request(&login("nobody", PASSWORD)).await.is_err());
            for _ in 0..4 {
                let _ = c.request(&login("zed", WRONG)).await;
            }
            assert!(c.request(&login("carol", PASSWORD)).await.is_err());
            // A malformed login request (the password in a field of the wrong shape).
            let _ = c
                .call(commlink::Tobj::with_fields(
                    "agent.login",
                    0,
                    commlink::Fields::new()
                        .text("login", "alice")
                        .object("password", commlink::Fields::new().text("p", PASSWORD)),
                ))
                .await;
            c.request(&m::Customers {}).await.unwrap();
            c.request(&m::CustomerLookup {
                login: "bob".into(),
            })
            .await
            .unwrap();
            c.request(&m::SetDisabled {
                by_customer_id: alice.id,
                login: "bob".into(),
                disabled: false,
            })
            .await
            .unwrap();
            served.shutdown().await;
        }
    }

    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("login ok"), "nothing was captured:\n{text}");
    assert!(text.contains("login failed"), "{text}");
    for secret in [PASSWORD, WRONG, "$argon2", "argon2id$"] {
        assert!(
            !text.contains(secret),
            "the log contains {secret:?}:\n{text}"
        );
    }
}

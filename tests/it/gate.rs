//! A TCP gate the test holds between a replication follower and its source: shut (every
//! connection, new or already open, is cut, as when the network between them fails) or
//! open, passing the source's bytes at most `rate` bytes a second per connection, so a
//! transfer takes at least `size / rate` however fast the machine is. TLS runs end to
//! end through it (the follower's pin still checks the source).

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The state: 0 = shut, else the rate in bytes a second (`u64::MAX`: unlimited).
const SHUT: u64 = 0;

/// A gate listening on `port`, forwarding to a target port on 127.0.0.1.
pub struct Gate {
    pub port: u16,
    state: Arc<AtomicU64>,
}

impl Gate {
    /// Starts an open, unlimited gate to `127.0.0.1:target`.
    pub fn start(target: u16) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the gate");
        let port = listener.local_addr().expect("gate address").port();
        let state = Arc::new(AtomicU64::new(u64::MAX));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if st.load(Ordering::SeqCst) == SHUT {
                    continue; // dropped: the connection is cut at once
                }
                let st = st.clone();
                std::thread::spawn(move || carry(client, target, &st));
            }
        });
        Gate { port, state }
    }

    /// Cuts every connection and refuses new ones until opened again.
    pub fn shut(&self) {
        self.state.store(SHUT, Ordering::SeqCst);
    }

    /// Opens the gate, passing at most `rate` bytes a second from the target (per
    /// connection; `u64::MAX` for unlimited).
    pub fn open(&self, rate: u64) {
        self.state.store(rate.max(1), Ordering::SeqCst);
    }
}

/// One connection through the gate: both directions until either end closes or the gate
/// shuts.
fn carry(client: TcpStream, target: u16, state: &Arc<AtomicU64>) {
    let Ok(server) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], target)),
        Duration::from_secs(5),
    ) else {
        return;
    };
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up_state = state.clone();
    let up = std::thread::spawn(move || pipe(c2, s2, &up_state, false));
    pipe(server, client, state, true);
    let _ = up.join();
}

/// Copies `from` to `to` (throttled when `throttle`) until EOF, an error or the gate shuts;
/// then shuts both sockets so the other direction ends too.
fn pipe(mut from: TcpStream, mut to: TcpStream, state: &AtomicU64, throttle: bool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 16 * 1024];
    loop {
        let rate = state.load(Ordering::SeqCst);
        if rate == SHUT {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                // Each piece costs its time at the rate (no credit from idle time).
                if throttle && rate != u64::MAX {
                    std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

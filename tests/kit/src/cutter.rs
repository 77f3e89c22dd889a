//! A fault-injecting TCP forwarder for HTTP/1.1 traffic: put it between a proxy and a server
//! (or a client and a proxy) and cut, on command, the connections whose latest request line
//! names a path (e.g. a relay's long-lived receive channel), or the next request of a kind
//! in the middle of its body. Plain threads and blocking sockets, so a test without a
//! runtime can use it; it stops (every connection shut) when dropped.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// One forwarded connection: both sockets (to shut them from outside) and the request line
/// last seen from the client.
struct Conn {
    id: u64,
    client: TcpStream,
    server: TcpStream,
    last_request: Arc<Mutex<String>>,
}

#[derive(Default)]
struct Shared {
    conns: Mutex<Vec<Conn>>,
    /// While set, the next request whose request line contains this text and that has a
    /// body is forwarded up to the middle of its body, then both sides are shut.
    cut_mid_body: Mutex<Option<String>>,
    mid_body_cuts: AtomicUsize,
    next_id: AtomicU64,
    stop: AtomicBool,
}

/// The forwarder: listens on 127.0.0.1:[`Cutter::port`], forwards to the upstream port.
pub struct Cutter {
    /// Where it listens (127.0.0.1).
    pub port: u16,
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cutter {
    /// Starts forwarding 127.0.0.1:(a free port) to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16) -> Cutter {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the cutter");
        let port = listener.local_addr().expect("the cutter's address").port();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                start_conn(&s, client, server);
            }
        });
        Cutter { port, shared }
    }

    /// Shuts every open connection whose latest request line contains `path`; how many.
    pub fn cut_where(&self, path: &str) -> usize {
        let mut conns = lock(&self.shared.conns);
        let mut cut = 0;
        conns.retain(|c| {
            if lock(&c.last_request).contains(path) {
                let _ = c.client.shutdown(Shutdown::Both);
                let _ = c.server.shutdown(Shutdown::Both);
                cut += 1;
                false
            } else {
                true
            }
        });
        cut
    }

    /// Arms a cut of the next request whose request line contains `path` and that has a
    /// body: its headers and part of its body reach the upstream, then both sides of the
    /// connection are shut. [`Cutter::mid_body_cuts`] counts the cuts made.
    pub fn cut_next_body(&self, path: &str) {
        *lock(&self.shared.cut_mid_body) = Some(path.to_owned());
    }

    /// How many requests were cut mid-body so far.
    pub fn mid_body_cuts(&self) -> usize {
        self.shared.mid_body_cuts.load(Ordering::SeqCst)
    }
}

impl Drop for Cutter {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for c in lock(&self.shared.conns).drain(..) {
            let _ = c.client.shutdown(Shutdown::Both);
            let _ = c.server.shutdown(Shutdown::Both);
        }
    }
}

fn start_conn(s: &Arc<Shared>, client: TcpStream, server: TcpStream) {
    let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    ) else {
        return;
    };
    let id = s.next_id.fetch_add(1, Ordering::SeqCst);
    let last_request = Arc::new(Mutex::new(String::new()));
    lock(&s.conns).push(Conn {
        id,
        client: c3,
        server: s3,
        last_request: last_request.clone(),
    });
    let shared = s.clone();
    std::thread::spawn(move || {
        upstream_copy(&shared, client, server, &last_request);
        lock(&shared.conns).retain(|c| c.id != id);
    });
    std::thread::spawn(move || {
        let (mut from, mut to) = (s2, c2);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Client → server, noting each request line and making an armed mid-body cut.
fn upstream_copy(
    shared: &Shared,
    mut from: TcpStream,
    mut to: TcpStream,
    last_request: &Mutex<String>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    // A request being cut whose body had not arrived with its headers: cut in the next read.
    let mut cut_pending = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if cut_pending {
            let _ = to.write_all(&chunk[..n / 2]);
            cut(shared, &from, &to);
            return;
        }
        let line = request_lines(chunk).last().map(|l| (*l).to_owned());
        if let Some(line) = &line {
            *lock(last_request) = line.clone();
        }
        let armed = lock(&shared.cut_mid_body).clone();
        if let (Some(path), Some(line)) = (armed, &line)
            && line.contains(&path)
            && let Some(head_end) = find(chunk, b"\r\n\r\n").map(|i| i + 4)
            && content_length(&chunk[..head_end]) != Some(0)
        {
            *lock(&shared.cut_mid_body) = None;
            let body = n - head_end;
            if body > 0 {
                let _ = to.write_all(&chunk[..head_end + body / 2]);
                cut(shared, &from, &to);
                return;
            }
            let _ = to.write_all(chunk);
            cut_pending = true;
            continue;
        }
        if to.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn cut(shared: &Shared, a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
    shared.mid_body_cuts.fetch_add(1, Ordering::SeqCst);
}

/// The request lines (`METHOD target HTTP/1.x`) at the start of the chunk or of a line.
fn request_lines(chunk: &[u8]) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < chunk.len() {
        let end = find(&chunk[start..], b"\r\n").map_or(chunk.len(), |i| start + i);
        if let Ok(line) = std::str::from_utf8(&chunk[start..end])
            && line.ends_with(" HTTP/1.1")
            && ["GET ", "POST ", "PUT ", "HEAD "]
                .iter()
                .any(|m| line.starts_with(m))
        {
            out.push(line);
        }
        start = end + 2;
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The `Content-Length` of a request head, if it has one.
fn content_length(head: &[u8]) -> Option<u64> {
    String::from_utf8_lossy(head).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead as _;

    /// A one-request-per-connection HTTP-ish server recording what each connection sent.
    fn server() -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let g = g.clone();
                std::thread::spawn(move || {
                    let mut all = Vec::new();
                    let _ = c.read_to_end(&mut all);
                    lock(&g).push(all);
                });
            }
        });
        (port, got)
    }

    fn wait_for(f: impl Fn() -> bool) -> bool {
        for _ in 0..500 {
            if f() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn an_armed_cut_forwards_half_a_body_then_closes_and_other_requests_pass_whole() {
        let (port, got) = server();
        let cutter = Cutter::start(port);
        let body = "0123456789".repeat(10);
        let send = |path: &str| {
            let mut c = TcpStream::connect(("127.0.0.1", cutter.port)).expect("connect");
            let req = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            c.write_all(req.as_bytes()).expect("write");
            c.shutdown(Shutdown::Write).expect("shutdown");
            let mut rest = Vec::new();
            let _ = c.read_to_end(&mut rest);
        };
        cutter.cut_next_body("/send");
        send("/other");
        send("/x/send");
        send("/x/send");
        assert!(wait_for(|| lock(&got).len() == 3));
        let got = lock(&got);
        let whole = got.iter().filter(|r| r.ends_with(body.as_bytes())).count();
        assert_eq!(whole, 2, "the request before and after the cut pass whole");
        let cut: Vec<_> = got
            .iter()
            .filter(|r| !r.ends_with(body.as_bytes()))
            .collect();
        assert_eq!(cut.len(), 1);
        let text = String::from_utf8_lossy(cut[0]);
        assert!(text.starts_with("POST /x/send "), "{text}");
        let sent = text.split("\r\n\r\n").nth(1).expect("a body part").len();
        assert!(sent > 0 && sent < body.len(), "{sent} bytes of the body");
        assert_eq!(cutter.mid_body_cuts(), 1);
    }

    #[test]
    fn cut_where_shuts_only_the_connections_whose_last_request_names_the_path() {
        let (port, _got) = server();
        let cutter = Cutter::start(port);
        let open = |path: &str| {
            let mut c = TcpStream::connect(("127.0.0.1", cutter.port)).expect("connect");
            c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .expect("write");
            c
        };
        let recv = open("/r/recv?ack=0");
        let other = open("/r/send");
        assert!(wait_for(|| {
            lock(&cutter.shared.conns)
                .iter()
                .filter(|c| !lock(&c.last_request).is_empty())
                .count()
                == 2
        }));
        assert_eq!(cutter.cut_where("/recv"), 1);
        let mut line = String::new();
        let n = std::io::BufReader::new(recv).read_line(&mut line);
        assert!(matches!(n, Ok(0) | Err(_)), "the receive channel is closed");
        assert_eq!(lock(&cutter.shared.conns).len(), 1);
        drop(other);
    }
}

//! CPU-only measurements on this thread: raw cipher throughput and the commlink's work per
//! message, timed by on-CPU time as well as wall time.

use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::Digest as _;

use super::{BenchError, Options, us};
use crate::crypto::{self, Side};
use crate::progress::Progress;
use crate::{Suite, Tobj};

/// Throughput of one cipher operation.
#[derive(Debug, Serialize)]
pub struct CipherResult {
    /// What was measured.
    pub what: String,
    /// By wall clock, MB (10^6 bytes) per second.
    pub mb_per_sec: f64,
    /// By this thread's on-CPU time (what the work costs, whatever else the machine runs).
    pub mb_per_cpu_sec: f64,
}

/// In-process CPU work for one message on the commlink path, no I/O, in on-CPU time.
#[derive(Debug, Serialize)]
pub struct PerMessage {
    /// The suite's name.
    pub suite: &'static str,
    /// tobj encode + seal + open + UTF-8 check + tobj parse, per message, µs.
    pub encode_seal_open_parse_us: f64,
    /// CBC encrypt + decrypt alone (CBC suites only), µs.
    pub cbc_us: Option<f64>,
    /// A round trip does this twice (request and reply), µs.
    pub per_round_trip_us: f64,
}

/// This thread's time on a CPU so far, from the scheduler's accounting (Linux). The machine
/// is shared, so wall time alone would charge the cipher for other processes' slices.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Wall-clock and on-CPU time of one measured stretch of work on this thread.
struct Clock {
    wall: Instant,
    cpu: Option<Duration>,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            wall: Instant::now(),
            cpu: thread_cpu(),
        }
    }

    /// (wall, on-CPU); on-CPU falls back to wall where the kernel does not report it.
    fn read(&self) -> (Duration, Duration) {
        let wall = self.wall.elapsed();
        let cpu = match (self.cpu, thread_cpu()) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => wall,
        };
        (wall, cpu)
    }
}

/// Runs `f` on `bytes`-sized inputs until `min_time` and 3 runs have passed; returns MB/s
/// (10^6 bytes per second) by wall clock and by on-CPU time.
fn throughput(bytes: usize, min_time: Duration, mut f: impl FnMut()) -> (f64, f64) {
    f(); // warm caches and allocators
    let clock = Clock::start();
    let mut runs = 0u32;
    while runs < 3 || clock.wall.elapsed() < min_time {
        f();
        runs += 1;
    }
    let (wall, cpu) = clock.read();
    let total = bytes as f64 * f64::from(runs) / 1e6;
    (
        total / wall.as_secs_f64().max(1e-9),
        total / cpu.as_secs_f64().max(1e-9),
    )
}

/// CBC encryption alone (CBC suites) and seal + open of the packet path, per suite.
pub(super) fn cipher_throughput(
    opts: &Options,
    progress: &dyn Progress,
) -> Result<Vec<CipherResult>, BenchError> {
    let payload: Vec<u8> = (0..opts.cipher_payload).map(|i| (i % 251) as u8).collect();
    let entry = [0x5a; 32];
    let iv = [0x24; crypto::BLOCK];
    progress.phase(
        &format!("cipher throughput ({} B payloads)", opts.cipher_payload),
        5,
    );
    let mut out = Vec::new();
    for suite in [Suite::Des, Suite::Tdes, Suite::Aes256Gcm] {
        if suite.is_cbc() {
            let key = vec![0x3c; suite.key_len()];
            let mut sink = 0usize;
            let (mbps, cpu_mbps) = throughput(payload.len(), opts.cipher_min_time, || {
                sink ^= suite.cbc_encrypt(&key, &iv, &payload).len();
            });
            std::hint::black_box(sink);
            out.push(CipherResult {
                what: format!("{} CBC encrypt only", cbc_name(suite)),
                mb_per_sec: mbps,
                mb_per_cpu_sec: cpu_mbps,
            });
            progress.advance(1);
        }

        // seal + open of the same payload, as one connection's two ends would.
        let (mut sealer, _) =
            crypto::derive(suite, &entry, 40000, &[1; 16], &[2; 16], Side::Initiator);
        let (_, mut opener) =
            crypto::derive(suite, &entry, 40000, &[1; 16], &[2; 16], Side::Acceptor);
        let mut failed = None;
        let (mbps, cpu_mbps) = throughput(payload.len(), opts.cipher_min_time, || {
            let line = sealer.seal(&payload);
            match opener.open(line.as_bytes()) {
                Ok(p) if p.len() == payload.len() => {}
                Ok(_) => failed = Some("opened payload has the wrong length".to_owned()),
                Err(e) => failed = Some(e.to_string()),
            }
        });
        if let Some(e) = failed {
            return Err(BenchError::Failed(format!(
                "{} seal/open round trip failed: {e}",
                suite.name()
            )));
        }
        out.push(CipherResult {
            what: format!("{} seal+open (packet path)", suite.name()),
            mb_per_sec: mbps,
            mb_per_cpu_sec: cpu_mbps,
        });
        progress.advance(1);
    }
    Ok(out)
}

fn cbc_name(suite: Suite) -> &'static str {
    match suite {
        Suite::Des => "DES",
        Suite::Tdes => "3DES",
        Suite::Aes256Gcm => "AES-256-GCM",
    }
}

/// SHA-256 speed, for scale: the packet path runs HMAC-SHA256 over every cipher text.
pub(super) fn sha256_throughput(opts: &Options) -> CipherResult {
    let payload = vec![0xa5u8; opts.cipher_payload];
    let mut sink = 0u8;
    let (mbps, cpu_mbps) = throughput(payload.len(), opts.cipher_min_time, || {
        sink ^= sha2::Sha256::digest(&payload)[0];
    });
    std::hint::black_box(sink);
    CipherResult {
        what: "SHA-256 (for scale: the MAC hashes every cipher text)".into(),
        mb_per_sec: mbps,
        mb_per_cpu_sec: cpu_mbps,
    }
}

/// Times the commlink's CPU work for one ~200-byte message, without I/O.
pub(super) fn per_message_work(message: &Tobj, n: u32) -> Vec<PerMessage> {
    let limits = crate::tobj::Limits::default();
    let entry = [0x5a; 32];
    let mut out = Vec::new();
    for suite in Suite::ALL {
        let (mut sealer, _) =
            crypto::derive(suite, &entry, 40000, &[1; 16], &[2; 16], Side::Initiator);
        let (_, mut opener) =
            crypto::derive(suite, &entry, 40000, &[1; 16], &[2; 16], Side::Acceptor);
        let mut ok = 0u32;
        let clock = Clock::start();
        for _ in 0..n {
            let line = sealer.seal(message.encode().as_bytes());
            let parsed = opener
                .open(line.as_bytes())
                .ok()
                .and_then(|p| String::from_utf8(p).ok())
                .and_then(|s| Tobj::parse(&s, &limits).ok());
            ok += u32::from(parsed.is_some());
        }
        let whole = clock.read().1 / n;
        std::hint::black_box(ok);

        let key = vec![0x3c; suite.key_len()];
        let iv = [0x24; crypto::BLOCK];
        let plain = message.encode().into_bytes();
        let clock = Clock::start();
        for _ in 0..n {
            let c = suite.cbc_encrypt(&key, &iv, &plain);
            std::hint::black_box(suite.cbc_decrypt(&key, &iv, &c));
        }
        let cbc = suite.is_cbc().then(|| us(clock.read().1 / n));
        out.push(PerMessage {
            suite: suite.name(),
            encode_seal_open_parse_us: us(whole),
            cbc_us: cbc,
            per_round_trip_us: 2.0 * us(whole),
        });
    }
    out
}

//! Measuring the commlink (feature `bench`; `ffs bench commlink` presents the results):
//! round-trip latency and request rate on loopback for a ~200-byte tobj, beside plain TCP
//! and rustls TLS 1.3 measured in the same run, plus raw cipher throughput and per-message
//! CPU work.
//!
//! Every transport carries the same encoded tobj line and checks that each reply equals its
//! request. Plain TCP and TLS echo the line back unparsed; the commlink runs its whole path
//! (tobj encode, seal, frame, open, tobj parse, request-id matching, both directions). The
//! server and the client share the caller's tokio runtime, as in `ffs demo`.
//!
//! This module measures and returns data; it draws nothing (progress goes to a
//! [`Progress`]).

mod bed;
mod cpu;
mod echo;
mod relay;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::progress::Progress;
use crate::stats::percentile;
use crate::{Fields, LinkError, Suite, Tobj};

pub use cpu::{CipherResult, PerMessage};
pub use relay::Reconnect;

/// Size of the request/reply tobj, in bytes of its encoded form.
pub const MESSAGE_BYTES: usize = 200;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Timed sequential round trips per transport (after the warm-up); also the number of
    /// requests in each transport's concurrent phase.
    pub requests: usize,
    /// Requests in flight at once in the concurrent phase. Commlink: C concurrent calls on
    /// one connection; TCP and TLS: C connections, each doing sequential round trips.
    pub concurrency: usize,
    /// Untimed round trips before the timed ones.
    pub warmup: usize,
    /// Payload size for the raw cipher throughput phase (1 MiB in `ffs bench`).
    pub cipher_payload: usize,
    /// Each cipher throughput measurement runs at least this long (and at least 3
    /// payloads).
    pub cipher_min_time: Duration,
    /// Messages sealed and opened per suite for the per-message CPU work (20 000 in
    /// `ffs bench`).
    pub per_message_rounds: u32,
    /// A forward proxy (`http://host:port`) for the relay's "via proxy" row (e.g. a squid
    /// allowing plain HTTP to loopback); `None` measures the relay directly only.
    pub relay_proxy: Option<String>,
}

/// Why a benchmark could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad options.
    #[error("{0}")]
    Invalid(&'static str),
    /// Socket set-up or an echo round trip failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A commlink call failed.
    #[error("{what}: {source}")]
    Link {
        /// What was being done.
        what: String,
        /// The cause.
        source: LinkError,
    },
    /// A reply differed from its request, or a set-up step failed.
    #[error("{0}")]
    Failed(String),
}

impl BenchError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}

/// A transport measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain TCP echo of the encoded line.
    Tcp,
    /// rustls TLS 1.3 (ring) echo of the encoded line.
    Tls,
    /// The commlink with a suite, full path.
    Commlink(Suite),
}

impl Kind {
    /// Every transport, in report order.
    pub const ALL: [Kind; 5] = [
        Kind::Tcp,
        Kind::Tls,
        Kind::Commlink(Suite::Aes256Gcm),
        Kind::Commlink(Suite::Tdes),
        Kind::Commlink(Suite::Des),
    ];

    /// The name shown in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Tls => "tls1.3-rustls-ring",
            Kind::Commlink(Suite::Aes256Gcm) => "commlink aes256-gcm",
            Kind::Commlink(Suite::Tdes) => "commlink 3des-cbc-hmac-sha256",
            Kind::Commlink(Suite::Des) => "commlink des-cbc",
        }
    }

    fn concurrency_model(self, c: usize) -> String {
        match self {
            Kind::Tcp | Kind::Tls => format!("{c} connections, sequential round trips on each"),
            Kind::Commlink(_) => format!("{c} concurrent calls on one connection"),
        }
    }
}

/// The whole result.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// Encoded size of the message carried.
    pub message_bytes: usize,
    /// Sequential round trips per transport.
    pub requests: usize,
    /// Untimed warm-up round trips per transport.
    pub warmup: usize,
    /// Requests in flight in the concurrent phase.
    pub concurrency: usize,
    /// One row per transport, in [`Kind::ALL`] order, then the relay rows, then the
    /// [`Carried`] links'.
    pub transports: Vec<TransportResult>,
    /// The relay's reconnect after a cut receive channel.
    pub relay_reconnect: Reconnect,
    /// Raw cipher and hash throughput.
    pub ciphers: Vec<CipherResult>,
    /// CPU work per message on the commlink path, per suite.
    pub per_message: Vec<PerMessage>,
}

impl Report {
    /// A transport's row.
    pub fn transport(&self, kind: Kind) -> Option<&TransportResult> {
        self.transports.iter().find(|t| t.transport == kind.name())
    }

    /// Round-trip p50 of the commlink with `suite` over TLS's (NaN when either is missing).
    pub fn ratio_to_tls(&self, suite: Suite) -> f64 {
        match (
            self.transport(Kind::Commlink(suite)),
            self.transport(Kind::Tls),
        ) {
            (Some(c), Some(t)) if t.p50_us > 0.0 => c.p50_us / t.p50_us,
            _ => f64::NAN,
        }
    }
}

/// The machine the numbers come from.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cpus: usize,
    /// `/proc/cpuinfo`'s model name.
    pub cpu_model: String,
}

impl Machine {
    /// Reads this machine's description.
    pub fn probe() -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
        }
    }
}

/// One transport's latency and rate.
#[derive(Debug, Serialize)]
pub struct TransportResult {
    /// [`Kind::name`].
    pub transport: &'static str,
    /// Sequential round trip, median, µs.
    pub p50_us: f64,
    /// Sequential round trip, 99th percentile, µs.
    pub p99_us: f64,
    /// Sequential round trip, mean, µs.
    pub mean_us: f64,
    /// Sequential round trip, fastest, µs.
    pub min_us: f64,
    /// Concurrent phase: requests per second.
    pub requests_per_sec: f64,
    /// How the concurrent phase keeps requests in flight.
    pub concurrency_model: String,
}

/// A link this crate cannot set up by itself, measured beside the others in the same run:
/// e.g. the https carrier through the real web frontend (`web_frontend::carrier_bed`). Its
/// client must be up, its responder must echo every request.
pub struct Carried {
    /// The row's name.
    pub name: &'static str,
    /// How its concurrent phase keeps requests in flight (shown in the report).
    pub concurrency_model: String,
    /// The client whose requests cross the link.
    pub client: crate::Client,
}

/// Runs the whole benchmark.
pub async fn run(opts: &Options, progress: Arc<dyn Progress>) -> Result<Report, BenchError> {
    run_with(opts, Vec::new(), progress).await
}

/// [`run`], also measuring each of `carried` (after the relay rows, before the ciphers).
pub async fn run_with(
    opts: &Options,
    carried: Vec<Carried>,
    progress: Arc<dyn Progress>,
) -> Result<Report, BenchError> {
    if opts.requests == 0 || opts.concurrency == 0 {
        return Err(BenchError::Invalid(
            "requests and concurrency must be at least 1",
        ));
    }
    let message = sample_message();
    let line = {
        let mut l = message.encode();
        l.push_str("\r\n");
        l.into_bytes()
    };
    let mut transports = measure_links(opts, &line, &message, &progress).await?;
    let (relay_rows, relay_reconnect) = relay::measure(opts, &message, &progress).await?;
    transports.extend(relay_rows);
    for c in &carried {
        transports.push(
            measure_client(
                c.name,
                &c.concurrency_model,
                &c.client,
                opts,
                &message,
                &progress,
            )
            .await?,
        );
    }
    drop(carried);
    let mut ciphers = cpu::cipher_throughput(opts, &*progress)?;
    ciphers.push(cpu::sha256_throughput(opts));
    let per_message = cpu::per_message_work(&message, opts.per_message_rounds.max(1));
    progress.finish();
    Ok(Report {
        machine: Machine::probe(),
        message_bytes: message.encode().len(),
        requests: opts.requests,
        warmup: opts.warmup,
        concurrency: opts.concurrency,
        transports,
        relay_reconnect,
        ciphers,
        per_message,
    })
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn summarize(
    kind: Kind,
    mut samples: Vec<Duration>,
    concurrent: usize,
    concurrent_time: Duration,
    c: usize,
) -> TransportResult {
    samples.sort_unstable();
    let total: Duration = samples.iter().sum();
    let n = samples.len().max(1);
    TransportResult {
        transport: kind.name(),
        p50_us: us(percentile(&samples, 50.0)),
        p99_us: us(percentile(&samples, 99.0)),
        mean_us: us(total) / n as f64,
        min_us: samples.first().map_or(0.0, |d| us(*d)),
        requests_per_sec: concurrent as f64 / concurrent_time.as_secs_f64().max(1e-9),
        concurrency_model: kind.concurrency_model(c),
    }
}

/// Sequential round trips (after the warm-up), then the concurrent phase, over one client
/// whose responder echoes: a row named `name`.
async fn measure_client(
    name: &'static str,
    concurrency_model: &str,
    client: &crate::Client,
    opts: &Options,
    message: &Tobj,
    progress: &Arc<dyn Progress>,
) -> Result<TransportResult, BenchError> {
    progress.phase(
        &format!("{name}: round trips"),
        (opts.warmup + opts.requests) as u64,
    );
    for _ in 0..opts.warmup {
        bed::call_checked(client, message).await?;
        progress.advance(1);
    }
    let mut samples = Vec::with_capacity(opts.requests);
    for _ in 0..opts.requests {
        let t = Instant::now();
        bed::call_checked(client, message).await?;
        samples.push(t.elapsed());
        progress.advance(1);
    }
    progress.phase(&format!("{name}: concurrent"), opts.requests as u64);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in shares(opts.requests, opts.concurrency) {
        let (client, message, progress) = (client.clone(), message.clone(), progress.clone());
        tasks.spawn(async move {
            for _ in 0..n {
                bed::call_checked(&client, &message).await?;
                progress.advance(1);
            }
            Ok::<(), BenchError>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| BenchError::Failed(format!("a {name} worker failed: {e}")))??;
    }
    let mut r = summarize(
        Kind::Tcp,
        samples,
        opts.requests,
        start.elapsed(),
        opts.concurrency,
    );
    r.transport = name;
    r.concurrency_model = concurrency_model.to_owned();
    Ok(r)
}

/// A ~200-byte request that looks like real traffic (a staging request).
fn sample_message() -> Tobj {
    let fields = Fields::new()
        .text("product", "widget-pro")
        .text("version", "2.4.1")
        .text("file", "widget-pro-2.4.1-linux-x86_64.tar.gz")
        .num("size", 73_400_320u64)
        .text("label", "<acme>");
    let mut t = Tobj::with_fields("bench.echo", 1, fields);
    let len = t.encode().len();
    let pad = MESSAGE_BYTES.saturating_sub(len + "<pad></pad>".len());
    t.fields.push_text("pad", "x".repeat(pad));
    t
}

/// Splits `total` requests as evenly as possible over `c` workers.
fn shares(total: usize, c: usize) -> impl Iterator<Item = usize> {
    (0..c).map(move |i| total / c + usize::from(i < total % c))
}

/// One connection doing sequential round trips.
enum Link {
    Tcp(echo::LineConn<tokio::net::TcpStream>),
    Tls(Box<echo::LineConn<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>),
    Commlink(crate::Client),
}

impl Link {
    async fn round_trip(&mut self, line: &[u8], message: &Tobj) -> Result<(), BenchError> {
        match self {
            Link::Tcp(c) => c.round_trip(line).await,
            Link::Tls(c) => c.round_trip(line).await,
            Link::Commlink(c) => bed::call_checked(c, message).await,
        }
    }
}

/// Measures all transports. The sequential round trips are taken in interleaved rounds (a
/// tenth of each transport's samples per round), so a burst of load from other processes
/// on this shared machine falls on all transports alike rather than on one.
async fn measure_links(
    opts: &Options,
    line: &[u8],
    message: &Tobj,
    progress: &Arc<dyn Progress>,
) -> Result<Vec<TransportResult>, BenchError> {
    let (tcp_addr, _tcp_server) = echo::start_line_server(echo::Plain).await?;
    let tls = echo::Tls::new()?;
    let (tls_addr, _tls_server) = echo::start_line_server(tls.clone()).await?;
    let gcm = bed::CommlinkBed::start(Suite::Aes256Gcm).await?;
    let tdes = bed::CommlinkBed::start(Suite::Tdes).await?;
    let des = bed::CommlinkBed::start(Suite::Des).await?;

    let mut links = vec![
        Link::Tcp(echo::line_conn(tcp_addr, &echo::Plain).await?),
        Link::Tls(Box::new(echo::line_conn(tls_addr, &tls).await?)),
        Link::Commlink(gcm.client.clone()),
        Link::Commlink(tdes.client.clone()),
        Link::Commlink(des.client.clone()),
    ];
    progress.phase("warm-up", (opts.warmup * Kind::ALL.len()) as u64);
    for (kind, link) in Kind::ALL.iter().zip(links.iter_mut()) {
        for _ in 0..opts.warmup {
            link.round_trip(line, message)
                .await
                .map_err(|e| BenchError::Failed(format!("warming up {}: {e}", kind.name())))?;
            progress.advance(1);
        }
    }

    const ROUNDS: usize = 10;
    let mut samples: Vec<Vec<Duration>> = Kind::ALL
        .iter()
        .map(|_| Vec::with_capacity(opts.requests))
        .collect();
    progress.phase(
        "sequential round trips (all transports, interleaved)",
        (opts.requests * Kind::ALL.len()) as u64,
    );
    for n in shares(opts.requests, ROUNDS) {
        for ((kind, link), out) in Kind::ALL
            .iter()
            .zip(links.iter_mut())
            .zip(samples.iter_mut())
        {
            for _ in 0..n {
                let t = Instant::now();
                link.round_trip(line, message).await.map_err(|e| {
                    BenchError::Failed(format!("round trip over {}: {e}", kind.name()))
                })?;
                out.push(t.elapsed());
                progress.advance(1);
            }
        }
    }
    drop(links);

    let times = [
        echo::concurrent_lines(Kind::Tcp, tcp_addr, &echo::Plain, opts, line, progress).await?,
        echo::concurrent_lines(Kind::Tls, tls_addr, &tls, opts, line, progress).await?,
        gcm.concurrent(opts, message, progress).await?,
        tdes.concurrent(opts, message, progress).await?,
        des.concurrent(opts, message, progress).await?,
    ];
    gcm.stop().await?;
    tdes.stop().await?;
    des.stop().await?;
    Ok(Kind::ALL
        .into_iter()
        .zip(samples)
        .zip(times)
        .map(|((kind, s), t)| summarize(kind, s, opts.requests, t, opts.concurrency))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny run measures every transport and every suite, with sane numbers.
    #[tokio::test]
    async fn small_run_measures_every_transport() {
        let opts = Options {
            requests: 20,
            concurrency: 4,
            warmup: 2,
            cipher_payload: 4096,
            cipher_min_time: Duration::from_millis(5),
            per_message_rounds: 20,
            relay_proxy: None,
        };
        let r = run(&opts, Arc::new(crate::progress::Silent)).await.unwrap();
        assert_eq!(r.transports.len(), Kind::ALL.len() + 1, "and the relay row");
        assert!(
            r.relay_reconnect.p50_ms > 0.0 && r.relay_reconnect.max_ms >= r.relay_reconnect.p50_ms
        );
        for t in &r.transports {
            assert!(t.p50_us > 0.0 && t.p99_us >= t.p50_us, "{t:?}");
            assert!(t.min_us <= t.p50_us && t.requests_per_sec > 0.0, "{t:?}");
        }
        assert!(r.ratio_to_tls(Suite::Aes256Gcm).is_finite());
        assert!(r.message_bytes >= MESSAGE_BYTES - 2 && r.message_bytes <= MESSAGE_BYTES + 2);
        assert_eq!(r.per_message.len(), Suite::ALL.len());
        assert!(r.ciphers.iter().all(|c| c.mb_per_sec > 0.0));
    }

    /// A link set up by the caller is measured as a row of its own, named by the caller.
    #[tokio::test]
    async fn a_carried_link_gets_its_own_row() {
        let opts = Options {
            requests: 10,
            concurrency: 2,
            warmup: 1,
            cipher_payload: 1024,
            cipher_min_time: Duration::from_millis(1),
            per_message_rounds: 5,
            relay_proxy: None,
        };
        let bed = bed::CommlinkBed::start(Suite::Aes256Gcm).await.unwrap();
        let carried = vec![Carried {
            name: "carried echo",
            concurrency_model: "2 calls on one link".into(),
            client: bed.client.clone(),
        }];
        let r = run_with(&opts, carried, Arc::new(crate::progress::Silent))
            .await
            .unwrap();
        let row = r.transports.last().unwrap();
        assert_eq!(row.transport, "carried echo");
        assert_eq!(row.concurrency_model, "2 calls on one link");
        assert!(row.p50_us > 0.0 && row.requests_per_sec > 0.0, "{row:?}");
        bed.stop().await.unwrap();
    }

    #[test]
    fn zero_requests_refused() {
        let opts = Options {
            requests: 0,
            concurrency: 1,
            warmup: 0,
            cipher_payload: 4096,
            cipher_min_time: Duration::ZERO,
            per_message_rounds: 1,
            relay_proxy: None,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(run(&opts, Arc::new(crate::progress::Silent)));
        assert!(matches!(r, Err(BenchError::Invalid(_))));
    }
}

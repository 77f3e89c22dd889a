//! `ffs bench commlink`: the commlink's round-trip latency and request rate on loopback for a
//! ~200-byte tobj, beside plain TCP and rustls TLS 1.3 measured in the same run, plus raw
//! cipher throughput.
//!
//! Every transport carries the same encoded tobj line and checks that each reply equals its
//! request. Plain TCP and TLS echo the line back unparsed; the commlink runs its whole path
//! (tobj encode, seal, frame, open, tobj parse, request-id matching, both directions). The
//! server and the client share this process and its tokio runtime, as in `ffs demo`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use commlink::crypto::{self, Side};
use commlink::{Client, Fields, KeyBag, LinkConfig, Suite, Tobj};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sha2::Digest as _;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The default suite's round trip must stay within this factor of TLS's (issue 15).
const TARGET_RATIO: f64 = 1.2;
/// Requests per second the default suite must carry on one connection (issue 15).
const TARGET_REQ_PER_SEC: f64 = 100_000.0;
/// Size of the request/reply tobj, in bytes of its encoded form.
const MESSAGE_BYTES: usize = 200;
/// Payload size for the raw cipher throughput phase.
const CIPHER_PAYLOAD: usize = 1 << 20;
/// Each cipher measurement runs at least this long (and at least 3 payloads).
const CIPHER_MIN_TIME: Duration = Duration::from_millis(1500);

/// `ffs bench commlink` options.
#[derive(Debug, clap::Args)]
pub struct BenchCommlinkArgs {
    /// Timed sequential round trips per transport (after the warm-up); also the number of
    /// requests in each transport's concurrent phase.
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Requests in flight at once in the concurrent phase. Commlink: C concurrent calls on
    /// one connection; TCP and TLS: C connections, each doing sequential round trips.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Untimed round trips before the timed ones.
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// Print the results as JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `ffs bench commlink`.
pub async fn bench_commlink(args: BenchCommlinkArgs) -> anyhow::Result<()> {
    if args.requests == 0 || args.concurrency == 0 {
        bail!("--requests and --concurrency must be at least 1");
    }
    let message = sample_message();
    let line = {
        let mut l = message.encode();
        l.push_str("\r\n");
        l.into_bytes()
    };

    let transports = measure_links(&args, &line, &message).await?;

    let mut ciphers = cipher_throughput()?;
    ciphers.push(sha256_throughput());
    let per_message = per_message_work(&message);

    let p50 = |name: &str| {
        transports
            .iter()
            .find(|t| t.transport == name)
            .map(|t| t.p50_us)
    };
    let ratio_to_tls =
        |suite: Suite| match (p50(Kind::Commlink(suite).name()), p50(Kind::Tls.name())) {
            (Some(c), Some(t)) if t > 0.0 => c / t,
            _ => f64::NAN,
        };
    let ratio = ratio_to_tls(Suite::default());
    let ratio_3des = ratio_to_tls(Suite::Tdes);
    let default_rate = transports
        .iter()
        .find(|t| t.transport == Kind::Commlink(Suite::default()).name())
        .map_or(0.0, |t| t.requests_per_sec);
    let report = Report {
        machine: Machine::probe(),
        message_bytes: message.encode().len(),
        requests: args.requests,
        warmup: args.warmup,
        concurrency: args.concurrency,
        transports,
        ratio_commlink_default_over_tls_p50: ratio,
        ratio_commlink_3des_over_tls_p50: ratio_3des,
        target_ratio: TARGET_RATIO,
        target_met: ratio <= TARGET_RATIO,
        commlink_default_req_per_sec: default_rate,
        target_req_per_sec: TARGET_REQ_PER_SEC,
        target_req_per_sec_met: default_rate >= TARGET_REQ_PER_SEC,
        ciphers,
        per_message,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// What is measured and reported.

#[derive(Debug, Clone, Copy)]
enum Kind {
    Tcp,
    Tls,
    Commlink(Suite),
}

impl Kind {
    fn name(self) -> &'static str {
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

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    message_bytes: usize,
    requests: usize,
    warmup: usize,
    concurrency: usize,
    transports: Vec<TransportResult>,
    ratio_commlink_default_over_tls_p50: f64,
    ratio_commlink_3des_over_tls_p50: f64,
    target_ratio: f64,
    target_met: bool,
    commlink_default_req_per_sec: f64,
    target_req_per_sec: f64,
    target_req_per_sec_met: bool,
    ciphers: Vec<CipherResult>,
    per_message: Vec<PerMessage>,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
}

impl Machine {
    fn probe() -> Machine {
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

#[derive(Debug, Serialize)]
struct TransportResult {
    transport: &'static str,
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
    min_us: f64,
    requests_per_sec: f64,
    concurrency_model: String,
}

#[derive(Debug, Serialize)]
struct CipherResult {
    what: String,
    /// By wall clock.
    mb_per_sec: f64,
    /// By this thread's on-CPU time (what the work costs, whatever else the machine runs).
    mb_per_cpu_sec: f64,
}

/// In-process CPU work for one message on the commlink path, no I/O, in on-CPU time.
#[derive(Debug, Serialize)]
struct PerMessage {
    suite: &'static str,
    /// tobj encode + seal + open + UTF-8 check + tobj parse, per message.
    encode_seal_open_parse_us: f64,
    /// Of which CBC encrypt + decrypt of the padded payload.
    /// CBC encrypt + decrypt alone (CBC suites only).
    cbc_us: Option<f64>,
    /// A round trip does this twice (request and reply).
    per_round_trip_us: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
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

fn bar(len: usize, prefix: String) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{prefix:<44} [{bar:30}] {pos:>6}/{len:6} {per_sec:>12} {elapsed}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    ProgressBar::new(len as u64)
        .with_style(style)
        .with_prefix(prefix)
}

/// Splits `total` requests as evenly as possible over `c` workers.
fn shares(total: usize, c: usize) -> impl Iterator<Item = usize> {
    (0..c).map(move |i| total / c + usize::from(i < total % c))
}

// ---------------------------------------------------------------------------------------
// Plain TCP and TLS: a line echo server and a client doing one round trip at a time.

trait Wrap: Clone + Send + Sync + 'static {
    type Server: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    type Client: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(
        &self,
        s: TcpStream,
    ) -> impl Future<Output = std::io::Result<Self::Server>> + Send + 'static;
    fn connect(
        &self,
        s: TcpStream,
    ) -> impl Future<Output = std::io::Result<Self::Client>> + Send + 'static;
}

#[derive(Clone)]
struct Plain;

impl Wrap for Plain {
    type Server = TcpStream;
    type Client = TcpStream;
    fn accept(&self, s: TcpStream) -> impl Future<Output = std::io::Result<TcpStream>> + 'static {
        std::future::ready(Ok(s))
    }
    fn connect(&self, s: TcpStream) -> impl Future<Output = std::io::Result<TcpStream>> + 'static {
        std::future::ready(Ok(s))
    }
}

/// TLS 1.3 only, ring provider, a fresh self-signed certificate for "localhost".
#[derive(Clone)]
struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
}

impl Tls {
    fn new() -> anyhow::Result<Tls> {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .context("generating a self-signed certificate")?;
        let cert = ck.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert)?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        })
    }
}

impl Wrap for Tls {
    type Server = tokio_rustls::server::TlsStream<TcpStream>;
    type Client = tokio_rustls::client::TlsStream<TcpStream>;
    fn accept(
        &self,
        s: TcpStream,
    ) -> impl Future<Output = std::io::Result<Self::Server>> + Send + 'static {
        self.acceptor.accept(s)
    }
    fn connect(
        &self,
        s: TcpStream,
    ) -> impl Future<Output = std::io::Result<Self::Client>> + Send + 'static {
        let name = rustls::pki_types::ServerName::DnsName(
            rustls::pki_types::DnsName::try_from("localhost")
                .unwrap_or_else(|_| unreachable!("\"localhost\" is a valid DNS name"))
                .to_owned(),
        );
        self.connector.connect(name, s)
    }
}

/// Echoes each line back until the peer closes.
async fn echo_lines<S: AsyncRead + AsyncWrite + Unpin>(s: S) -> std::io::Result<()> {
    // BufReader passes writes through to the stream.
    let mut s = BufReader::new(s);
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        if s.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        s.write_all(&line).await?;
        s.flush().await?;
    }
}

struct LineConn<S> {
    s: BufReader<S>,
    reply: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> LineConn<S> {
    async fn round_trip(&mut self, line: &[u8]) -> anyhow::Result<()> {
        self.s.write_all(line).await?;
        self.s.flush().await?;
        self.reply.clear();
        self.s.read_until(b'\n', &mut self.reply).await?;
        if self.reply != line {
            bail!("the echo differs from the request");
        }
        Ok(())
    }
}

async fn line_conn<W: Wrap>(
    addr: std::net::SocketAddr,
    w: &W,
) -> anyhow::Result<LineConn<W::Client>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let s = w.connect(tcp).await?;
    Ok(LineConn {
        s: BufReader::new(s),
        reply: Vec::with_capacity(512),
    })
}

/// Starts a line echo server on a loopback port.
async fn start_line_server<W: Wrap>(w: W) -> anyhow::Result<(std::net::SocketAddr, AbortOnDrop)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = AbortOnDrop(tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let w = w.clone();
            tokio::spawn(async move {
                if let Ok(s) = w.accept(tcp).await {
                    let _ = echo_lines(s).await;
                }
            });
        }
    }));
    Ok((addr, server))
}

/// Request rate: C connections, each doing its share of round trips sequentially.
/// Connections (and TLS handshakes) are set up before the clock starts.
async fn concurrent_lines<W: Wrap>(
    kind: Kind,
    addr: std::net::SocketAddr,
    w: &W,
    args: &BenchCommlinkArgs,
    line: &[u8],
) -> anyhow::Result<Duration> {
    let mut conns = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        conns.push(line_conn(addr, w).await?);
    }
    let pb = bar(args.requests, format!("{}: concurrent", kind.name()));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (mut conn, n) in conns
        .into_iter()
        .zip(shares(args.requests, args.concurrency))
    {
        let (line, pb) = (line.to_vec(), pb.clone());
        tasks.spawn(async move {
            for _ in 0..n {
                conn.round_trip(&line).await?;
                pb.inc(1);
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let elapsed = start.elapsed();
    pb.finish_and_clear();
    Ok(elapsed)
}

/// One connection doing sequential round trips.
enum Link {
    Tcp(LineConn<TcpStream>),
    Tls(Box<LineConn<tokio_rustls::client::TlsStream<TcpStream>>>),
    Commlink(Client),
}

impl Link {
    async fn round_trip(&mut self, line: &[u8], message: &Tobj) -> anyhow::Result<()> {
        match self {
            Link::Tcp(c) => c.round_trip(line).await,
            Link::Tls(c) => c.round_trip(line).await,
            Link::Commlink(c) => call_checked(c, message).await,
        }
    }
}

/// Measures all four transports. The sequential round trips are taken in interleaved
/// rounds (a tenth of each transport's samples per round), so a burst of load from other
/// processes on this shared machine falls on all transports alike rather than on one.
async fn measure_links(
    args: &BenchCommlinkArgs,
    line: &[u8],
    message: &Tobj,
) -> anyhow::Result<Vec<TransportResult>> {
    let (tcp_addr, _tcp_server) = start_line_server(Plain).await?;
    let tls = Tls::new()?;
    let (tls_addr, _tls_server) = start_line_server(tls.clone()).await?;
    let gcm = CommlinkBed::start(Suite::Aes256Gcm).await?;
    let tdes = CommlinkBed::start(Suite::Tdes).await?;
    let des = CommlinkBed::start(Suite::Des).await?;

    let kinds = [
        Kind::Tcp,
        Kind::Tls,
        Kind::Commlink(Suite::Aes256Gcm),
        Kind::Commlink(Suite::Tdes),
        Kind::Commlink(Suite::Des),
    ];
    let mut links = vec![
        Link::Tcp(line_conn(tcp_addr, &Plain).await?),
        Link::Tls(Box::new(line_conn(tls_addr, &tls).await?)),
        Link::Commlink(gcm.client.clone()),
        Link::Commlink(tdes.client.clone()),
        Link::Commlink(des.client.clone()),
    ];
    for (kind, link) in kinds.iter().zip(links.iter_mut()) {
        for _ in 0..args.warmup {
            link.round_trip(line, message)
                .await
                .with_context(|| format!("warming up {}", kind.name()))?;
        }
    }

    const ROUNDS: usize = 10;
    let mut samples: Vec<Vec<Duration>> = kinds
        .iter()
        .map(|_| Vec::with_capacity(args.requests))
        .collect();
    let pb = bar(
        args.requests * kinds.len(),
        "sequential round trips (all transports, interleaved)".into(),
    );
    for n in shares(args.requests, ROUNDS) {
        for ((kind, link), out) in kinds.iter().zip(links.iter_mut()).zip(samples.iter_mut()) {
            for _ in 0..n {
                let t = Instant::now();
                link.round_trip(line, message)
                    .await
                    .with_context(|| format!("round trip over {}", kind.name()))?;
                out.push(t.elapsed());
                pb.inc(1);
            }
        }
    }
    pb.finish_and_clear();
    drop(links);

    let times = [
        concurrent_lines(Kind::Tcp, tcp_addr, &Plain, args, line).await?,
        concurrent_lines(Kind::Tls, tls_addr, &tls, args, line).await?,
        gcm.concurrent(args, message).await?,
        tdes.concurrent(args, message).await?,
        des.concurrent(args, message).await?,
    ];
    gcm.stop().await?;
    tdes.stop().await?;
    des.stop().await?;
    Ok(kinds
        .into_iter()
        .zip(samples)
        .zip(times)
        .map(|((kind, s), t)| summarize(kind, s, args.requests, t, args.concurrency))
        .collect())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---------------------------------------------------------------------------------------
// The commlink.

/// Answers every request with itself.
struct Echo;

impl commlink::Service for Echo {
    async fn call(&self, request: Tobj) -> Tobj {
        request
    }
}

async fn call_checked(client: &Client, message: &Tobj) -> anyhow::Result<()> {
    let reply = client.call(message.clone()).await?;
    if reply.kind != message.kind || reply.fields != message.fields {
        bail!("the reply differs from the request");
    }
    Ok(())
}

/// A commlink server (echo service) and a client dialed to it, on loopback.
struct CommlinkBed {
    suite: Suite,
    client: Client,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl CommlinkBed {
    async fn start(suite: Suite) -> anyhow::Result<CommlinkBed> {
        let mut cfg = LinkConfig::new(Arc::new(KeyBag::generate(128)?));
        cfg.suite = suite;
        cfg.request_timeout = Duration::from_secs(30);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(commlink::serve(
            listener,
            cfg.clone(),
            Arc::new(Echo),
            async {
                let _ = stopped.await;
            },
        ));
        let client = Client::dial(addr.to_string(), cfg);
        if !client.wait_up(Duration::from_secs(10)).await {
            bail!(
                "the {} commlink to {addr} did not come up within 10 s",
                suite.name()
            );
        }
        Ok(CommlinkBed {
            suite,
            client,
            stop,
            server,
        })
    }

    /// Request rate: C tasks sharing the one connection.
    async fn concurrent(
        &self,
        args: &BenchCommlinkArgs,
        message: &Tobj,
    ) -> anyhow::Result<Duration> {
        let kind = Kind::Commlink(self.suite);
        let pb = bar(args.requests, format!("{}: concurrent", kind.name()));
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for n in shares(args.requests, args.concurrency) {
            let (client, message, pb) = (self.client.clone(), message.clone(), pb.clone());
            tasks.spawn(async move {
                for _ in 0..n {
                    call_checked(&client, &message).await?;
                    pb.inc(1);
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        let elapsed = start.elapsed();
        pb.finish_and_clear();
        Ok(elapsed)
    }

    async fn stop(self) -> anyhow::Result<()> {
        drop(self.client);
        let _ = self.stop.send(());
        self.server.await??;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Raw cipher work (CPU only, on this thread).

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

/// Runs `f` on `bytes`-sized inputs until [`CIPHER_MIN_TIME`] and 3 runs have passed;
/// returns MB/s (10^6 bytes per second) by wall clock and by on-CPU time.
fn throughput(bytes: usize, mut f: impl FnMut()) -> (f64, f64) {
    f(); // warm caches and allocators
    let clock = Clock::start();
    let mut runs = 0u32;
    while runs < 3 || clock.wall.elapsed() < CIPHER_MIN_TIME {
        f();
        runs += 1;
    }
    let (wall, cpu) = clock.read();
    let total = bytes as f64 * f64::from(runs) / 1e6;
    (total / wall.as_secs_f64(), total / cpu.as_secs_f64())
}

fn cipher_throughput() -> anyhow::Result<Vec<CipherResult>> {
    let payload: Vec<u8> = (0..CIPHER_PAYLOAD).map(|i| (i % 251) as u8).collect();
    let entry = [0x5a; 32];
    let iv = [0x24; crypto::BLOCK];
    let pb = bar(5, "cipher throughput (1 MiB payloads)".into());
    let mut out = Vec::new();
    for suite in [Suite::Des, Suite::Tdes, Suite::Aes256Gcm] {
        if suite.is_cbc() {
            let key = vec![0x3c; suite.key_len()];
            let mut sink = 0usize;
            let (mbps, cpu_mbps) = throughput(payload.len(), || {
                sink ^= suite.cbc_encrypt(&key, &iv, &payload).len();
            });
            std::hint::black_box(sink);
            out.push(CipherResult {
                what: format!("{} CBC encrypt only", cbc_name(suite)),
                mb_per_sec: mbps,
                mb_per_cpu_sec: cpu_mbps,
            });
            pb.inc(1);
        }

        // seal + open of the same payload, as one connection's two ends would.
        let (mut sealer, _) =
            crypto::derive(suite, &entry, 40000, &[1; 16], &[2; 16], Side::Initiator);
        let (_, mut opener) =
            crypto::derive(suite, &entry, 40000, &[1; 16], &[2; 16], Side::Acceptor);
        let mut failed = None;
        let (mbps, cpu_mbps) = throughput(payload.len(), || {
            let line = sealer.seal(&payload);
            match opener.open(line.as_bytes()) {
                Ok(p) if p.len() == payload.len() => {}
                Ok(_) => failed = Some("opened payload has the wrong length".to_owned()),
                Err(e) => failed = Some(e.to_string()),
            }
        });
        if let Some(e) = failed {
            bail!("{} seal/open round trip failed: {e}", suite.name());
        }
        out.push(CipherResult {
            what: format!("{} seal+open (packet path)", suite.name()),
            mb_per_sec: mbps,
            mb_per_cpu_sec: cpu_mbps,
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
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
fn sha256_throughput() -> CipherResult {
    let payload = vec![0xa5u8; CIPHER_PAYLOAD];
    let mut sink = 0u8;
    let (mbps, cpu_mbps) = throughput(payload.len(), || {
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
fn per_message_work(message: &Tobj) -> Vec<PerMessage> {
    const N: u32 = 20_000;
    let limits = commlink::tobj::Limits::default();
    let entry = [0x5a; 32];
    let mut out = Vec::new();
    for suite in Suite::ALL {
        let (mut sealer, _) =
            crypto::derive(suite, &entry, 40000, &[1; 16], &[2; 16], Side::Initiator);
        let (_, mut opener) =
            crypto::derive(suite, &entry, 40000, &[1; 16], &[2; 16], Side::Acceptor);
        let mut ok = 0u32;
        let clock = Clock::start();
        for _ in 0..N {
            let line = sealer.seal(message.encode().as_bytes());
            let parsed = opener
                .open(line.as_bytes())
                .ok()
                .and_then(|p| String::from_utf8(p).ok())
                .and_then(|s| Tobj::parse(&s, &limits).ok());
            ok += u32::from(parsed.is_some());
        }
        let whole = clock.read().1 / N;
        std::hint::black_box(ok);

        let key = vec![0x3c; suite.key_len()];
        let iv = [0x24; crypto::BLOCK];
        let plain = message.encode().into_bytes();
        let clock = Clock::start();
        for _ in 0..N {
            let c = suite.cbc_encrypt(&key, &iv, &plain);
            std::hint::black_box(suite.cbc_decrypt(&key, &iv, &c));
        }
        let cbc = suite.is_cbc().then(|| us(clock.read().1 / N));
        out.push(PerMessage {
            suite: suite.name(),
            encode_seal_open_parse_us: us(whole),
            cbc_us: cbc,
            per_round_trip_us: 2.0 * us(whole),
        });
    }
    out
}

// ---------------------------------------------------------------------------------------
// Output.

fn print_table(r: &Report) {
    println!(
        "ffs bench commlink: loopback, {}-byte tobj, {} sequential round trips after {} warm-up; {} requests at concurrency {}",
        r.message_bytes, r.requests, r.warmup, r.requests, r.concurrency
    );
    println!("machine: {} CPUs, {}", r.machine.cpus, r.machine.cpu_model);
    println!();
    println!(
        "{:<32} {:>9} {:>9} {:>9} {:>9} {:>10}  concurrent phase",
        "transport", "p50 µs", "p99 µs", "mean µs", "min µs", "req/s"
    );
    for t in &r.transports {
        println!(
            "{:<32} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.0}  {}",
            t.transport,
            t.p50_us,
            t.p99_us,
            t.mean_us,
            t.min_us,
            t.requests_per_sec,
            t.concurrency_model
        );
    }
    println!("(tcp and tls echo the encoded tobj line unparsed; the commlink runs its full path)");
    println!();
    let verdict = |met| if met { "met" } else { "MISSED" };
    println!(
        "commlink {} (default) RTT p50 / TLS RTT p50 = {:.2}x  (target <= {:.1}x: {}); 3des: {:.2}x",
        Suite::default().name(),
        r.ratio_commlink_default_over_tls_p50,
        r.target_ratio,
        verdict(r.target_met),
        r.ratio_commlink_3des_over_tls_p50,
    );
    println!(
        "commlink {} req/s on one connection = {:.0}  (target >= {:.0}: {})",
        Suite::default().name(),
        r.commlink_default_req_per_sec,
        r.target_req_per_sec,
        verdict(r.target_req_per_sec_met)
    );
    println!();
    println!(
        "{:<56} {:>10} {:>12}",
        "cipher throughput (1 MiB payloads, MB = 10^6 B)", "MB/s wall", "MB/s on-CPU"
    );
    for c in &r.ciphers {
        println!(
            "{:<56} {:>10.1} {:>12.1}",
            c.what, c.mb_per_sec, c.mb_per_cpu_sec
        );
    }
    println!();
    println!(
        "{:<32} {:>26} {:>10} {:>16}",
        "commlink on-CPU per message",
        "encode+seal+open+parse µs",
        "of it CBC",
        "x2 per round trip"
    );
    for p in &r.per_message {
        println!(
            "{:<32} {:>26.1} {:>10} {:>16.1}",
            p.suite,
            p.encode_seal_open_parse_us,
            p.cbc_us.map_or("-".into(), |c| format!("{c:.1}")),
            p.per_round_trip_us
        );
    }
}

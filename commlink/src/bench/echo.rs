//! The baselines: a line echo server and client over plain TCP and over rustls TLS 1.3.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::{BenchError, Kind, Options, shares};
use crate::progress::Progress;

/// How a TCP connection is wrapped at each end.
pub(super) trait Wrap: Clone + Send + Sync + 'static {
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

/// Plain TCP.
#[derive(Clone)]
pub(super) struct Plain;

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
pub(super) struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
}

impl Tls {
    pub(super) fn new() -> Result<Tls, BenchError> {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let fail = |e: &dyn std::fmt::Display| BenchError::Failed(format!("TLS set-up: {e}"));
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .map_err(|e| fail(&e))?;
        let cert = ck.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| fail(&e))?
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .map_err(|e| fail(&e))?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).map_err(|e| fail(&e))?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| fail(&e))?
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

/// A client connection doing one echo round trip at a time.
pub(super) struct LineConn<S> {
    s: BufReader<S>,
    reply: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> LineConn<S> {
    pub(super) async fn round_trip(&mut self, line: &[u8]) -> Result<(), BenchError> {
        self.s
            .write_all(line)
            .await
            .map_err(BenchError::io("sending a line"))?;
        self.s
            .flush()
            .await
            .map_err(BenchError::io("sending a line"))?;
        self.reply.clear();
        self.s
            .read_until(b'\n', &mut self.reply)
            .await
            .map_err(BenchError::io("reading the echo"))?;
        if self.reply != line {
            return Err(BenchError::Failed(
                "the echo differs from the request".into(),
            ));
        }
        Ok(())
    }
}

/// Connects a client to an echo server.
pub(super) async fn line_conn<W: Wrap>(
    addr: std::net::SocketAddr,
    w: &W,
) -> Result<LineConn<W::Client>, BenchError> {
    let what = format!("connecting to the echo server at {addr}");
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(BenchError::io(what.clone()))?;
    tcp.set_nodelay(true)
        .map_err(BenchError::io(what.clone()))?;
    let s = w.connect(tcp).await.map_err(BenchError::io(what))?;
    Ok(LineConn {
        s: BufReader::new(s),
        reply: Vec::with_capacity(512),
    })
}

/// Aborts a task when dropped.
pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts a line echo server on a loopback port.
pub(super) async fn start_line_server<W: Wrap>(
    w: W,
) -> Result<(std::net::SocketAddr, AbortOnDrop), BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(BenchError::io("binding the echo server"))?;
    let addr = listener
        .local_addr()
        .map_err(BenchError::io("binding the echo server"))?;
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
pub(super) async fn concurrent_lines<W: Wrap>(
    kind: Kind,
    addr: std::net::SocketAddr,
    w: &W,
    opts: &Options,
    line: &[u8],
    progress: &Arc<dyn Progress>,
) -> Result<Duration, BenchError> {
    let mut conns = Vec::with_capacity(opts.concurrency);
    for _ in 0..opts.concurrency {
        conns.push(line_conn(addr, w).await?);
    }
    progress.phase(
        &format!("{}: concurrent", kind.name()),
        opts.requests as u64,
    );
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (mut conn, n) in conns
        .into_iter()
        .zip(shares(opts.requests, opts.concurrency))
    {
        let (line, progress) = (line.to_vec(), progress.clone());
        tasks.spawn(async move {
            for _ in 0..n {
                conn.round_trip(&line).await?;
                progress.advance(1);
            }
            Ok::<(), BenchError>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| BenchError::Failed(format!("a {} worker failed: {e}", kind.name())))??;
    }
    Ok(start.elapsed())
}

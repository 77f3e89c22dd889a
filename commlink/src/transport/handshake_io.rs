//! Handshake I/O: connection errors, reading and writing CR LF lines on a byte stream, and
//! both ends of the plaintext handshake (the pure parts live in [`crate::handshake`]).

use rand::TryRng as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};

use super::LinkConfig;
use crate::crypto::{self, NONCE_LEN, OpenError, Opener, Sealer, Side};
use crate::frame::{self, FrameError, LineDecoder};
use crate::handshake::{self, HandshakeError, Hello, Welcome};
use crate::refusal::RefusalCode;
use crate::tobj::TobjError;

#[derive(Debug, thiserror::Error)]
pub(super) enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bad line: {0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Open(#[from] OpenError),
    #[error("{0}")]
    Handshake(#[from] HandshakeError),
    #[error("malformed tobj: {0}")]
    Tobj(#[from] TobjError),
    #[error("peer closed the connection")]
    Closed,
    #[error("{0}")]
    Protocol(String),
}

impl ConnError {
    /// The code sent to the peer before closing.
    pub(super) fn code(&self) -> RefusalCode {
        match self {
            ConnError::Frame(_) => RefusalCode::BadLine,
            ConnError::Open(_) => RefusalCode::BadPacket,
            ConnError::Tobj(_) => RefusalCode::BadRequest,
            _ => RefusalCode::Protocol,
        }
    }
}

/// Reads CR LF lines off a stream into one buffer it reuses: a line is handed out as a
/// slice of that buffer (no copy, no allocation), and the bytes read after it stay for the
/// next call. Cancel-safe: a read that is dropped loses nothing.
pub(super) struct LineReader<R> {
    pub(super) r: R,
    buf: Vec<u8>,
    /// Where the unread bytes of `buf` start.
    start: usize,
    dec: LineDecoder,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(super) fn new(r: R, max: usize) -> Self {
        LineReader {
            r,
            buf: Vec::with_capacity(16 * 1024),
            start: 0,
            dec: LineDecoder::new(max),
        }
    }

    pub(super) fn set_max(&mut self, max: usize) {
        self.dec = LineDecoder::new(max);
    }

    /// The same reader over a boxed read half (its buffered bytes kept).
    pub(super) fn boxed(self) -> LineReader<Box<dyn AsyncRead + Send + Unpin>>
    where
        R: Send + 'static,
    {
        LineReader {
            r: Box::new(self.r),
            buf: self.buf,
            start: self.start,
            dec: self.dec,
        }
    }

    /// Where the next buffered line lies in `buf`, taking it off the unread bytes.
    fn next_buffered(&mut self) -> Result<Option<std::ops::Range<usize>>, ConnError> {
        Ok(self.dec.find_line(&self.buf, self.start)?.map(|len| {
            let line = self.start..self.start + len;
            self.start += len + 2;
            line
        }))
    }

    /// Polls for the next line (reading when none is buffered); `Ready(Ok(range))` is where
    /// it lies, for [`LineReader::at`]. The read registers `cx`'s waker with the stream, as
    /// any poll does: the task that polled last is the one woken.
    pub(super) fn poll_line(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<std::ops::Range<usize>, ConnError>> {
        use std::task::Poll;
        loop {
            if let Some(line) = self.next_buffered()? {
                return Poll::Ready(Ok(line));
            }
            self.compact();
            let read =
                tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.r), cx, &mut self.buf);
            match read {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(ConnError::Closed)),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The line at `range` (as [`LineReader::poll_line`] gave it; valid until the next read).
    pub(super) fn at(&self, range: std::ops::Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Keeps only the unread part of the buffer (usually nothing, or the start of one line),
    /// with room to read into.
    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
        } else if self.start > 0 {
            self.buf.drain(..self.start);
        }
        self.start = 0;
        self.buf.reserve(16 * 1024);
    }

    /// Polls reading and dropping whatever the peer still sends: `Ready` once it closes or
    /// fails.
    pub(super) fn poll_discard(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        use std::task::Poll;
        loop {
            self.buf.clear();
            self.start = 0;
            self.buf.reserve(16 * 1024);
            let read =
                tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.r), cx, &mut self.buf);
            match read {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The next line, without its CR LF.
    pub(super) async fn line(&mut self) -> Result<&[u8], ConnError> {
        let line = std::future::poll_fn(|cx| self.poll_line(cx)).await?;
        Ok(self.at(line))
    }
}

pub(super) async fn write_line<W: AsyncWrite + Unpin>(
    w: &mut W,
    line: &str,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(line.len() + 2);
    frame::encode(line, &mut out);
    w.write_all(&out).await?;
    w.flush().await
}

pub(super) fn nonce() -> Result<[u8; NONCE_LEN], ConnError> {
    let mut n = [0u8; NONCE_LEN];
    rand::rngs::SysRng
        .try_fill_bytes(&mut n)
        .map_err(|e| ConnError::Protocol(format!("OS random number generator failed: {e}")))?;
    Ok(n)
}

pub(super) struct Established<S> {
    pub(super) reader: LineReader<tokio::io::ReadHalf<S>>,
    pub(super) writer: tokio::io::WriteHalf<S>,
    pub(super) sealer: Sealer,
    pub(super) opener: Opener,
}

/// Runs the initiator's handshake; `port` is our bound source port, or a virtual port when
/// `virtual_port` (the carrier hides the source port from the acceptor).
pub(super) async fn initiate<S: AsyncRead + AsyncWrite>(
    stream: S,
    cfg: &LinkConfig,
    port: u16,
    virtual_port: bool,
) -> Result<Established<S>, ConnError> {
    let (r, mut w) = tokio::io::split(stream);
    let mut reader = LineReader::new(r, handshake::MAX_HANDSHAKE_LINE);
    let nonce_i = nonce()?;
    let hello = Hello {
        suite: cfg.suite,
        port,
        virtual_port,
        nonce: nonce_i,
        bag: cfg.bag.fingerprint(),
    };
    write_line(&mut w, &hello.to_line()).await?;
    let welcome = Welcome::parse(reader.line().await?)?;
    if welcome.suite != cfg.suite {
        return Err(ConnError::Protocol(format!(
            "peer answered with suite {} but we asked for {}",
            welcome.suite.name(),
            cfg.suite.name()
        )));
    }
    let entry = cfg.bag.entry_for_port(port);
    let (sealer, opener) = crypto::derive(
        cfg.suite,
        entry,
        port,
        &nonce_i,
        &welcome.nonce,
        Side::Initiator,
    );
    reader.set_max(cfg.max_line);
    Ok(Established {
        reader,
        writer: w,
        sealer,
        opener,
    })
}

/// What the acceptor knows of the initiator's port, to check its HELLO against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeenPort {
    /// A raw TCP connection: the peer's source port as this end sees it. A plain port in
    /// HELLO must equal it; a virtual port is taken only with `accept_proxied`.
    Tcp(u16),
    /// A carried stream (the commlink inside an HTTPS upgrade or a relay attachment): no
    /// source port is visible, so HELLO must announce a virtual port, which is then taken.
    Carried,
}

impl std::fmt::Display for SeenPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeenPort::Tcp(p) => write!(f, "port {p}"),
            SeenPort::Carried => f.write_str("no port (a carried link)"),
        }
    }
}
/// Runs the acceptor's handshake; `seen_port` is the peer's port as this end sees it.
pub(super) async fn accept_handshake<S: AsyncRead + AsyncWrite>(
    stream: S,
    cfg: &LinkConfig,
    seen: SeenPort,
) -> Result<Established<S>, ConnError> {
    let (r, mut w) = tokio::io::split(stream);
    let mut reader = LineReader::new(r, handshake::MAX_HANDSHAKE_LINE);
    let line = reader.line().await?;
    let refuse = |code: &'static str, text: String| (code, text);
    let verdict = match Hello::parse(line) {
        Err(HandshakeError::UnknownSuite(s)) => Err(refuse(
            "suite",
            format!(
                "this end requires suite {} and does not know the offered suite {s:?}; set the same [link] suite on both hosts",
                cfg.suite.name()
            ),
        )),
        Err(e) => Err(refuse("malformed", e.to_string())),
        Ok(h) if h.suite != cfg.suite => Err(refuse(
            "suite",
            format!(
                "this end requires suite {} but the initiator offered {}; set the same [link] suite on both hosts",
                cfg.suite.name(),
                h.suite.name()
            ),
        )),
        Ok(h) if h.bag != cfg.bag.fingerprint() => Err(refuse(
            "bag-mismatch",
            format!(
                "the initiator's key bag (fingerprint {}) differs from this end's ({}); copy the same key bag file to both hosts",
                h.bag,
                cfg.bag.fingerprint()
            ),
        )),
        Ok(h) if h.virtual_port && !cfg.accept_proxied && seen != SeenPort::Carried => Err(refuse(
            "virtual-port",
            format!(
                "the initiator announced virtual port {} (it connects through a proxy), but this listener takes only raw TCP initiators; set accept_proxied = true on this end, or connect directly",
                h.port
            ),
        )),
        Ok(h) if !h.virtual_port && seen == SeenPort::Carried => Err(refuse(
            "port-mismatch",
            format!(
                "the initiator announced source port {} but this link is carried (HTTPS or relay), where no source port is visible; the initiator must announce a virtual port (v<P>)",
                h.port
            ),
        )),
        Ok(h) if !h.virtual_port && SeenPort::Tcp(h.port) != seen => Err(refuse(
            "port-mismatch",
            format!(
                "the initiator bound source port {} but this end sees {seen}: something (NAT, a proxy) rewrote the port, so the two ends would pick different keys; connect directly or exempt this link from NAT",
                h.port
            ),
        )),
        Ok(h) => Ok(h),
    };
    let hello = match verdict {
        Ok(h) => h,
        Err((code, text)) => {
            // Best effort: the peer may already be gone.
            let _ = write_line(&mut w, &handshake::error_line(code, &text)).await;
            return Err(ConnError::Handshake(HandshakeError::Refused {
                code: code.into(),
                text,
            }));
        }
    };
    let nonce_a = nonce()?;
    let welcome = Welcome {
        suite: cfg.suite,
        nonce: nonce_a,
    };
    write_line(&mut w, &welcome.to_line()).await?;
    let entry = cfg.bag.entry_for_port(hello.port);
    let (sealer, opener) = crypto::derive(
        cfg.suite,
        entry,
        hello.port,
        &hello.nonce,
        &nonce_a,
        Side::Acceptor,
    );
    reader.set_max(cfg.max_line);
    Ok(Established {
        reader,
        writer: w,
        sealer,
        opener,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::keys::KeyBag;
    use tokio::io::AsyncReadExt as _;

    fn cfg() -> LinkConfig {
        LinkConfig::new(Arc::new(KeyBag::generate(8).expect("a key bag")))
    }

    #[tokio::test]
    async fn both_ends_derive_matching_keys() {
        let cfg = cfg();
        let (a, b) = tokio::io::duplex(4096);
        let (i, r) = tokio::join!(
            initiate(a, &cfg, 40001, false),
            accept_handshake(b, &cfg, SeenPort::Tcp(40001))
        );
        let (mut i, mut r) = (i.expect("initiator"), r.expect("acceptor"));
        let line = i.sealer.seal(b"to the acceptor");
        assert_eq!(
            r.opener.open(line.as_bytes()).expect("opens"),
            b"to the acceptor"
        );
        let line = r.sealer.seal(b"to the initiator");
        assert_eq!(
            i.opener.open(line.as_bytes()).expect("opens"),
            b"to the initiator"
        );
    }

    #[tokio::test]
    async fn a_rewritten_port_is_refused_with_its_code_at_both_ends() {
        let cfg = cfg();
        let (a, b) = tokio::io::duplex(4096);
        let (i, r) = tokio::join!(
            initiate(a, &cfg, 40001, false),
            accept_handshake(b, &cfg, SeenPort::Tcp(51000))
        );
        for err in [
            i.err().expect("initiator refused"),
            r.err().expect("acceptor refused"),
        ] {
            match err {
                ConnError::Handshake(HandshakeError::Refused { code, .. }) => {
                    assert_eq!(code, "port-mismatch")
                }
                other => panic!("expected a port-mismatch refusal, got {other}"),
            }
        }
    }

    #[tokio::test]
    async fn a_virtual_port_picks_the_keys_where_the_acceptor_takes_proxied_initiators() {
        let mut cfg = cfg();
        cfg.accept_proxied = true;
        let (a, b) = tokio::io::duplex(4096);
        // The acceptor sees the proxy's port (3128), not the announced 40001.
        let (i, r) = tokio::join!(
            initiate(a, &cfg, 40001, true),
            accept_handshake(b, &cfg, SeenPort::Tcp(3128))
        );
        let (mut i, mut r) = (i.expect("initiator"), r.expect("acceptor"));
        let line = i.sealer.seal(b"through the proxy");
        assert_eq!(
            r.opener.open(line.as_bytes()).expect("opens"),
            b"through the proxy"
        );
        // Raw TCP on the same listener still gets its port check.
        let (a, b) = tokio::io::duplex(4096);
        let (i, _) = tokio::join!(
            initiate(a, &cfg, 40001, false),
            accept_handshake(b, &cfg, SeenPort::Tcp(3128))
        );
        assert!(
            matches!(i, Err(ConnError::Handshake(HandshakeError::Refused { ref code, .. })) if code == "port-mismatch")
        );
    }

    #[tokio::test]
    async fn a_virtual_port_is_refused_by_default_with_its_own_code() {
        let cfg = cfg();
        let (a, b) = tokio::io::duplex(4096);
        let (i, r) = tokio::join!(
            initiate(a, &cfg, 40001, true),
            accept_handshake(b, &cfg, SeenPort::Tcp(40001))
        );
        for err in [
            i.err().expect("initiator refused"),
            r.err().expect("acceptor refused"),
        ] {
            match err {
                ConnError::Handshake(HandshakeError::Refused { code, text }) => {
                    assert_eq!(code, "virtual-port");
                    assert!(text.contains("accept_proxied"), "{text}");
                }
                other => panic!("expected a virtual-port refusal, got {other}"),
            }
        }
    }

    #[tokio::test]
    async fn a_different_bag_is_refused() {
        let (a, b) = tokio::io::duplex(4096);
        let (mine, theirs) = (cfg(), cfg());
        let (i, r) = tokio::join!(
            initiate(a, &mine, 7, false),
            accept_handshake(b, &theirs, SeenPort::Tcp(7))
        );
        assert!(
            matches!(i, Err(ConnError::Handshake(HandshakeError::Refused { ref code, .. })) if code == "bag-mismatch")
        );
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn line_reader_enforces_its_limit_and_reports_a_cut_line() {
        let (mut w, r) = tokio::io::duplex(4096);
        let mut reader = LineReader::new(r, 16);
        w.write_all(b"short\r\n").await.expect("write");
        assert_eq!(reader.line().await.expect("a line"), b"short");
        w.write_all(b"0123456789abcdefghij\r\n")
            .await
            .expect("write");
        assert!(matches!(reader.line().await, Err(ConnError::Frame(_))));

        let (mut w, r) = tokio::io::duplex(4096);
        let mut reader = LineReader::new(r, 16);
        w.write_all(b"no end").await.expect("write");
        drop(w);
        assert!(matches!(reader.line().await, Err(ConnError::Closed)));
    }

    #[tokio::test]
    async fn write_line_frames_with_cr_lf() {
        let (mut w, mut r) = tokio::io::duplex(4096);
        write_line(&mut w, "FFS/1 X").await.expect("write");
        drop(w);
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"FFS/1 X\r\n");
    }
}

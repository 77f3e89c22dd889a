//! A WebSocket (RFC 6455) as a byte stream, for the https carrier: the client's opening
//! handshake (`Sec-WebSocket-Key`/`-Accept`, subprotocol `ffs-commlink.1`) and [`WsStream`],
//! which sends what is written as binary messages (masked from the client, unmasked from
//! the server) and reads the payload bytes of the other end's data messages. The client end
//! is the agent's ([`WsStream::new`]); the server end the web's, once its HTTPS listener
//! has answered the upgrade ([`WsStream::server`]). Message boundaries carry no meaning: the
//! commlink's own CR LF lines run inside, exactly as over TCP.
//!
//! Frame encoding and parsing are pure functions ([`encode_frame`], [`parse_frame`]); only
//! [`WsStream`] and [`handshake`] do I/O.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use base64::Engine as _;
use sha1::Digest as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};

/// The subprotocol both ends name in the upgrade.
pub const SUBPROTOCOL: &str = "ffs-commlink.1";
/// RFC 6455's GUID for `Sec-WebSocket-Accept`.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Longest upgrade reply head read.
const MAX_REPLY_HEAD: usize = 8 * 1024;
/// Largest frame payload accepted from the server (the web sends at most 64 KiB).
pub const MAX_FRAME: usize = 1024 * 1024;
/// Largest frame payload the server end accepts from the client (which sends at most
/// 16 KiB).
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;
/// Largest payload this end puts in one frame.
const MAX_OUT: usize = 16 * 1024;
/// Room offered to each read from the underlying stream.
const READ_CHUNK: usize = 16 * 1024;

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// `Sec-WebSocket-Accept` for a key.
pub fn accept_key(key: &str) -> String {
    let digest = sha1::Sha1::digest(format!("{key}{GUID}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// Appends one final frame (`opcode`, `payload`) to `out`, masked with `mask` when given (a
/// client must mask every frame).
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    out.push(0x80 | opcode);
    let m = if mask.is_some() { 0x80 } else { 0 };
    let n = payload.len();
    if n < 126 {
        out.push(m | n as u8);
    } else if n <= usize::from(u16::MAX) {
        out.push(m | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    let start = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[start..], mask);
}

/// One parsed frame's header: where its (unmasked) payload lies in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHead {
    /// The opcode.
    pub opcode: u8,
    /// Payload range within the buffer.
    pub payload: std::ops::Range<usize>,
    /// The mask key, if the frame was masked.
    pub mask: Option<[u8; 4]>,
}

/// Parses the frame at the start of `buf`: `Ok(None)` until it is complete; errors for
/// reserved bits, unknown opcodes, oversized or fragmented control frames, and payloads
/// over `max`.
pub fn parse_frame(buf: &[u8], max: usize) -> Result<Option<FrameHead>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err("reserved bits set (no extension was negotiated)".into());
    }
    let opcode = b0 & 0x0F;
    if !matches!(
        opcode,
        OP_CONT | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(format!("unknown opcode {opcode:#x}"));
    }
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (u64::from_be_bytes(a), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode >= OP_CLOSE && (len > 125 || b0 & 0x80 == 0) {
        return Err("malformed control frame".into());
    }
    if len > max as u64 {
        return Err(format!("frame of {len} bytes (limit {max})"));
    }
    let mask = if masked {
        let Some(k) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([k[0], k[1], k[2], k[3]])
    } else {
        None
    };
    let end = at + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(FrameHead {
        opcode,
        payload: at..end,
        mask,
    }))
}

fn invalid(why: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.into())
}

/// Sends the upgrade request for `path` on `host` and checks the `101` reply. Returns what
/// the server sent after the reply head (the first frames, if any arrived with it).
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    path: &str,
) -> std::io::Result<Vec<u8>> {
    use rand::RngExt as _;
    let mut nonce = [0u8; 16];
    rand::rng().fill(&mut nonce[..]);
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ffs-commlink\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut buf = Vec::with_capacity(512);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() >= MAX_REPLY_HEAD {
            return Err(invalid(format!(
                "upgrade reply head longer than {MAX_REPLY_HEAD} bytes"
            )));
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed the connection before answering the upgrade",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let rest = buf.split_off(end);
    let head = String::from_utf8_lossy(&buf);
    check_reply(&head, &key)?;
    Ok(rest)
}

/// Checks an upgrade reply head: `101`, `Upgrade: websocket`, the accept key and our
/// subprotocol.
fn check_reply(head: &str, key: &str) -> std::io::Result<()> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let code = status_line.split(' ').nth(1).unwrap_or("");
    if !status_line.starts_with("HTTP/1.1 ") || code != "101" {
        let shown: String = status_line
            .chars()
            .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
            .take(200)
            .collect();
        let hint = if code == "404" {
            " (is [web] link_path set, and does the URL end with it?)"
        } else {
            ""
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("the web refused the link upgrade: {shown}{hint}"),
        ));
    }
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(invalid("101 without Upgrade: websocket"));
    }
    if header("sec-websocket-accept") != Some(accept_key(key).as_str()) {
        return Err(invalid("101 with a wrong Sec-WebSocket-Accept"));
    }
    if header("sec-websocket-protocol") != Some(SUBPROTOCOL) {
        return Err(invalid(format!(
            "the endpoint did not agree to the {SUBPROTOCOL} subprotocol"
        )));
    }
    Ok(())
}

/// A byte stream over one end of an open WebSocket.
pub struct WsStream<S> {
    inner: S,
    /// The server end: the other end's frames must be masked, ours are not.
    server: bool,
    /// Bytes read from `inner`, not yet parsed: `rbuf[rpos..rend]`. The vector keeps its
    /// length (zeroed once, grown when a frame needs it), so a read needs no zeroing.
    rbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
    /// Payload bytes parsed, not yet read, from `dpos`.
    data: Vec<u8>,
    dpos: usize,
    /// Encoded frames not yet written, from `wpos`.
    wbuf: Vec<u8>,
    wpos: usize,
    /// The server closed (a close frame or end of stream between frames).
    eof: bool,
}

impl<S> WsStream<S> {
    /// Wraps an upgraded stream; `early` is what [`handshake`] read past the reply head.
    pub fn new(inner: S, early: Vec<u8>) -> WsStream<S> {
        WsStream::with_role(inner, early, false)
    }

    /// The server end of a stream whose upgrade was answered with `101`; `early` is what
    /// the server had read past the request head. Frames from the client must be masked
    /// (at most [`MAX_CLIENT_FRAME`] bytes); ours go unmasked.
    pub fn server(inner: S, early: Vec<u8>) -> WsStream<S> {
        WsStream::with_role(inner, early, true)
    }

    fn with_role(inner: S, early: Vec<u8>, server: bool) -> WsStream<S> {
        WsStream {
            inner,
            server,
            rend: early.len(),
            rbuf: early,
            rpos: 0,
            data: Vec::new(),
            dpos: 0,
            wbuf: Vec::new(),
            wpos: 0,
            eof: false,
        }
    }
}

/// Unmasks (or masks: the same XOR) `bytes` with `key`, if there is one (RFC 6455 §5.3).
fn unmask(bytes: &mut [u8], key: Option<[u8; 4]>) {
    if let Some(key) = key {
        bytes
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b ^= key[i % 4]);
    }
}

fn mask_key() -> [u8; 4] {
    use rand::RngExt as _;
    rand::rng().random()
}

impl<S> WsStream<S> {
    /// Our frames' mask: a fresh key from the client, none from the server.
    fn our_mask(&self) -> Option<[u8; 4]> {
        (!self.server).then(mask_key)
    }

    fn peer(&self) -> &'static str {
        if self.server { "the agent" } else { "the web" }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Writes out `wbuf`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.wbuf[self.wpos..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.wbuf.clear();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }

    /// Parses one complete frame out of `rbuf`, if there is one. Data goes to `data`; a ping
    /// queues its pong; a close ends the stream.
    fn take_frame(&mut self) -> std::io::Result<bool> {
        let max = if self.server {
            MAX_CLIENT_FRAME
        } else {
            MAX_FRAME
        };
        let buf = &self.rbuf[self.rpos..self.rend];
        let Some(head) = parse_frame(buf, max).map_err(invalid)? else {
            return Ok(false);
        };
        match (self.server, head.mask) {
            (false, Some(_)) => return Err(invalid("the server masked a frame")),
            (true, None) => return Err(invalid("the client sent an unmasked frame")),
            _ => {}
        }
        let payload = &buf[head.payload.clone()];
        match head.opcode {
            OP_CONT | OP_TEXT | OP_BINARY => {
                if self.dpos == self.data.len() {
                    self.data.clear();
                    self.dpos = 0;
                }
                let start = self.data.len();
                self.data.extend_from_slice(payload);
                unmask(&mut self.data[start..], head.mask);
            }
            OP_PING => {
                let mut p = payload.to_vec();
                unmask(&mut p, head.mask);
                let mask = self.our_mask();
                encode_frame(&mut self.wbuf, OP_PONG, &p, mask);
            }
            OP_CLOSE => self.eof = true,
            _ => {}
        }
        self.rpos += head.payload.end;
        if self.rpos == self.rend {
            self.rpos = 0;
            self.rend = 0;
        }
        Ok(true)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.dpos < this.data.len() {
                let n = buf.remaining().min(this.data.len() - this.dpos);
                buf.put_slice(&this.data[this.dpos..this.dpos + n]);
                this.dpos += n;
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.take_frame()? {
                if !this.wbuf.is_empty() {
                    // A pong: send it when the socket lets us, without holding up reading.
                    if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                        return Poll::Ready(Err(e));
                    }
                }
                continue;
            }
            if this.rpos > 0 {
                this.rbuf.copy_within(this.rpos..this.rend, 0);
                this.rend -= this.rpos;
                this.rpos = 0;
            }
            if this.rbuf.len() - this.rend < READ_CHUNK {
                this.rbuf.resize(this.rend + READ_CHUNK, 0);
            }
            let mut rb = ReadBuf::new(&mut this.rbuf[this.rend..]);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut rb);
            let got = rb.filled().len();
            this.rend += got;
            ready!(polled)?;
            if got == 0 {
                if this.rend == 0 {
                    this.eof = true;
                    continue;
                }
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{} closed the link in the middle of a frame", this.peer()),
                )));
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(MAX_OUT);
        let mask = this.our_mask();
        encode_frame(&mut this.wbuf, OP_BINARY, &buf[..n], mask);
        // Start sending now; whatever the socket does not take yet goes out on the next
        // write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_6455_accept_key() {
        // RFC 6455 §1.3's example.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn frames_round_trip_at_every_length_form() {
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut out = Vec::new();
                encode_frame(&mut out, OP_BINARY, &payload, mask);
                for cut in [0, 1, out.len() / 2, out.len() - 1] {
                    assert_eq!(parse_frame(&out[..cut], MAX_FRAME), Ok(None), "cut {cut}");
                }
                let head = parse_frame(&out, MAX_FRAME)
                    .expect("valid")
                    .expect("complete");
                assert_eq!(head.opcode, OP_BINARY);
                assert_eq!(head.mask, mask);
                assert_eq!(head.payload.end, out.len());
                let mut got = out[head.payload].to_vec();
                unmask(&mut got, mask);
                assert_eq!(got, payload, "len {len}");
            }
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        assert!(parse_frame(&[0x82 | 0x40, 0], MAX_FRAME).is_err(), "RSV1");
        assert!(parse_frame(&[0x83, 0], MAX_FRAME).is_err(), "opcode 3");
        assert!(
            parse_frame(&[0x09, 0], MAX_FRAME).is_err(),
            "fragmented ping"
        );
        assert!(
            parse_frame(&[0x89, 126, 0, 126], MAX_FRAME).is_err(),
            "long ping"
        );
        let mut big = vec![0x82, 127];
        big.extend_from_slice(&(MAX_FRAME as u64 + 1).to_be_bytes());
        assert!(parse_frame(&big, MAX_FRAME).is_err(), "oversized");
    }

    #[test]
    fn replies_other_than_our_upgrade_are_refused() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let good = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n",
            accept_key(key)
        );
        assert!(check_reply(&good, key).is_ok());
        let err = check_reply("HTTP/1.1 404 Not Found\r\n\r\n", key).unwrap_err();
        assert!(err.to_string().contains("404 Not Found"), "{err}");
        assert!(err.to_string().contains("link_path"), "{err}");
        assert!(check_reply(&good.replace("s3pP", "XXXX"), key).is_err());
        let other = good.replace(SUBPROTOCOL, "chat");
        assert!(check_reply(&other, key).is_err());
        assert!(check_reply(&good.replace("websocket\r\nConn", "h2c\r\nConn"), key).is_err());
    }

    #[tokio::test]
    async fn a_stream_carries_bytes_both_ways_and_answers_pings() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        // The server's first frames arrive with the reply head.
        let mut early = Vec::new();
        encode_frame(&mut early, OP_TEXT, b"HEL", None);
        let mut ws = WsStream::new(client, early);
        let mut frames = Vec::new();
        encode_frame(&mut frames, OP_PING, b"p", None);
        encode_frame(&mut frames, OP_BINARY, b"LO\r\n", None);
        server.write_all(&frames).await.expect("server writes");
        let mut got = [0u8; 7];
        ws.read_exact(&mut got).await.expect("reads");
        assert_eq!(&got, b"HELLO\r\n");
        assert_pong_then_welcome(&mut ws, &mut server, true).await;
        let mut close = Vec::new();
        encode_frame(&mut close, OP_CLOSE, b"", None);
        server.write_all(&close).await.expect("closes");
        assert_eq!(ws.read(&mut got).await.expect("eof"), 0);
    }

    /// `ws`, having read a ping `p`, writes `WELCOME` CR LF: the peer reads the pong, then
    /// that line, masked as `masked` says.
    async fn assert_pong_then_welcome(
        ws: &mut WsStream<tokio::io::DuplexStream>,
        peer: &mut tokio::io::DuplexStream,
        masked: bool,
    ) {
        ws.write_all(b"WELCOME\r\n").await.expect("writes");
        ws.flush().await.expect("flushes");
        let mut raw = vec![0u8; 64];
        let n = peer.read(&mut raw).await.expect("the peer reads");
        assert_eq!(
            frames_in(&raw[..n], masked),
            vec![
                (OP_PONG, b"p".to_vec()),
                (OP_BINARY, b"WELCOME\r\n".to_vec())
            ]
        );
    }

    /// The whole frames in `raw` as (opcode, unmasked payload); each must be masked (a
    /// client's) or not (a server's) as `masked` says.
    fn frames_in(raw: &[u8], masked: bool) -> Vec<(u8, Vec<u8>)> {
        let mut seen = Vec::new();
        let mut at = 0;
        while let Some(h) = parse_frame(&raw[at..], MAX_FRAME).expect("valid") {
            assert_eq!(h.mask.is_some(), masked, "masked frames from clients only");
            let mut p = raw[at..][h.payload.clone()].to_vec();
            unmask(&mut p, h.mask);
            seen.push((h.opcode, p));
            at += h.payload.end;
        }
        seen
    }

    #[tokio::test]
    async fn the_server_end_unmasks_the_clients_frames_and_sends_unmasked() {
        let (theirs, mut client) = tokio::io::duplex(1 << 16);
        // What the server had read past the request head: half a masked frame.
        let mut first = Vec::new();
        encode_frame(&mut first, OP_BINARY, b"HELLO\r\n", Some([9, 8, 7, 6]));
        let rest = first.split_off(5);
        let mut ws = WsStream::server(theirs, first);
        let mut more = rest;
        encode_frame(&mut more, OP_PING, b"p", Some([1, 2, 3, 4]));
        encode_frame(&mut more, OP_CONT, b"x\r\n", Some([5, 5, 5, 5]));
        client.write_all(&more).await.expect("client writes");
        let mut got = [0u8; 10];
        ws.read_exact(&mut got).await.expect("reads");
        assert_eq!(&got, b"HELLO\r\nx\r\n");
        assert_pong_then_welcome(&mut ws, &mut client, false).await;
        // An unmasked frame from a client is a protocol error.
        let mut bad = Vec::new();
        encode_frame(&mut bad, OP_BINARY, b"no mask", None);
        client.write_all(&bad).await.expect("client writes");
        let err = ws.read(&mut got).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    }
}

//! A small HTTPS client for talking to a stager: hyper 1 (HTTP/1.1) over tokio-rustls, with
//! the stager's certificate trusted by a pinned SHA-256 fingerprint, a CA file, or the
//! system bundle.
//!
//! Used by `ffs publish --remote` (objects streamed from disk, never whole in memory) and
//! meant for anything else that talks to a stager's HTTPS listener (replication pulls).
//!
//! ```no_run
//! # async fn f() -> Result<(), ftp_stager::http_client::ClientError> {
//! use ftp_stager::http_client::{HttpsClient, Trust};
//! let c = HttpsClient::new("https://files.example.com:8444", Trust::System)?
//!     .with_bearer("ffspt_…")?;
//! let r = c.get("/publish/v1/objects/0123…").await?;
//! println!("{} {}", r.status, r.text());
//! # Ok(()) }
//! ```
//!
//! - [`HttpsClient::get`], [`HttpsClient::post_json`]: the answer's body is read whole, up
//!   to [`MAX_BODY`]; [`HttpsClient::get_stream`] hands the body over piece by piece.
//! - [`HttpsClient::put_stream`]: the request body is any stream of byte pieces with a
//!   known total length (`Content-Length`); [`file_body`] reads a file range on a blocking
//!   thread, a few pieces ahead of the network, and shows each piece to a callback (to hash
//!   or count it on the way).
//! - Idle connections are kept and reused for small requests (GET, POST); one that
//!   fails on a reused connection the server had closed meanwhile is retried once on a new
//!   one. A streamed PUT always gets its own connection, since its body cannot be replayed.
//!
//! [`Trust::Pin`] accepts exactly the certificate with that SHA-256 (whatever its names,
//! issuer or dates; handshake signatures are still verified against it): the stager logs
//! it as `tls_sha256`, for self-signed stagers.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

/// Largest answer body [`HttpsClient::get`] and [`HttpsClient::post_json`] read.
pub const MAX_BODY: usize = 16 << 20;

/// Size of the pieces [`file_body`] reads.
pub const PIECE: usize = 1 << 20;

/// The body type of every request this client sends.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, io::Error>;

/// What can go wrong talking to a stager.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not `https://HOST[:PORT][/PREFIX]`.
    #[error("{url}: {why}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The trust setting (pin, CA file, system bundle) cannot be used.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// A header value (e.g. the token) that HTTP cannot carry.
    #[error("a header value HTTP cannot carry")]
    Header,
    /// No TCP connection.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// host:port.
        addr: String,
        /// The error.
        source: io::Error,
    },
    /// The TLS handshake failed (wrong pin, untrusted certificate, …).
    #[error("TLS with {addr}: {source}")]
    Tls {
        /// host:port.
        addr: String,
        /// The error (rustls' reason inside).
        source: io::Error,
    },
    /// The HTTP exchange failed (connection broken, malformed answer, body read error).
    #[error("HTTP with {addr}: {source}")]
    Http {
        /// host:port.
        addr: String,
        /// hyper's error; its source names an I/O error from the body, if any.
        source: hyper::Error,
    },
    /// The answer's body is larger than [`MAX_BODY`].
    #[error("the answer from {addr} is over {limit} bytes")]
    TooLarge {
        /// host:port.
        addr: String,
        /// The limit.
        limit: usize,
    },
}

impl ClientError {
    /// Whether the request may have been cut off by the network (worth resuming or
    /// retrying), as opposed to a configuration or trust problem.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClientError::Connect { .. } | ClientError::Http { .. })
    }
}

pub use commlink::transport::{Trust, TrustError, parse_pin};

/// A complete answer.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body (at most [`MAX_BODY`]).
    pub body: Bytes,
}

impl Response {
    /// A header's value as text, if present and ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as trimmed text (lossy), for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_owned()
    }
}

/// An answer whose body is read piece by piece ([`StreamingResponse::chunk`]).
#[derive(Debug)]
pub struct StreamingResponse {
    /// HTTP status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    body: Incoming,
    addr: String,
}

impl StreamingResponse {
    /// A header's value as text, if present and ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(source)) => {
                    return Err(ClientError::Http {
                        addr: self.addr.clone(),
                        source,
                    });
                }
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        return Ok(Some(d));
                    }
                }
            }
        }
    }
}

/// An HTTPS client for one server (`https://host:port`), see the module documentation.
pub struct HttpsClient {
    host: String,
    port: u16,
    /// `host:port` as the Host header and messages spell it.
    authority: String,
    /// Path prefix of the base URL, without a trailing slash.
    prefix: String,
    tls: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
    bearer: Option<HeaderValue>,
    idle: Mutex<Vec<SendRequest<Body>>>,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient")
            .field("authority", &self.authority)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Splits `https://HOST[:PORT][/PREFIX]` (IPv6 hosts in brackets).
fn split_url(url: &str) -> Result<(String, u16, String), ClientError> {
    let bad = |why| ClientError::Url {
        url: url.to_owned(),
        why,
    };
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| bad("expected https://HOST[:PORT]"))?;
    let (hostport, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        match after.strip_prefix(':') {
            Some(p) => (h, p.parse().map_err(|_| bad("bad port"))?),
            None if after.is_empty() => (h, 443),
            None => return Err(bad("bad host")),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad("bad port"))?),
            None => (hostport, 443),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok((host.to_owned(), port, prefix.to_owned()))
}

impl HttpsClient {
    /// A client for `base_url` (`https://HOST[:PORT][/PREFIX]`; paths given to the
    /// methods are appended to PREFIX), trusting the server as `trust` says.
    pub fn new(base_url: &str, trust: Trust) -> Result<HttpsClient, ClientError> {
        let (host, port, prefix) = split_url(base_url)?;
        let cfg = commlink::transport::trust::client_config(&trust)?;
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| {
            ClientError::Url {
                url: base_url.to_owned(),
                why: "bad host name",
            }
        })?;
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(HttpsClient {
            host,
            port,
            authority,
            prefix,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            name,
            bearer: None,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `Authorization: Bearer TOKEN` with every request.
    pub fn with_bearer(mut self, token: &str) -> Result<HttpsClient, ClientError> {
        let mut v =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ClientError::Header)?;
        v.set_sensitive(true);
        self.bearer = Some(v);
        Ok(self)
    }

    /// `host:port` of the server.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// A new TLS connection, HTTP/1.1 handshake done, its driver spawned.
    async fn connect(&self) -> Result<SendRequest<Body>, ClientError> {
        let addr = || self.authority.clone();
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(self.name.clone(), tcp)
            .await
            .map_err(|source| ClientError::Tls {
                addr: addr(),
                source,
            })?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|source| ClientError::Http {
                addr: addr(),
                source,
            })?;
        let who = addr();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(server = %who, error = %e, "HTTPS connection ended");
            }
        });
        Ok(send)
    }

    /// An idle connection that is still open, if any.
    async fn reuse(&self) -> Option<SendRequest<Body>> {
        loop {
            let s = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
            let mut s = s;
            if !s.is_closed() && s.ready().await.is_ok() {
                return Some(s);
            }
        }
    }

    fn keep(&self, s: SendRequest<Body>) {
        if !s.is_closed() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < 4 {
                idle.push(s);
            }
        }
    }

    fn request(&self, method: Method, path: &str, body: Body) -> Request<Body> {
        let mut r = Request::new(body);
        *r.method_mut() = method;
        let uri = format!("{}{path}", self.prefix);
        // The path comes from our own callers; a malformed one is sent as "/" and the
        // server's 404 says so rather than a panic here.
        *r.uri_mut() = uri.parse().unwrap_or_else(|_| hyper::Uri::from_static("/"));
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.authority) {
            h.insert(header::HOST, v);
        }
        h.insert(header::USER_AGENT, HeaderValue::from_static("ffs"));
        if let Some(b) = &self.bearer {
            h.insert(header::AUTHORIZATION, b.clone());
        }
        r
    }

    /// Sends a request whose body can be rebuilt (`make`), on an idle connection if one
    /// is open (retried once on a new connection if that one turns out closed), and reads
    /// the whole answer.
    async fn exchange(&self, make: impl Fn() -> Request<Body>) -> Result<Response, ClientError> {
        if let Some(mut s) = self.reuse().await {
            match s.send_request(make()).await {
                Ok(r) => return self.finish(s, r).await,
                // The server closed it between requests (keep-alive timeout): nothing of
                // this request was processed.
                Err(e) if e.is_canceled() || e.is_incomplete_message() => {}
                Err(source) => {
                    return Err(ClientError::Http {
                        addr: self.authority.clone(),
                        source,
                    });
                }
            }
        }
        let mut s = self.connect().await?;
        let r = s
            .send_request(make())
            .await
            .map_err(|source| ClientError::Http {
                addr: self.authority.clone(),
                source,
            })?;
        self.finish(s, r).await
    }

    /// Reads the answer's body (bounded), then keeps the connection for reuse.
    async fn finish(
        &self,
        s: SendRequest<Body>,
        r: hyper::Response<Incoming>,
    ) -> Result<Response, ClientError> {
        let (parts, body) = r.into_parts();
        let body = self.collect(body).await?;
        self.keep(s);
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    async fn collect(&self, mut body: Incoming) -> Result<Bytes, ClientError> {
        let mut out = bytes::BytesMut::new();
        while let Some(f) = body.frame().await {
            let f = f.map_err(|source| ClientError::Http {
                addr: self.authority.clone(),
                source,
            })?;
            if let Ok(d) = f.into_data() {
                if out.len() + d.len() > MAX_BODY {
                    return Err(ClientError::TooLarge {
                        addr: self.authority.clone(),
                        limit: MAX_BODY,
                    });
                }
                out.extend_from_slice(&d);
            }
        }
        Ok(out.freeze())
    }

    /// `GET path`; the whole answer (body up to [`MAX_BODY`]).
    pub async fn get(&self, path: &str) -> Result<Response, ClientError> {
        self.get_with(path, &[]).await
    }

    /// [`get`](Self::get) with extra request headers (e.g. `If-None-Match`).
    pub async fn get_with(
        &self,
        path: &str,
        headers: &[(header::HeaderName, &str)],
    ) -> Result<Response, ClientError> {
        let mut extra = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            let v = HeaderValue::from_str(value).map_err(|_| ClientError::Header)?;
            extra.push((name.clone(), v));
        }
        self.exchange(|| {
            let mut r = self.request(Method::GET, path, empty());
            for (name, v) in &extra {
                r.headers_mut().insert(name.clone(), v.clone());
            }
            r
        })
        .await
    }

    /// `GET path` on a connection of its own; the body is read with
    /// [`StreamingResponse::chunk`] (for objects of any size).
    pub async fn get_stream(&self, path: &str) -> Result<StreamingResponse, ClientError> {
        self.get_stream_with(path, &[]).await
    }

    /// [`get_stream`](Self::get_stream) with extra request headers (e.g. `Range` to resume
    /// a download).
    pub async fn get_stream_with(
        &self,
        path: &str,
        headers: &[(header::HeaderName, &str)],
    ) -> Result<StreamingResponse, ClientError> {
        let mut req = self.request(Method::GET, path, empty());
        for (name, value) in headers {
            let v = HeaderValue::from_str(value).map_err(|_| ClientError::Header)?;
            req.headers_mut().insert(name.clone(), v);
        }
        let mut s = self.connect().await?;
        let r = s
            .send_request(req)
            .await
            .map_err(|source| ClientError::Http {
                addr: self.authority.clone(),
                source,
            })?;
        let (parts, body) = r.into_parts();
        Ok(StreamingResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            addr: self.authority.clone(),
        })
    }

    /// `POST path` with a JSON body; the whole answer.
    pub async fn post_json(
        &self,
        path: &str,
        value: &serde_json::Value,
    ) -> Result<Response, ClientError> {
        let body = Bytes::from(value.to_string());
        self.exchange(|| {
            let mut r = self.request(Method::POST, path, full(body.clone()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        })
        .await
    }

    /// `PUT path` with `len` bytes from `body` (`Content-Length: len`,
    /// `application/octet-stream`), on a connection of its own. A server that answers
    /// before the body is complete (an early refusal) still has its answer returned.
    pub async fn put_stream<S>(
        &self,
        path: &str,
        len: u64,
        body: S,
    ) -> Result<Response, ClientError>
    where
        S: futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static,
    {
        use futures_util::StreamExt as _;
        let body = http_body_util::StreamBody::new(body.map(|r| r.map(Frame::data)));
        let mut req = self.request(Method::PUT, path, body.boxed_unsync());
        let h = req.headers_mut();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let mut s = self.connect().await?;
        let r = s
            .send_request(req)
            .await
            .map_err(|source| ClientError::Http {
                addr: self.authority.clone(),
                source,
            })?;
        // Not kept for reuse: after an early answer the body may still be on its way.
        let (parts, body) = r.into_parts();
        let body = self.collect(body).await?;
        drop(s);
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
}

fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn full(b: Bytes) -> Body {
    http_body_util::Full::new(b)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Reads `len` bytes of `path` from `offset` in [`PIECE`]s on a blocking thread, up to
/// four pieces ahead of the consumer, calling `inspect` with each piece before it is
/// handed on (hash or count it there: that work then overlaps the sending). The stream
/// ends with an error if the file is shorter than `offset + len` or unreadable.
pub fn file_body(
    path: &Path,
    offset: u64,
    len: u64,
    mut inspect: impl FnMut(&[u8]) + Send + 'static,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Seek as _;
        let mut run = |tx: &tokio::sync::mpsc::Sender<io::Result<Bytes>>| -> io::Result<()> {
            let mut f = std::fs::File::open(&path)?;
            f.seek(io::SeekFrom::Start(offset))?;
            let mut left = len;
            while left > 0 {
                let want = left.min(PIECE as u64) as usize;
                // Read straight into fresh capacity (no zero-filling first).
                let mut buf = bytes::BytesMut::with_capacity(want);
                while buf.len() < want {
                    let more = want - buf.len();
                    let n = crate::fsutil::read_append(&f, &mut buf, more)?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("{} shrank while being read", path.display()),
                        ));
                    }
                }
                inspect(&buf);
                left -= want as u64;
                if tx.blocking_send(Ok(buf.freeze())).is_err() {
                    return Ok(()); // the request was dropped
                }
            }
            Ok(())
        };
        if let Err(e) = run(&tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_prefix() {
        let s = |u: &str| split_url(u).map_err(|e| e.to_string());
        assert_eq!(
            s("https://a.example:8444").unwrap(),
            ("a.example".into(), 8444, "".into())
        );
        assert_eq!(
            s("https://a.example/").unwrap(),
            ("a.example".into(), 443, "".into())
        );
        assert_eq!(
            s("https://[::1]:9/x/y/").unwrap(),
            ("::1".into(), 9, "/x/y".into())
        );
        assert_eq!(s("https://[::1]").unwrap(), ("::1".into(), 443, "".into()));
        assert!(s("http://a.example").is_err());
        assert!(s("https://a.example:x").is_err());
        assert!(s("https://:1").is_err());
        assert!(s("https://[::1").is_err());
    }

    #[test]
    fn pins_take_colons_and_refuse_other_lengths() {
        let hexed = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_pin(&hexed).unwrap(), [0xab; 32]);
        assert_eq!(parse_pin(&colons).unwrap(), [0xab; 32]);
        assert!(parse_pin(&"ab".repeat(31)).is_err());
        assert!(parse_pin("zz").is_err());
    }
}

//! [`RelayStream`]: the byte stream the commlink runs on at either end of a relay
//! attachment: one end of an in-memory pipe whose other end the relay pumps over HTTP. When
//! the relay gives up on the attachment it records why, and a read that meets the closed
//! pipe returns that reason as an error, so the commlink's pending requests fail with it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// Bytes buffered inside the pipe, each way.
const PIPE: usize = 256 * 1024;

/// Why an attachment ended, shared by the stream and its pump.
#[derive(Debug, Clone, Default)]
pub(super) struct EndReason(Arc<Mutex<Option<String>>>);

impl EndReason {
    /// Records the first reason given (later ones are consequences).
    pub(super) fn set(&self, why: impl Into<String>) {
        let mut g = match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if g.is_none() {
            *g = Some(why.into());
        }
    }

    pub(super) fn get(&self) -> Option<String> {
        match self.0.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// One end of a relay attachment as a byte stream (the commlink's side).
#[derive(Debug)]
pub struct RelayStream {
    inner: DuplexStream,
    why: EndReason,
}

/// A connected pair: the commlink's stream and the pump's end of the pipe.
pub(super) fn pipe() -> (RelayStream, DuplexStream, EndReason) {
    let (a, b) = tokio::io::duplex(PIPE);
    let why = EndReason::default();
    (
        RelayStream {
            inner: a,
            why: why.clone(),
        },
        b,
        why,
    )
}

impl AsyncRead for RelayStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                match self.why.get() {
                    Some(why) => {
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionAborted, why)))
                    }
                    None => Poll::Ready(Ok(())),
                }
            }
            other => other,
        }
    }
}

impl AsyncWrite for RelayStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn a_closed_attachment_reads_as_its_reason() {
        let (mut s, mut pump, why) = pipe();
        pump.write_all(b"hi").await.expect("writes");
        let mut b = [0u8; 2];
        s.read_exact(&mut b).await.expect("reads");
        why.set("relay attachment expired");
        why.set("later cause");
        drop(pump);
        let err = s.read(&mut b).await.expect_err("reason");
        assert_eq!(err.to_string(), "relay attachment expired");
    }

    #[tokio::test]
    async fn a_plain_close_is_end_of_file() {
        let (mut s, pump, _why) = pipe();
        drop(pump);
        let mut b = [0u8; 2];
        assert_eq!(s.read(&mut b).await.expect("eof"), 0);
    }
}

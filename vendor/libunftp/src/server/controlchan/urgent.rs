//! A control-connection stream that keeps reading past the TCP urgent mark.
//
// Clients send ABOR (Python's ftplib) or the Telnet Synch before it (lftp) as TCP urgent data,
// RFC 959 §4.1.3. With SO_OOBINLINE the urgent byte stays in the stream, but Linux ends a
// read at the urgent mark, and tokio takes a short read for "the socket is drained" and
// waits for the next readiness event, which never comes: the rest of the command sits unread.
// So every read first tries a non-blocking `recv` of its own, and only when that finds
// nothing waits through tokio.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub(crate) struct UrgentInline {
    inner: TcpStream,
}

impl UrgentInline {
    // Sets SO_OOBINLINE on `inner` and wraps it.
    pub(crate) fn new(inner: TcpStream) -> io::Result<Self> {
        nix::sys::socket::setsockopt(&inner, nix::sys::socket::sockopt::OobInline, &true)?;
        Ok(UrgentInline { inner })
    }
}

impl AsyncRead for UrgentInline {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() > 0 {
            loop {
                match recv(this.inner.as_raw_fd(), buf.initialize_unfilled(), MsgFlags::MSG_DONTWAIT) {
                    Ok(n) => {
                        // n == 0 is the end of the stream, reported as such.
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(Errno::EINTR) => continue,
                    // Nothing waiting (or an error, which the read below reports): wait the
                    // usual way.
                    Err(_) => break,
                }
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for UrgentInline {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

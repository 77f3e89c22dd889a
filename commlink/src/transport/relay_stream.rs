//! [`RelayStream`]: the byte stream the commlink runs on at either end of a relay
//! attachment, and [`Lines`], the two buffers it shares with the relay.
//!
//! There is no pipe and no pump task between them: the commlink's writes are cut into
//! lines straight into [`Lines`]'s outbound queue, which the relay moves into its window
//! ([`Lines::take_up`]) when it is about to send; the relay delivers received lines
//! straight into the inbound buffer the commlink reads. The relay learns of new lines, and
//! of the commlink's end, through a hook called outside the lock. When the relay gives up
//! on the attachment it records why ([`Lines::close`]), and a read that meets the empty,
//! closed buffer returns that reason as an error, so the commlink's pending requests fail
//! with it.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::lock;
use super::relay_proto::Outgoing;
use crate::frame::LineDecoder;

/// What the relay hears from the commlink's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Event {
    /// New lines wait in the outbound queue.
    Lines,
    /// The commlink ended its side: `None` for a plain close, or what was wrong with its
    /// bytes.
    Ended(Option<String>),
}

/// Called (outside the lock) for each [`Event`].
pub(super) type Hook = Box<dyn Fn(Event) + Send + Sync>;

/// The buffers between a [`RelayStream`] and its relay.
pub(super) struct Lines {
    st: Mutex<St>,
    hook: Hook,
    /// Outbound bytes queued before the commlink's writes wait.
    up_cap: usize,
    /// Inbound bytes buffered before deliveries wait (or are refused).
    down_cap: usize,
    max_line: usize,
}

#[derive(Default)]
struct St {
    /// Complete lines the commlink wrote, not yet in the relay's window.
    up: VecDeque<Vec<u8>>,
    up_bytes: usize,
    /// The commlink waiting for room in `up`.
    writer: Option<Waker>,
    /// Received lines (with CR LF) the commlink has not read yet.
    down: BytesMut,
    /// The commlink waiting for `down`.
    reader: Option<Waker>,
    /// The relay waiting for room in `down`.
    deliverer: Option<Waker>,
    /// Why the relay closed the attachment (the first reason given), once it has.
    why: Option<String>,
    /// The commlink ended its side.
    ended: bool,
}

fn wake(w: Option<Waker>) {
    if let Some(w) = w {
        w.wake();
    }
}

impl Lines {
    /// Buffers holding about `up_cap` bytes toward the relay and `down_cap` toward the
    /// commlink, for lines of at most `max_line` bytes.
    pub(super) fn new(up_cap: usize, down_cap: usize, max_line: usize, hook: Hook) -> Arc<Lines> {
        Arc::new(Lines {
            st: Mutex::new(St::default()),
            hook,
            up_cap,
            down_cap,
            max_line,
        })
    }

    /// The commlink's end of these buffers (one per attachment).
    pub(super) fn stream(self: &Arc<Self>) -> RelayStream {
        RelayStream {
            lines: self.clone(),
            partial: Vec::new(),
            dec: LineDecoder::new(self.max_line),
        }
    }

    /// Moves queued lines into `out` while its window has room; returns how many moved.
    pub(super) fn take_up(&self, out: &mut Outgoing) -> usize {
        let mut st = lock(&self.st);
        let mut moved = 0;
        while let Some(line) = st.up.front() {
            if !out.has_room(line.len()) {
                break;
            }
            let Some(line) = st.up.pop_front() else { break };
            st.up_bytes -= line.len();
            out.push(line);
            moved += 1;
        }
        let writer = if moved > 0 { st.writer.take() } else { None };
        drop(st);
        wake(writer);
        moved
    }

    /// Whether lines wait to be taken.
    #[cfg(test)]
    fn has_up(&self) -> bool {
        !lock(&self.st).up.is_empty()
    }

    /// Puts a received line in the inbound buffer if it has room (a line always fits in
    /// an empty buffer). When it is full, `waiting` (if given) is woken once room is made.
    /// The commlink's reader, if it waits, is woken now, or put in `defer` for the caller
    /// to wake once it has let go of its own locks.
    fn offer(
        &self,
        line: &[u8],
        waiting: Option<&Waker>,
        defer: Option<&mut Option<Waker>>,
    ) -> Offer {
        let mut st = lock(&self.st);
        if st.ended {
            return Offer::Ended;
        }
        if !st.down.is_empty() && st.down.len() + line.len() + 2 > self.down_cap {
            st.deliverer = waiting.cloned();
            return Offer::Full;
        }
        st.down.extend_from_slice(line);
        st.down.extend_from_slice(b"\r\n");
        let reader = st.reader.take();
        drop(st);
        match defer {
            Some(slot) if reader.is_some() => *slot = reader,
            Some(_) => {}
            None => wake(reader),
        }
        Offer::Taken
    }

    /// Delivers a received line if the inbound buffer has room; `false` when it is full
    /// (or the commlink has ended), so the caller does not acknowledge it. The commlink's
    /// reader, if it waits, is put in `reader`: the caller wakes it after releasing its
    /// locks, so the woken reader does not find them held (its next write takes them).
    pub(super) fn try_deliver(&self, line: &[u8], reader: &mut Option<Waker>) -> bool {
        matches!(self.offer(line, None, Some(reader)), Offer::Taken)
    }

    /// Delivers a received line, waiting for room; `Err` once the commlink has ended.
    pub(super) async fn deliver(&self, line: &[u8]) -> Result<(), ()> {
        std::future::poll_fn(|cx| match self.offer(line, Some(cx.waker()), None) {
            Offer::Taken => Poll::Ready(Ok(())),
            Offer::Ended => Poll::Ready(Err(())),
            Offer::Full => Poll::Pending,
        })
        .await
    }

    /// The relay is done with this attachment: the commlink reads what is buffered, then
    /// `why` as an error (the first reason given wins; later ones are consequences).
    pub(super) fn close(&self, why: impl Into<String>) {
        let mut st = lock(&self.st);
        if st.why.is_none() {
            st.why = Some(why.into());
        }
        let (r, w, d) = (st.reader.take(), st.writer.take(), st.deliverer.take());
        drop(st);
        wake(r);
        wake(w);
        wake(d);
    }

    /// Why the relay closed, if it did.
    pub(super) fn reason(&self) -> Option<String> {
        lock(&self.st).why.clone()
    }

    /// Marks the commlink's end (once) and tells the relay.
    fn end(&self, why: Option<String>) {
        let mut st = lock(&self.st);
        if st.ended {
            return;
        }
        st.ended = true;
        let d = st.deliverer.take();
        drop(st);
        wake(d);
        (self.hook)(Event::Ended(why));
    }
}

/// What became of a received line offered to the inbound buffer.
enum Offer {
    Taken,
    Full,
    Ended,
}

/// One end of a relay attachment as a byte stream (the commlink's side).
pub struct RelayStream {
    lines: Arc<Lines>,
    /// Written bytes not yet a complete line.
    partial: Vec<u8>,
    dec: LineDecoder,
}

impl std::fmt::Debug for RelayStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayStream").finish_non_exhaustive()
    }
}

impl Drop for RelayStream {
    fn drop(&mut self) {
        self.lines.end(None);
    }
}

impl AsyncRead for RelayStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let lines = &self.lines;
        let mut st = lock(&lines.st);
        if st.down.is_empty() {
            if let Some(why) = &st.why {
                let e = io::Error::new(io::ErrorKind::ConnectionAborted, why.clone());
                return Poll::Ready(Err(e));
            }
            st.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = st.down.len().min(buf.remaining());
        buf.put_slice(&st.down[..n]);
        st.down.advance(n);
        let d = st.deliverer.take();
        drop(st);
        wake(d);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for RelayStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        {
            let mut st = lock(&this.lines.st);
            if st.ended {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if let Some(why) = &st.why {
                let e = io::Error::new(io::ErrorKind::BrokenPipe, why.clone());
                return Poll::Ready(Err(e));
            }
            if st.up_bytes >= this.lines.up_cap {
                st.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        // Cut the bytes into lines outside the lock, then queue them at once.
        this.partial.extend_from_slice(buf);
        let mut new = Vec::new();
        loop {
            match this.dec.decode(&mut this.partial) {
                Ok(Some(line)) => new.push(line),
                Ok(None) => break,
                Err(e) => {
                    let why = format!("the commlink wrote a bad line: {e}");
                    this.lines.end(Some(why.clone()));
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
                }
            }
        }
        if !new.is_empty() {
            let mut st = lock(&this.lines.st);
            for line in new {
                st.up_bytes += line.len();
                st.up.push_back(line);
            }
            drop(st);
            (this.lines.hook)(Event::Lines);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.lines.end(None);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::super::relay_proto::Window;
    use super::*;

    fn lines(
        up_cap: usize,
        down_cap: usize,
    ) -> (Arc<Lines>, Arc<Mutex<Vec<Event>>>, Arc<AtomicUsize>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let (e, c) = (events.clone(), count.clone());
        let l = Lines::new(
            up_cap,
            down_cap,
            100,
            Box::new(move |ev| {
                c.fetch_add(1, Ordering::SeqCst);
                lock(&e).push(ev);
            }),
        );
        (l, events, count)
    }

    #[tokio::test]
    async fn written_bytes_become_lines_in_the_window_and_tell_the_relay() {
        let (l, events, _) = lines(1024, 1024);
        let mut s = l.stream();
        s.write_all(b"one\r\ntw").await.expect("writes");
        s.write_all(b"o\r\n").await.expect("writes");
        let mut out = Outgoing::new(Window {
            lines: 1,
            bytes: 100,
        });
        assert_eq!(l.take_up(&mut out), 1, "the window holds one line");
        assert!(l.has_up());
        out.ack(1).expect("acks");
        assert_eq!(l.take_up(&mut out), 1);
        let mut body = Vec::new();
        out.encode_from(1, 1000, &mut body);
        assert_eq!(body, b"D 2 two\r\n");
        assert_eq!(*lock(&events), vec![Event::Lines, Event::Lines]);
    }

    #[tokio::test]
    async fn a_full_queue_holds_the_writer_until_the_relay_takes_lines() {
        let (l, _, _) = lines(8, 1024);
        let mut s = l.stream();
        s.write_all(b"0123456789\r\n")
            .await
            .expect("first write fits");
        let l2 = l.clone();
        let w = tokio::spawn(async move {
            s.write_all(b"x\r\n").await.expect("second write");
            s
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!w.is_finished(), "the writer waits for room");
        let mut out = Outgoing::new(Window {
            lines: 10,
            bytes: 1000,
        });
        assert_eq!(l2.take_up(&mut out), 1);
        let _s = w.await.expect("the writer went on");
        assert_eq!(l2.take_up(&mut out), 1);
    }

    #[tokio::test]
    async fn delivered_lines_read_as_bytes_and_a_full_buffer_refuses() {
        let (l, _, _) = lines(1024, 10);
        let mut s = l.stream();
        assert!(l.try_deliver(b"abcdef", &mut None));
        assert!(!l.try_deliver(b"gh", &mut None), "8 + 4 bytes exceed 10");
        let mut b = [0u8; 8];
        s.read_exact(&mut b).await.expect("reads");
        assert_eq!(&b, b"abcdef\r\n");
        assert!(l.try_deliver(b"gh", &mut None));
        l.deliver(b"ij").await.expect("room");
        let mut b = [0u8; 8];
        s.read_exact(&mut b).await.expect("reads");
        assert_eq!(&b, b"gh\r\nij\r\n");
    }

    #[test]
    fn a_waiting_reader_is_handed_to_the_deliverer_to_wake() {
        struct Flag(std::sync::atomic::AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let woken = || flag.0.load(Ordering::SeqCst);
        let (l, _, _) = lines(1024, 1024);
        let mut s = l.stream();
        let mut b = [0u8; 8];
        let mut rb = ReadBuf::new(&mut b);
        assert!(Pin::new(&mut s).poll_read(&mut cx, &mut rb).is_pending());
        let mut slot = None;
        assert!(l.try_deliver(b"hi", &mut slot));
        assert!(!woken(), "the delivery leaves the waking to its caller");
        slot.expect("the waiting reader is handed over").wake();
        assert!(woken());
        assert!(Pin::new(&mut s).poll_read(&mut cx, &mut rb).is_ready());
        assert_eq!(rb.filled(), b"hi\r\n");
    }

    #[tokio::test]
    async fn a_closed_attachment_reads_as_its_reason_after_what_was_buffered() {
        let (l, _, _) = lines(1024, 1024);
        let mut s = l.stream();
        assert!(l.try_deliver(b"hi", &mut None));
        l.close("relay attachment expired");
        l.close("later cause");
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.expect("reads what came first");
        let err = s.read(&mut b).await.expect_err("reason");
        assert_eq!(err.to_string(), "relay attachment expired");
        assert!(s.write_all(b"x\r\n").await.is_err(), "writes fail too");
    }

    #[tokio::test]
    async fn the_relay_hears_of_the_commlinks_end_once() {
        let (l, events, count) = lines(1024, 1024);
        let mut s = l.stream();
        s.shutdown().await.expect("shuts down");
        drop(s);
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(*lock(&events), vec![Event::Ended(None)]);
        assert!(l.deliver(b"late").await.is_err(), "nobody reads any more");
        let (l, events, _) = lines(1024, 1024);
        let mut s = l.stream();
        assert!(s.write_all(b"bad\x01\r\n").await.is_err());
        drop(s);
        assert!(
            matches!(&lock(&events)[..], [Event::Ended(Some(why))] if why.contains("bad line"))
        );
    }
}

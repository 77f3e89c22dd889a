//! Taking an HTTP/1 connection over once a response head is out (ffs patch 3, see
//! `PATCHES.md`).
//!
//! A handler whose response's extensions hold an [`IoHandover`] gets the connection itself:
//! once the response head is written and flushed, the dispatcher stops serving the
//! connection and gives its I/O object (boxed as [`Any`]; downcast it to the listener's
//! stream type) and any bytes it had read past the request but not yet decoded to the
//! matching [`IoReceiver`]. Bytes the dispatcher already fed to the request's payload stay
//! there (read the payload to the end to get them). If the connection ends before the
//! response is flushed, the receiver gets `None`.
//!
//! Two uses: an upgrade (`HttpResponse::SwitchingProtocols().upgrade("websocket")`, then the
//! new protocol), and a response whose streamed body the handler writes itself (give it a
//! body that never yields, e.g. a pending stream: the head says `Transfer-Encoding: chunked`
//! for an HTTP/1.1 request, and the new owner writes the chunks and ends the connection).

use std::{
    any::Any,
    cell::RefCell,
    fmt,
    future::Future,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
};

use bytes::BytesMut;

/// What a taken-over connection is: the I/O object and the undecoded bytes read from it.
pub type TakenIo = (Box<dyn Any>, BytesMut);

#[derive(Default)]
struct Slot {
    taken: Option<TakenIo>,
    closed: bool,
    waker: Option<Waker>,
}

/// Put in a response's extensions: the dispatcher hands the connection to the
/// matching [`IoReceiver`] once the response head is flushed.
pub struct IoHandover(Rc<RefCell<Slot>>);

/// Resolves to the connection an [`IoHandover`] was given, or `None` if it never was.
pub struct IoReceiver(Rc<RefCell<Slot>>);

/// A connected handover and its receiver.
pub fn io_handover() -> (IoHandover, IoReceiver) {
    let slot = Rc::new(RefCell::new(Slot::default()));
    (IoHandover(Rc::clone(&slot)), IoReceiver(slot))
}

impl IoHandover {
    pub(crate) fn give(self, io: Box<dyn Any>, read_buf: BytesMut) {
        self.0.borrow_mut().taken = Some((io, read_buf));
        // Drop wakes the receiver.
    }
}

impl Drop for IoHandover {
    fn drop(&mut self) {
        let mut slot = self.0.borrow_mut();
        slot.closed = true;
        if let Some(w) = slot.waker.take() {
            w.wake();
        }
    }
}

impl fmt::Debug for IoHandover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoHandover").finish_non_exhaustive()
    }
}

impl Future for IoReceiver {
    type Output = Option<TakenIo>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.0.borrow_mut();
        if let Some(taken) = slot.taken.take() {
            return Poll::Ready(Some(taken));
        }
        if slot.closed {
            return Poll::Ready(None);
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl fmt::Debug for IoReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoReceiver").finish_non_exhaustive()
    }
}

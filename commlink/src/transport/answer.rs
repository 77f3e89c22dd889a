//! [`answer_blocking`]: a reply made by blocking work, written from the thread that made it.
//!
//! A service whose work is synchronous (a database query, `link(2)` calls) must not do it
//! on the async workers, so it hands the work to tokio's blocking pool. Awaiting that work
//! costs two thread hand-offs per request: to the blocking thread, and back to a task that
//! sends the reply. Under load those wake-ups cost more than the work (measured on the
//! prepare path: see docs/benchmarks.md). So while the responder polls a request's answer
//! it *offers* the request (its id, the connection's outbox and its in-flight permit) on
//! this thread; `answer_blocking`, called in such a poll, takes the offer and the blocking
//! thread seals and writes the reply itself. The responder sees the offer taken and drops
//! the answer's future: nothing comes back. An answer that waits before it gets there (for
//! a pool place, say) is polled in a task of its own, which offers the request at every
//! poll, so it too is answered from its blocking thread.
//!
//! Called anywhere else (a test calling the service directly), `answer_blocking` runs the
//! work on the blocking pool and returns the reply as usual.
//! An offered request's work runs on the connection's warm threads (`warm.rs`), which
//! spares it tokio's shared blocking queue.

use std::cell::RefCell;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::conn::Outbox;
use super::error_reply;
use super::warm::Warm;
use crate::RefusalCode;
use crate::tobj::Tobj;

/// What the blocking thread needs to answer a request on its own.
pub(super) struct Offer {
    pub(super) id: u64,
    pub(super) out: Arc<Outbox>,
    pub(super) permit: OwnedSemaphorePermit,
    /// The connection's warm threads, which run the work.
    pub(super) warm: Arc<Warm>,
}

thread_local! {
    /// The request being polled for the first time on this thread, if any.
    static OFFERED: RefCell<Option<Offer>> = const { RefCell::new(None) };
}

/// Polls `f` with `offer` on this thread; returns `f`'s result and the offer if nobody took
/// it (then the caller answers as usual).
pub(super) fn offering<T>(offer: Offer, f: impl FnOnce() -> T) -> (T, Option<Offer>) {
    OFFERED.with_borrow_mut(|o| *o = Some(offer));
    // Taken back even if `f` panics, so no later poll on this thread finds a stale offer.
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            let _ = OFFERED.try_with(|o| o.borrow_mut().take());
        }
    }
    let clear = Clear;
    let out = f();
    let left = OFFERED.with_borrow_mut(Option::take);
    drop(clear);
    (out, left)
}

/// Runs `work` on a blocking thread; its result is the reply to the request being
/// answered. When a responder offered the request (it is polling the answer), the
/// blocking thread writes the reply to the peer itself and this future never completes
/// (the responder drops it); otherwise it completes with the reply.
///
/// So `work`'s result must be the service's reply as it is: a caller must not change it
/// after the await. A panic in `work` is answered with an `internal` error.
pub async fn answer_blocking<F>(work: F) -> Tobj
where
    F: FnOnce() -> Tobj + Send + 'static,
{
    if let Some(offer) = OFFERED.with_borrow_mut(Option::take) {
        let rt = tokio::runtime::Handle::current();
        let warm = offer.warm.clone();
        // Detached: the reply goes out from the blocking thread, the permit with it.
        warm.spawn(move || {
            let mut reply = run(work);
            reply.id = offer.id;
            // On a blocking thread waiting is allowed: a full socket makes this wait (the
            // back-pressure a task sending the reply would feel), a closed one fails, and
            // the requester learns that from the link going down.
            let _ = rt.block_on(offer.out.send(&reply));
            drop(offer.permit);
        });
        return std::future::pending().await;
    }
    match tokio::task::spawn_blocking(move || run(work)).await {
        Ok(reply) => reply,
        Err(e) => {
            tracing::error!(error = %e, "request handler did not finish");
            error_reply(RefusalCode::Internal, "request handler failed")
        }
    }
}

/// `work()`, or an `internal` error reply if it panics.
fn run(work: impl FnOnce() -> Tobj) -> Tobj {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(reply) => reply,
        Err(_) => {
            tracing::error!("request handler panicked");
            error_reply(RefusalCode::Internal, "request handler failed")
        }
    }
}

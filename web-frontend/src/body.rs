//! Request bodies are read before any handler runs, so an early answer (a signed-out POST
//! redirected to `/login`, a CSRF refusal) is never sent while the request is still
//! arriving.
//!
//! Why: over HTTP/2, a request stream the server drops unread is reset by h2 with `CANCEL`
//! unless the response was already sent (RFC 9113 §8.1 only allows `NO_ERROR` after a
//! complete response), and actix drops the request before it sends the response. The reset
//! races the answer; curl 7.88 then fails with error 92 instead of following the 303.
//! Reading first makes the answer independent of that race.
//!
//! Bounded: bodies up to [`KEEP`] are kept for the handler (the forms are a few hundred
//! bytes); larger ones are read and thrown away up to [`DRAIN`], and the handler's body
//! extractor then reports 413; past that, or past [`DEADLINE`], the request is answered
//! without reading further (an abusive client may then see its stream reset).

use std::time::Duration;

use actix_web::HttpMessage as _;
use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::web::{Bytes, BytesMut};

/// The largest body handed to a handler (the `PayloadConfig` limit in `startup::app`).
pub const KEEP: usize = 64 * 1024;
/// How much of a too-large body is still read (and discarded) so it can be refused cleanly.
pub const DRAIN: usize = 1024 * 1024;
/// How long a body may take to arrive.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The middleware (`actix_web::middleware::from_fn(body::read_first)`).
pub async fn read_first(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if crate::link_endpoint::is_carrier_upgrade(req.request()) {
        // The https carrier's upgraded stream: its payload is the link itself, read by
        // the endpoint as it arrives.
        return next.call(req).await;
    }
    let mut payload = req.take_payload();
    let keep = if crate::relay::is_send_path(req.path()) {
        crate::relay::MAX_BODY
    } else {
        KEEP
    };
    let read = tokio::time::timeout(DEADLINE, read_bounded(&mut payload, keep)).await;
    let replacement = match read {
        Ok(Ok(bytes)) => Payload::from(bytes),
        Ok(Err(e)) => failed(e),
        Err(_) => failed(PayloadError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "request body took too long to arrive",
        ))),
    };
    req.set_payload(replacement);
    next.call(req).await
}

/// The whole body if it is at most `keep` bytes ([`KEEP`], or a relay `send`'s limit);
/// `Overflow` once it is known to be larger (read on, discarding, up to [`DRAIN`]).
async fn read_bounded(payload: &mut Payload, keep: usize) -> Result<Bytes, PayloadError> {
    use futures_core::Stream as _;
    use std::future::poll_fn;
    use std::pin::Pin;

    let mut kept = BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = poll_fn(|cx| Pin::new(&mut *payload).poll_next(cx)).await {
        let chunk = chunk?;
        seen = seen.saturating_add(chunk.len());
        if seen <= keep {
            kept.extend_from_slice(&chunk);
        } else if seen > DRAIN.max(keep) {
            break;
        }
    }
    if seen > keep {
        return Err(PayloadError::Overflow);
    }
    Ok(kept.freeze())
}

/// A payload that yields `e` to whoever reads it (the handler's extractor turns it into the
/// matching 4xx).
fn failed(e: PayloadError) -> Payload {
    let (mut sender, payload) = actix_http::h1::Payload::create(false);
    sender.set_error(e);
    Payload::from(payload)
}

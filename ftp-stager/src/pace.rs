//! How large the pieces are that a download reads from its file: back-pressure instead of
//! read-ahead, so a slow client holds little memory and a fast one gets large pieces (few
//! reads and wake-ups per byte). Used by the HTTPS bodies (`https.rs`) and FTP's RETR
//! (`ftp.rs`).

/// Smallest piece (a slow client's).
const MIN_CHUNK: u64 = 16 * 1024;
/// Largest piece for a client that has not yet shown it keeps up over a long run: the
/// HTTP/1.1 layer's write buffer size (32 KiB), so that buffer, which copies each piece,
/// never grows past twice its size.
const PROVING_CHUNK: u64 = 32 * 1024;
/// Largest piece (a fast client's: fewer reads and wake-ups per byte).
const MAX_CHUNK: u64 = 256 * 1024;
/// The first piece of a body.
const FIRST_CHUNK: u64 = 32 * 1024;
/// A client that asks for the next piece within this time of the last one keeps up.
const KEEPING_UP: std::time::Duration = std::time::Duration::from_millis(2);
/// Bytes, and time, a client must keep up without a pause before its pieces grow beyond
/// [`PROVING_CHUNK`]. The kernel's socket buffers (tens of MiB with receive autotuning)
/// make every client look fast at first, but a slow one only for as long as it takes to
/// fill them; a quarter of a second of keeping up is beyond that at any speed worth the
/// large pieces.
const PROOF_BYTES: u64 = 16 * 1024 * 1024;
const PROOF_TIME: std::time::Duration = std::time::Duration::from_millis(250);

/// The size of a download's file pieces, from how soon the client took the last piece:
/// back-pressure instead of read-ahead. A piece is only asked for when the connection has
/// room (an HTTPS body is polled when the write buffer has room; an FTP transfer writes each
/// piece before reading the next), so a client that keeps up gets pieces doubling (throughput), and a slow
/// one (a full socket) halves them down to [`MIN_CHUNK`], so that what a download holds in
/// memory is small however long the client takes. Pieces beyond [`PROVING_CHUNK`] are
/// granted only after [`PROOF_BYTES`] and [`PROOF_TIME`] of keeping up: otherwise each of
/// hundreds of slow downloads started together would grow its pieces (and the write buffer
/// that copies them) to the largest size while the socket buffers fill.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    chunk: u64,
    /// Bytes taken at speed since the last slow take, and when that run began.
    fast_run: u64,
    fast_since: Option<std::time::Instant>,
}

impl Pace {
    /// A download's pace before its first piece.
    pub fn new() -> Pace {
        Pace {
            chunk: FIRST_CHUNK,
            fast_run: 0,
            fast_since: None,
        }
    }

    /// The next piece size at `now`, given how long the client took the last piece
    /// (`None`: no piece handed out yet, or the last one was not a file piece).
    pub fn next(
        &mut self,
        since_last: Option<std::time::Duration>,
        now: std::time::Instant,
    ) -> u64 {
        match since_last {
            None => {}
            Some(d) if d <= KEEPING_UP => {
                let since = *self.fast_since.get_or_insert(now);
                self.fast_run = self.fast_run.saturating_add(self.chunk);
                let proven = self.fast_run >= PROOF_BYTES
                    && now.saturating_duration_since(since) >= PROOF_TIME;
                let cap = if proven { MAX_CHUNK } else { PROVING_CHUNK };
                self.chunk = (self.chunk * 2).min(cap);
            }
            Some(_) => {
                self.fast_run = 0;
                self.fast_since = None;
                self.chunk = (self.chunk / 2).max(MIN_CHUNK);
            }
        }
        self.chunk
    }
}

impl Default for Pace {
    fn default() -> Pace {
        Pace::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_follow_the_client_pace() {
        use std::time::{Duration, Instant};
        let quick = Some(Duration::from_micros(100));
        let slow = Some(Duration::from_millis(50));
        let t0 = Instant::now();
        let mut p = Pace::new();
        assert_eq!(p.next(None, t0), FIRST_CHUNK);
        for _ in 0..10 {
            p.next(quick, t0);
        }
        assert_eq!(p.chunk, PROVING_CHUNK, "a client that only started fast");
        // Enough bytes, but in less than the proof time: a slow client's socket buffers
        // filling.
        while p.fast_run < PROOF_BYTES {
            p.next(quick, t0 + Duration::from_millis(100));
        }
        p.next(quick, t0 + Duration::from_millis(100));
        assert_eq!(p.chunk, PROVING_CHUNK, "bytes alone do not prove a pace");
        p.next(quick, t0 + PROOF_TIME);
        p.next(quick, t0 + PROOF_TIME);
        p.next(quick, t0 + PROOF_TIME);
        assert_eq!(
            p.chunk, MAX_CHUNK,
            "a proven fast client gets the largest pieces"
        );
        for _ in 0..10 {
            p.next(slow, t0 + PROOF_TIME);
        }
        assert_eq!(p.chunk, MIN_CHUNK, "a slow client holds the smallest");
        let later = t0 + 10 * PROOF_TIME;
        for _ in 0..10 {
            p.next(quick, later);
        }
        assert_eq!(
            p.chunk, PROVING_CHUNK,
            "after a pause the proof starts again"
        );
    }
}

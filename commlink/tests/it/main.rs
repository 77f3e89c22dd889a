//! commlink's integration tests, one test binary.
//!
//! - `carried`: the link over streams a carrier endpoint accepted ([`commlink::Client::accepting`]);
//! - `fuzz_corpus`: the fuzz targets' committed seed corpora through their hooks;
//! - `link`: the commlink over real loopback TCP, both dial directions;
//! - `responders`: an accepting client with several responders, one killed;
//! - `proxy`: the commlink through a real squid with `CONNECT` (Basic auth, refusals);
//! - `relay`: the HTTP relay carrier through squid (no `CONNECT`) and mitmproxy (TLS
//!   inspected), with faults: nothing lost, nothing applied twice;
//! - `vectors`: PROTOCOL.md's worked vectors, recomputed independently.

mod carried;
mod fuzz_corpus;
mod link;
mod proxy;
mod relay;
mod responders;
mod vectors;

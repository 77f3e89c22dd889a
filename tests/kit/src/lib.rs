//! Test support shared by the ffs workspace's tests (a `publish = false` dev-dependency).
//!
//! - [`prereq`]: prerequisites that fail a test loudly instead of skipping it (below);
//! - [`link`]: the commlink settings every test uses (one test `LinkConfig`);
//! - [`html`]: the one scraper for rendered pages (form fields, links, URLs);
//! - [`port`]: ports for external servers, reserved across test processes;
//! - [`hash`]: SHA-256 of bytes and files as hex;
//! - [`wait`]: waiting for an event instead of sleeping for a guessed time;
//! - [`squid`]: a real squid forward proxy as a child process;
//! - [`cutter`]: a TCP forwarder that cuts HTTP connections on command (fault tests);
//! - [`haproxy`]: the shipped `deploy/haproxy.cfg` with a test's addresses and files;
//! - [`sockets`]: socket options on the server's side of an in-process server's connection.
//!
//! # `prereq`: no silent skips
//!
//! A test that needs something outside the Rust build (a program such as `nft` or
//! `chromedriver`, a running PostgreSQL) asks for it through [`prereq`] before using it:
//!
//! ```no_run
//! use ffs_testkit::prereq;
//!
//! // A program on PATH:
//! if !prereq::require_command("pty", "script", "apt-get install bsdutils") {
//!     return; // only when FFS_TEST_SKIP names "pty"
//! }
//! // Anything else: the check returns `bool` or `Result<_, impl Display>` (the reason).
//! let url = std::env::var("FFS_TEST_POSTGRES_URL");
//! if !prereq::require(
//!     "postgres",
//!     || url.as_ref().map_err(|_| "FFS_TEST_POSTGRES_URL is not set"),
//!     "apt-get install postgresql, start it and set FFS_TEST_POSTGRES_URL",
//! ) {
//!     return;
//! }
//! ```
//!
//! [`prereq::obtain`] is the same for a check that yields a value (`Option<T>`: the
//! database URL, a program's path, a prepared network namespace), and
//! [`prereq::find_command`] looks a program up on PATH.
//!
//! - Present: the component is recorded as **exercised** and the call returns `true`.
//! - Missing: the call **panics**, naming what is missing and how to install it (and that
//!   `./test.sh` installs everything), so the test fails instead of passing while doing
//!   nothing.
//! - The only way out is the documented opt-out `FFS_TEST_SKIP=<comma list of components>`
//!   (for example `FFS_TEST_SKIP=browser,postgres,netns`): a named component is not
//!   checked, the call prints a loud notice, records the component as **skipped** and
//!   returns `false`; the test then returns early. CI never sets it.
//!
//! Records are marker files (one per component, so they work across nextest's
//! one-process-per-test) in `$FFS_TEST_COMPONENTS_DIR/{exercised,skipped}/<component>`;
//! without that variable, in `ffs-test-components/` next to the test binary's profile
//! directory (`target/debug/ffs-test-components/`). `./test.sh` clears the directory before
//! the run and prints a one-line summary from it at the end.
//!
//! Component names in use (keep them short; they are the words of `FFS_TEST_SKIP`):
//! `postgres` (PostgreSQL), `browser` (Chromium + chromedriver), `netns` (network
//! namespaces + nftables), `pty` (util-linux `script`), and one per external server or
//! client a test drives (`nginx`, `vsftpd`, `lftp`, `wget`, `aria2c`, `minisign`, …).

pub mod cutter;
pub mod haproxy;
pub mod hash;
pub mod html;
pub mod link;
pub mod port;
pub mod prereq;
pub mod sockets;
pub mod squid;
pub mod wait;

//! Writes the small seed corpora of both fuzz targets into `corpus/<target>/` (committed;
//! `commlink/tests/it/fuzz_corpus.rs` runs them through the hooks in CI).
//!
//! Run from `fuzz/`: `cargo run --example make_seeds`. The frame seeds include packets
//! sealed with the same fixed keys `commlink::fuzzing::frame_decoder` opens with, so the
//! fuzzer starts from inputs that reach the MAC check, sequence check and decryption.

use std::path::Path;

use commlink::crypto::{self, Side};
use commlink::{Fields, Suite, Tobj};

fn sample_tobjs() -> Vec<Tobj> {
    vec![
        Tobj::new("ffs.ping", 0),
        Tobj::with_fields("ffs.hello", 0, Fields::new().text("role", "requester")),
        Tobj::with_fields(
            "ffs.error",
            7,
            Fields::new()
                .text("code", "denied")
                .text("message", "bad <password> & \"quotes\"\r\n\u{7f}é"),
        ),
        Tobj::with_fields(
            "agent.login",
            42,
            Fields::new()
                .text("login", "alice")
                .text("password", "s3cret")
                .text("client_addr", "127.0.0.1"),
        ),
        Tobj::with_fields(
            "stager.stage",
            18446744073709551615,
            Fields::new()
                .text("product", "widget")
                .text("version", "1.2.3")
                .num("ttl_secs", 3600)
                .flag("yanked", false)
                .object(
                    "area",
                    Fields::new().text("area_id", "a1").text("token", ""),
                )
                .list(
                    "files",
                    "file",
                    [
                        Fields::new().text("name", "a.tar.gz").num("size", 10),
                        Fields::new().text("name", "b.zip").num("size", 0),
                    ],
                )
                .text_list("tags", "tag", ["x", "y"]),
        ),
    ]
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn main() -> std::io::Result<()> {
    let tobjs = sample_tobjs();

    let dir = Path::new("corpus/tobj_parser");
    for (i, t) in tobjs.iter().enumerate() {
        write(dir, &format!("seed-{i}"), t.encode().as_bytes())?;
    }

    // The fuzz hook opens as the initiator, so seal as the acceptor with the same inputs.
    let dir = Path::new("corpus/frame_decoder");
    let (mut sealer, _) =
        crypto::derive(Suite::Tdes, &[7; 32], 1, &[1; 16], &[2; 16], Side::Acceptor);
    let mut stream = Vec::new();
    for (i, t) in tobjs.iter().enumerate() {
        let mut one = Vec::new();
        commlink::frame::encode(&sealer.seal(t.encode().as_bytes()), &mut one);
        if i == 0 {
            write(dir, "packet-0", &one)?;
        }
        stream.extend_from_slice(&one);
    }
    write(dir, "packets-in-order", &stream)?;
    let hello = format!(
        "FFS/1 HELLO 3des-cbc-hmac-sha256 40001 {} 0123456789abcdef\r\n",
        "ab".repeat(16)
    );
    let welcome = format!("FFS/1 WELCOME des-cbc {}\r\n", "cd".repeat(16));
    write(dir, "hello", hello.as_bytes())?;
    write(dir, "welcome", welcome.as_bytes())?;
    write(
        dir,
        "error",
        b"FFS/1 ERROR bag-mismatch the bags differ\r\n",
    )?;
    write(
        dir,
        "handshake-then-packets",
        &[hello.as_bytes(), welcome.as_bytes(), &stream].concat(),
    )?;
    println!("seeds written under corpus/");
    Ok(())
}

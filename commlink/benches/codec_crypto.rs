//! Criterion micro-benchmarks of the commlink's pure layers: packet seal/open per suite at
//! 200 B and 64 KiB (the allocating `seal`/`open`, and the buffer-reusing pair connections
//! use), and tobj encode/parse of a ~200-byte message. No I/O.
//!
//! `cargo bench -p commlink --bench codec_crypto -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use commlink::crypto::{self, Side};
use commlink::tobj::Limits;
use commlink::{Fields, Suite, Tobj};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn message() -> Tobj {
    let mut t = Tobj::with_fields(
        "bench.echo",
        1,
        Fields::new()
            .text("product", "widget-pro")
            .text("version", "2.4.1")
            .text("file", "widget-pro-2.4.1-linux-x86_64.tar.gz")
            .num("size", 73_400_320u64)
            .text("label", "<acme>"),
    );
    let len = t.encode().len();
    t.fields
        .push_text("pad", "x".repeat(200usize.saturating_sub(len + 11)));
    t
}

fn seal_open(c: &mut Criterion) {
    let entry = [0x5a; 32];
    let mut g = c.benchmark_group("packet");
    for suite in Suite::ALL {
        for size in [200usize, 64 * 1024] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            g.throughput(Throughput::Bytes(size as u64));
            let (mut sealer, _) =
                crypto::derive(suite, &entry, 40000, &[1; 16], &[2; 16], Side::Initiator);
            g.bench_with_input(
                BenchmarkId::new(format!("seal/{}", suite.name()), size),
                &payload,
                |b, p| b.iter(|| sealer.seal(black_box(p))),
            );
            // Opening needs packets numbered in order, so each iteration seals a fresh one
            // and opens it; the seal-only time above is the part to subtract.
            let (mut s2, _) =
                crypto::derive(suite, &entry, 40000, &[1; 16], &[2; 16], Side::Initiator);
            let (_, mut opener) =
                crypto::derive(suite, &entry, 40000, &[1; 16], &[2; 16], Side::Acceptor);
            g.bench_with_input(
                BenchmarkId::new(format!("seal+open/{}", suite.name()), size),
                &payload,
                |b, p| {
                    b.iter(|| {
                        let line = s2.seal(black_box(p));
                        opener.open(line.as_bytes()).map(|v| v.len())
                    })
                },
            );
            // What a connection does: seal into its write buffer, open into the opener's
            // own buffer (transport/conn.rs).
            let (mut s3, _) =
                crypto::derive(suite, &entry, 40000, &[1; 16], &[2; 16], Side::Initiator);
            let (_, mut opener3) =
                crypto::derive(suite, &entry, 40000, &[1; 16], &[2; 16], Side::Acceptor);
            let mut buf = Vec::new();
            g.bench_with_input(
                BenchmarkId::new(
                    format!("seal_line_into+open_in_place/{}", suite.name()),
                    size,
                ),
                &payload,
                |b, p| {
                    b.iter(|| {
                        buf.clear();
                        s3.seal_line_into(black_box(p), &mut buf);
                        let line = buf.strip_suffix(b"\r\n").unwrap_or(&buf);
                        opener3.open_in_place(line).map(<[u8]>::len)
                    })
                },
            );
        }
    }
    g.finish();
}

fn tobj_codec(c: &mut Criterion) {
    let t = message();
    let text = t.encode();
    let limits = Limits::default();
    let mut g = c.benchmark_group("tobj");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function(format!("encode/{}B", text.len()), |b| {
        b.iter(|| black_box(&t).encode())
    });
    g.bench_function(format!("parse/{}B", text.len()), |b| {
        b.iter(|| Tobj::parse(black_box(&text), &limits))
    });
    // What a connection does: encode into a reused buffer (transport/conn.rs).
    let mut out = String::new();
    g.bench_function(format!("encode_into/{}B", text.len()), |b| {
        b.iter(|| {
            out.clear();
            black_box(&t).encode_into(&mut out);
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, seal_open, tobj_codec);
criterion_main!(benches);

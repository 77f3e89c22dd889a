//! Every fuzz target's committed seed corpus (`fuzz/corpus/<target>/*`) run through the same
//! `commlink::fuzzing` hook the target calls, so the hooks run in CI without cargo-fuzz.

use std::path::{Path, PathBuf};

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (the seed corpus is committed)", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    assert!(
        out.len() >= 3,
        "{}: only {} seeds",
        dir.display(),
        out.len()
    );
    out
}

#[test]
fn frame_decoder_seeds_run_through_the_fuzz_hook() {
    for (path, bytes) in seeds("frame_decoder") {
        let r = std::panic::catch_unwind(|| commlink::fuzzing::frame_decoder(&bytes));
        assert!(r.is_ok(), "{} panicked", path.display());
    }
}

#[test]
fn tobj_parser_seeds_parse_and_run_through_the_fuzz_hook() {
    for (path, bytes) in seeds("tobj_parser") {
        // The seeds are messages (so the fuzzer starts from inputs that get deep into the
        // parser), and the hook checks that each re-encodes to itself.
        let text = std::str::from_utf8(&bytes).unwrap();
        commlink::Tobj::parse(text, &commlink::tobj::Limits::default())
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        let r = std::panic::catch_unwind(|| commlink::fuzzing::tobj_parser(&bytes));
        assert!(r.is_ok(), "{} panicked", path.display());
    }
}

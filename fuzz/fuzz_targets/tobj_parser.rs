//! Arbitrary text through the tobj parser; whatever parses must re-encode to itself.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    commlink::fuzzing::tobj_parser(data);
});

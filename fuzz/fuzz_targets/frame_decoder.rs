//! Arbitrary bytes through the CR LF line decoder, the handshake parsers and the packet opener.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    commlink::fuzzing::frame_decoder(data);
});

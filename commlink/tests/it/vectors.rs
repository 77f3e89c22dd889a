//! PROTOCOL.md's worked test vectors, recomputed by an independent implementation of the
//! spec (straight from the primitives) and compared with both the library and the pinned
//! wire lines printed in PROTOCOL.md.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use base64::Engine as _;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeEncrypt as _, KeyIvInit as _};
use commlink::crypto::{self, Side};
use commlink::{KeyBag, Suite};
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

const PORT: u16 = 50_000;
const NONCE_I: [u8; 16] = [0x11; 16];
const NONCE_A: [u8; 16] = [0x22; 16];
const HELLO_PAYLOAD: &str = "<tobj type=\"ffs.hello\" id=\"0\"><role>requester</role></tobj>";
const LOGIN_PAYLOAD: &str =
    "<tobj type=\"agent.login\" id=\"1\"><login>alice</login><password>p&lt;w</password></tobj>";

/// Entry i of the vector bag is 32 bytes all equal to i.
fn vector_bag() -> KeyBag {
    KeyBag::from_entries((0..128u8).map(|i| [i; 32]).collect()).unwrap()
}

/// The spec, written out again from PROTOCOL.md.
fn spec_packet(suite: Suite, entry: &[u8], seq: u64, payload: &[u8], print: bool) -> String {
    let mut th = Sha256::new();
    th.update(b"FFS/1\0");
    th.update(suite.name().as_bytes());
    th.update(b"\0");
    th.update(PORT.to_be_bytes());
    th.update(NONCE_I);
    th.update(NONCE_A);
    let th = th.finalize().to_vec();
    let with = |label: &str| {
        let mut m = label.as_bytes().to_vec();
        m.extend_from_slice(b"i2a");
        m.extend_from_slice(&th);
        hmac(entry, &m)
    };
    let enc = with("ffs1 enc ");
    if suite == Suite::Aes256Gcm {
        // nonce = 0x00000000 ‖ BE64(seq); AAD = BE64(seq); the output is C ‖ tag.
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&seq.to_be_bytes());
        let sealed = Aes256Gcm::new_from_slice(&enc)
            .unwrap()
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: payload,
                    aad: &seq.to_be_bytes(),
                },
            )
            .unwrap();
        let (c, tag) = sealed.split_at(sealed.len() - 16);
        if print {
            println!("suite {} seq {seq}", suite.name());
            println!("  transcript   {}", hex::encode(&th));
            println!("  enc_key i2a  {}", hex::encode(&enc));
            println!("  nonce        {}", hex::encode(nonce));
            println!("  ciphertext   {}", hex::encode(c));
            println!("  tag          {}", hex::encode(tag));
        }
        let mut pkt = seq.to_be_bytes().to_vec();
        pkt.extend_from_slice(&sealed);
        return base64::engine::general_purpose::STANDARD.encode(pkt);
    }
    let mac = with("ffs1 mac ");
    let ivk = with("ffs1 iv ");
    let iv = &hmac(&ivk, &seq.to_be_bytes())[..8];
    let key = &enc[..suite.key_len()];
    let c = match suite {
        Suite::Tdes => cbc::Encryptor::<des::TdesEde3>::new_from_slices(key, iv)
            .unwrap()
            .encrypt_padded_vec::<Pkcs7>(payload),
        Suite::Des => cbc::Encryptor::<des::Des>::new_from_slices(key, iv)
            .unwrap()
            .encrypt_padded_vec::<Pkcs7>(payload),
        Suite::Aes256Gcm => unreachable!("handled above"),
    };
    let mut pkt = seq.to_be_bytes().to_vec();
    pkt.extend_from_slice(&c);
    let tag = hmac(&mac, &pkt);
    pkt.extend_from_slice(&tag[..16]);
    if print {
        println!("suite {} seq {seq}", suite.name());
        println!("  transcript   {}", hex::encode(&th));
        println!("  enc_key i2a  {}", hex::encode(key));
        println!("  mac_key i2a  {}", hex::encode(&mac));
        println!("  iv_key i2a   {}", hex::encode(&ivk));
        println!("  iv           {}", hex::encode(iv));
        println!("  ciphertext   {}", hex::encode(&c));
        println!("  tag          {}", hex::encode(&tag[..16]));
    }
    base64::engine::general_purpose::STANDARD.encode(pkt)
}

fn library_lines(suite: Suite) -> (String, String) {
    let bag = vector_bag();
    let entry = bag.entry_for_port(PORT);
    let (mut sealer, _) = crypto::derive(suite, entry, PORT, &NONCE_I, &NONCE_A, Side::Initiator);
    (
        sealer.seal(HELLO_PAYLOAD.as_bytes()),
        sealer.seal(LOGIN_PAYLOAD.as_bytes()),
    )
}

#[test]
fn vector_bag_entry_is_port_mod_n() {
    let bag = vector_bag();
    assert_eq!(bag.index_for_port(PORT), 80);
    assert_eq!(bag.entry_for_port(PORT), &[80u8; 32]);
}

#[test]
fn protocol_md_vectors() {
    let print = std::env::var_os("FFS_PRINT_VECTORS").is_some();
    for (suite, want_hello, want_login) in [
        (Suite::Aes256Gcm, GCM_HELLO, GCM_LOGIN),
        (Suite::Tdes, TDES_HELLO, TDES_LOGIN),
        (Suite::Des, DES_HELLO, DES_LOGIN),
    ] {
        let entry = [80u8; 32];
        let s0 = spec_packet(suite, &entry, 0, HELLO_PAYLOAD.as_bytes(), print);
        let s1 = spec_packet(suite, &entry, 1, LOGIN_PAYLOAD.as_bytes(), print);
        if print {
            println!(
                "{} seq 0 wire: {s0}\n{} seq 1 wire: {s1}",
                suite.name(),
                suite.name()
            );
        }
        let (l0, l1) = library_lines(suite);
        assert_eq!(l0, s0, "library disagrees with the spec");
        assert_eq!(l1, s1, "library disagrees with the spec");
        assert_eq!(l0, want_hello, "pinned vector changed");
        assert_eq!(l1, want_login, "pinned vector changed");
    }
}

const GCM_HELLO: &str = "AAAAAAAAAAAFbGlYN7ItR+wxOKN5tQaGgT3RCZHyjrK1jqjjO4lM0i0Ardn423ddrdbLEacYIb+yZYo/soFbEb+bq3cu7r4e2r/vAcE2yNCRt2o=";
const GCM_LOGIN: &str = "AAAAAAAAAAE+TU1vjm68JJQxhPun/haoEbyX/KPgQSqCGw1m3fcCbtvtv1Ca4oQWLJZcrg8PoHeVFGA9atsvJHRKlM4nTs4VLzmumRb66ViFg/oHf8kPQXWoDXtB+Kp9brNMktOzsIQLPPPZH00=";
const TDES_HELLO: &str = "AAAAAAAAAACz92ounoRcCsmg5U2SyVZ1laxUhRPjZ4UABUoDyy/BxoY6uHTc11hgcZg+LIaafvZK8rdyJbH0daWIo2cPwNEjx9FJioYmf2ICv0gb7VfD9Q==";
const TDES_LOGIN: &str = "AAAAAAAAAAGtxh2RY1rnAYtL3RGw1OeWFMAc/MBZLA9+32MB6dkjYqu9KZt4ngXocIkOhPed12Iszpq7GgbMFB8X63HJjkSp+IZBuaapKc5ausn1HNHa+N8toqDwEAaGmfGu5Gut2AWqzF8oSDQH9Q==";
const DES_HELLO: &str = "AAAAAAAAAAAq8o9/u9T9pqevPK/ehNoMjMx2JZCuFetrMC001BGJegL3X+1fGLobNCZThvYI/phCA+NCQlnDH8wnvT8ls7APwm0/3lPbUfvi20DWk7eP4w==";
const DES_LOGIN: &str = "AAAAAAAAAAE3N9DoiALn3+uHs3au8tTJuptHsxSmot0yfeB7jhpTYRwiH77ynd4aEuRl9iwG3u7Qww2Ebua0BeSyfin/feazrgyRujyDtn8ZvPAH15vKwVQ/D2QsOaYKxUzQb7ANF9GYyb4wLHe0Qw==";

/// PROTOCOL.md §4/§9: the virtual-port HELLO of the vectors names the same P, so a proxied
/// initiator derives the pinned packets above.
#[test]
fn protocol_md_virtual_port_vector() {
    let doc = include_str!("../../PROTOCOL.md");
    let shown = doc
        .lines()
        .find(|l| l.starts_with("FFS/1 HELLO aes256-gcm v"))
        .expect("PROTOCOL.md shows a virtual-port HELLO");
    let line = shown.replace("<fingerprint>", &vector_bag().fingerprint());
    let hello = commlink::handshake::Hello::parse(line.as_bytes()).expect("it parses");
    assert!(hello.virtual_port);
    assert_eq!(hello.port, PORT);
    assert_eq!(hello.nonce, NONCE_I);
    assert_eq!(hello.to_line(), line, "one spelling");
    let entry = vector_bag().entry_for_port(hello.port).to_owned();
    let (mut sealer, _) = crypto::derive(
        hello.suite,
        &entry,
        hello.port,
        &NONCE_I,
        &NONCE_A,
        Side::Initiator,
    );
    assert_eq!(sealer.seal(HELLO_PAYLOAD.as_bytes()), GCM_HELLO);
    assert_eq!(sealer.seal(LOGIN_PAYLOAD.as_bytes()), GCM_LOGIN);
}

use super::*;

fn key(text: &str, t: KeyTransform) -> Result<SodiumKey, KeyError> {
    sodium_key(text.as_bytes(), t)
}

fn check_key(text: &str, t: KeyTransform, expected: Result<&[u8], &str>) {
    match (key(text, t), expected) {
        (Ok(k), Ok(want)) => assert_eq!(&k.bytes()[..], want, "{text:?} {t:?}"),
        (Err(e), Err(needle)) => {
            let msg = e.to_string();
            assert!(msg.contains(needle), "{msg} should contain {needle}");
        }
        (got, want) => panic!("{text:?} {t:?}: got {got:?}, want {want:?}"),
    }
}

fn unhex(s: &str) -> Vec<u8> {
    decode_hex(s.as_bytes()).expect("test hex")
}

#[test]
fn walg_key_test_vectors() {
    use KeyTransform::*;
    // internal/crypto/libsodium/crypter_test.go
    let hex_key = "4c0829fdfe7ae1987918edc585b1a90556d901eaea963c7625bb5734576dfb59";
    check_key(hex_key, Hex, Ok(&unhex(hex_key)));
    check_key(&hex_key.to_ascii_uppercase(), Hex, Ok(&unhex(hex_key)));
    check_key(
        "jv81yb3v3gNePrY0JmJ4q2j2NrqcM7tDYSHFoZ0tTIw=",
        Base64,
        Ok(&unhex(
            "8eff35c9bdefde035e3eb634266278ab68f636ba9c33bb436121c5a19d2d4c8c",
        )),
    );
    let mut padded = b"TEST_LIBSODIUM_KEY_______".to_vec();
    padded.resize(32, 0);
    check_key("TEST_LIBSODIUM_KEY_______", None, Ok(&padded));
    let mut padded = b"abcdefghijklmnopqrstuvwxyz0".to_vec();
    padded.resize(32, 0);
    check_key("abcdefghijklmnopqrstuvwxyz0", None, Ok(&padded));
    check_key(
        "walrus_test_libsodium_key_32byte",
        None,
        Ok(b"walrus_test_libsodium_key_32byte"),
    );
    check_key(
        "walrus_test_libsodium_key_32byte and more",
        None,
        Ok(b"walrus_test_libsodium_key_32byte"),
    );
    check_key("short_key", None, Err("must not be less than 25, got 9"));
    check_key(
        &"ab".repeat(22),
        Hex,
        Err("exactly 32 bytes (got 22 bytes)"),
    );
    check_key("invalid hex", Hex, Err("while hex decoding key"));
    check_key(&"a".repeat(63), Hex, Err("odd length"));
    check_key("invalid base64", Base64, Err("while base64 decoding key"));
    check_key(
        "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDEyMzQ1Njc4OQ==",
        Base64,
        Err("exactly 32 bytes (got 40 bytes)"),
    );
    check_key("", Hex, Err("empty"));
    // Go skips line breaks inside base64.
    check_key(
        "jv81yb3v3gNePrY0JmJ4q2j2\r\nNrqcM7tDYSHFoZ0tTIw=",
        Base64,
        Ok(&unhex(
            "8eff35c9bdefde035e3eb634266278ab68f636ba9c33bb436121c5a19d2d4c8c",
        )),
    );
    // Padding is required, and only at the end.
    check_key(
        "jv81yb3v3gNePrY0JmJ4q2j2NrqcM7tDYSHFoZ0tTIw",
        Base64,
        Err("illegal base64"),
    );
    check_key("jv8=yb3v", Base64, Err("illegal base64"));
    assert_eq!(
        KeyTransform::from_setting("HEX"),
        Err(KeyError::UnknownTransform("HEX".into()))
    );
    assert_eq!(KeyTransform::from_setting("base64"), Ok(Base64));
}

#[test]
fn key_errors_never_show_the_key() {
    for (text, t) in [
        (
            "secretsecretsecretsecretsecretsecretsecretsecretsecretsecretZZZZ",
            KeyTransform::Hex,
        ),
        (
            "secretsecretsecretsecretsecretsecretsecret",
            KeyTransform::Base64,
        ),
        ("secret", KeyTransform::None),
    ] {
        let e = key(text, t).expect_err("bad key");
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(!format!("{e:?}").contains("secret"), "{e:?}");
    }
    let k = key("TEST_LIBSODIUM_KEY_______", KeyTransform::None).expect("key");
    let e = Encryption::libsodium(k.clone(), vec![k]);
    assert!(!format!("{e:?}").contains("TEST"), "{e:?}");
}

fn sodium(text: &str) -> Encryption {
    Encryption::libsodium(key(text, KeyTransform::None).expect("key"), Vec::new())
}

#[test]
fn framing_sizes_match_walg() {
    let e = sodium("TEST_LIBSODIUM_KEY_______");
    for (n, want) in [
        (0usize, 41u64),
        (1, 42),
        (8191, 8232),
        (8192, 8250),
        (8193, 8251),
        (16384, 16459),
        (24581, 24673),
    ] {
        let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        let sealed = encrypt(&e, &data).expect("encrypt");
        assert_eq!(sealed.len() as u64, want, "{n} bytes");
        assert_eq!(sodium_encrypted_len(n as u64), want);
        assert_eq!(decrypt(&e, &sealed).expect("decrypt"), data, "{n} bytes");
    }
    assert_eq!(sodium_encrypted_len(16 << 20), 16812073);
}

#[test]
fn pieces_do_not_depend_on_write_sizes() {
    let e = sodium("TEST_LIBSODIUM_KEY_______");
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    for step in [1usize, 7, 8191, 8192, 8193, 20_000] {
        let mut enc = e.encryptor();
        let mut out = Vec::new();
        for part in data.chunks(step) {
            out.extend(enc.push(part.to_vec()).expect("push"));
        }
        out.extend(enc.finish().expect("finish"));
        assert_eq!(out.len() as u64, sodium_encrypted_len(data.len() as u64));
        assert_eq!(decrypt(&e, &out).expect("decrypt"), data, "step {step}");
    }
}

/// Pieces are opened where they lie when the input buffers them whole,
/// gathered when they straddle a buffer boundary, and decrypted straight
/// into large reads: every mix gives the same bytes and the same refusals.
#[test]
fn reads_do_not_depend_on_input_buffers_or_read_sizes() {
    let e = sodium("TEST_LIBSODIUM_KEY_______");
    for n in [0usize, 1, 8191, 8192, 8193, 3 * SODIUM_CHUNK, 50_000] {
        let data: Vec<u8> = (0..n).map(|i| (i * 13 % 251) as u8).collect();
        let sealed = encrypt(&e, &data).expect("encrypt");
        for cap in [
            1usize,
            100,
            SODIUM_PIECE - 1,
            SODIUM_PIECE,
            SODIUM_PIECE + 1,
            1 << 16,
        ] {
            for step in [1usize, 7, SODIUM_CHUNK - 1, SODIUM_CHUNK, 9000, 200_000] {
                let input = io::BufReader::with_capacity(cap, &sealed[..]);
                let mut d = e.decryptor(input);
                let mut out = Vec::new();
                let mut buf = vec![0u8; step];
                loop {
                    let k = d.read(&mut buf).expect("read");
                    if k == 0 {
                        break;
                    }
                    out.extend_from_slice(&buf[..k]);
                }
                d.finish().expect("finish");
                assert_eq!(out, data, "{n} bytes, buffer {cap}, reads of {step}");
                if n > 0 {
                    let cut = io::BufReader::with_capacity(cap, &sealed[..sealed.len() - 1]);
                    let mut d = e.decryptor(cut);
                    let mut sink = Vec::new();
                    let err = io::copy(&mut d, &mut sink).expect_err("cut by one byte");
                    assert!(
                        err.to_string().contains("does not authenticate"),
                        "{n} bytes, buffer {cap}: {err}"
                    );
                }
            }
        }
    }
}

#[test]
fn old_keys_read_and_main_key_writes() {
    let old = sodium("OLD_LIBSODIUM_KEY________");
    let new_key = key("NEW_LIBSODIUM_KEY________", KeyTransform::None).expect("key");
    let old_key = key("OLD_LIBSODIUM_KEY________", KeyTransform::None).expect("key");
    let rotated = Encryption::libsodium(new_key.clone(), vec![old_key]);
    let data = vec![9u8; 20_000];
    let by_old = encrypt(&old, &data).expect("encrypt");
    assert_eq!(decrypt(&rotated, &by_old).expect("old key reads"), data);
    let by_new = encrypt(&rotated, &data).expect("encrypt");
    assert_eq!(
        decrypt(&Encryption::libsodium(new_key, vec![]), &by_new).expect("main key wrote"),
        data
    );
    let err = decrypt(&old, &by_new).expect_err("old key cannot read new objects");
    assert!(err.to_string().contains("does not authenticate"), "{err}");
}

fn check_refused(e: &Encryption, blob: &[u8], needle: &str) {
    let err = decrypt(e, blob).expect_err(needle);
    assert!(
        err.to_string().contains(needle),
        "{err} should contain {needle}"
    );
}

#[test]
fn damaged_streams_are_refused() {
    let e = sodium("TEST_LIBSODIUM_KEY_______");
    let data = vec![1u8; 3 * SODIUM_CHUNK + 5];
    let sealed = encrypt(&e, &data).expect("encrypt");
    // Cut at a piece boundary: WAL-G reads this as a clean end; we do not.
    check_refused(
        &e,
        &sealed[..SODIUM_HEADER + 2 * SODIUM_PIECE],
        "without its final piece",
    );
    check_refused(
        &e,
        &sealed[..SODIUM_HEADER + SODIUM_PIECE + 100],
        "truncated",
    );
    check_refused(&e, &sealed[..10], "shorter than the 24-byte stream header");
    check_refused(&e, &[], "is 0 bytes");
    let mut tampered = sealed.clone();
    tampered[SODIUM_HEADER + SODIUM_PIECE + 50] ^= 1;
    check_refused(&e, &tampered, "does not authenticate");
    let mut longer = sealed.clone();
    longer.push(0);
    // Extra bytes join the last piece, which then fails to authenticate.
    check_refused(&e, &longer, "does not authenticate");
    check_refused(
        &sodium("ANOTHER_LIBSODIUM_KEY____"),
        &sealed,
        "does not authenticate",
    );
    let lz4 = crate::pipeline::codec::compress(crate::pipeline::codec::Compression::Lz4, &data)
        .expect("lz4");
    check_refused(&e, &lz4, "clear-text lz4");
    // A valid libsodium stream whose full piece is FINAL (not WAL-G's framing).
    let k = key("TEST_LIBSODIUM_KEY_______", KeyTransform::None).expect("key");
    let mut state = State::new();
    let mut header = [0u8; SODIUM_HEADER];
    crypto_secretstream_xchacha20poly1305_init_push(&mut state, &mut header, k.bytes());
    let mut blob = header.to_vec();
    let mut piece = vec![0u8; SODIUM_PIECE];
    crypto_secretstream_xchacha20poly1305_push(
        &mut state,
        &mut piece,
        &[5u8; SODIUM_CHUNK],
        None,
        TAG_FINAL,
    )
    .expect("push");
    blob.extend(piece);
    check_refused(&e, &blob, "premature end");
}

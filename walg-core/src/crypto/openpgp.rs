//! OpenPGP objects as WAL-G writes and reads them (`WALG_PGP_KEY`): the
//! compressed object in a binary literal packet, inside an
//! integrity-protected (SEIPD v1, MDC) packet encrypted to every key of the
//! keyring; no compression packet, no signature. Reading tries every secret
//! key of the keyring (rotation: keep the old key in the armored text).
//!
//! Objects are small (a WAL segment), so a whole object is encrypted or
//! decrypted at once: nothing decrypted is handed on before the MDC is checked.

use std::fmt;
use std::io::{self, BufReader, Cursor, Read};

use pgp::composed::{Message, MessageBuilder, PublicOrSecret, SignedPublicKey, SignedSecretKey};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::{KeyDetails, Password};

/// The keys from `WALG_PGP_KEY` / `WALG_PGP_KEY_PATH` and the passphrase.
/// Its `Debug` shows counts only.
pub struct PgpKeys {
    public: Vec<SignedPublicKey>,
    secret: Vec<SignedSecretKey>,
    passphrase: Password,
    /// The setting the keys came from, for messages.
    setting: String,
}

impl fmt::Debug for PgpKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PgpKeys({} public, {} secret, ***)",
            self.public.len(),
            self.secret.len()
        )
    }
}

impl PgpKeys {
    /// Whether a secret key is present, so objects can be read.
    pub fn can_decrypt(&self) -> bool {
        !self.secret.is_empty()
    }

    /// Why objects cannot be read with these keys, if they cannot.
    pub fn decrypt_refusal(&self) -> Option<String> {
        (!self.can_decrypt()).then(|| {
            format!(
                "{} holds only public keys: fetching needs the private key (export it with gpg --armor --export-secret-keys)",
                self.setting
            )
        })
    }
}

/// Parses an armored keyring (public or secret keys, one or several) and
/// checks the passphrase opens every secret key. `setting` names the
/// setting in errors; no key or passphrase text ever goes into them.
pub fn pgp_keys(
    armored: &[u8],
    passphrase: Option<&[u8]>,
    setting: &str,
) -> Result<PgpKeys, String> {
    let passphrase = match passphrase {
        Some(p) => Password::from(p),
        None => Password::empty(),
    };
    let mut keys = PgpKeys {
        public: Vec::new(),
        secret: Vec::new(),
        passphrase,
        setting: setting.to_string(),
    };
    // A keyring may be several armored blocks one after the other (the
    // outputs of two `gpg --armor --export` concatenated): parse each.
    let mut items = Vec::new();
    for block in armor_blocks(armored) {
        let (iter, _) = PublicOrSecret::from_armor_many(Cursor::new(block.to_vec())).map_err(|e| {
            format!("{setting} is not an ASCII-armored OpenPGP key ({}); export it with gpg --armor --export", short(&e))
        })?;
        items.extend(iter);
    }
    for k in items {
        let k = k.map_err(|e| {
            format!(
                "{setting}: a key in the armored text cannot be read ({})",
                short(&e)
            )
        })?;
        match k {
            PublicOrSecret::Public(p) => keys.public.push(p),
            PublicOrSecret::Secret(s) => {
                let refused = format!(
                    "{setting}: the secret key cannot be unlocked: WALG_PGP_KEY_PASSPHRASE is missing or wrong"
                );
                let pw = &keys.passphrase;
                if !matches!(s.primary_key.unlock(pw, |_, _| Ok(())), Ok(Ok(()))) {
                    return Err(refused);
                }
                for sub in &s.secret_subkeys {
                    if !matches!(sub.key.unlock(pw, |_, _| Ok(())), Ok(Ok(()))) {
                        return Err(refused);
                    }
                }
                keys.public.push(s.to_public_key());
                keys.secret.push(s);
            }
        }
    }
    if keys.public.is_empty() {
        return Err(format!("{setting} holds no OpenPGP key"));
    }
    for p in &keys.public {
        if encryption_subkey(p).is_none() && !p.primary_key.algorithm().can_encrypt() {
            return Err(format!(
                "{setting}: key {:?} has no encryption key",
                p.primary_key.legacy_key_id()
            ));
        }
    }
    Ok(keys)
}

/// The armored blocks of `text`, each from its `-----BEGIN PGP` line; the
/// whole text when there is none (its parse error then says why).
fn armor_blocks(text: &[u8]) -> Vec<&[u8]> {
    const BEGIN: &[u8] = b"-----BEGIN PGP ";
    let starts: Vec<usize> = (0..text.len())
        .filter(|&i| text[i..].starts_with(BEGIN))
        .collect();
    if starts.is_empty() {
        return vec![text];
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &at)| &text[at..starts.get(n + 1).copied().unwrap_or(text.len())])
        .collect()
}

/// rPGP's error, first line, bounded: it describes structure, never content.
fn short(e: &pgp::errors::Error) -> String {
    let s = e.to_string();
    let line = s.lines().next().unwrap_or("");
    line.chars().take(120).collect()
}

fn encryption_subkey(p: &SignedPublicKey) -> Option<&pgp::composed::SignedPublicSubKey> {
    let flagged = p.public_subkeys.iter().find(|s| {
        s.signatures
            .iter()
            .any(|sig| sig.key_flags().encrypt_comms() || sig.key_flags().encrypt_storage())
    });
    flagged.or_else(|| {
        p.public_subkeys
            .iter()
            .find(|s| s.key.algorithm().can_encrypt())
    })
}

fn failure(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Encrypts one object to every key of the keyring.
pub fn pgp_encrypt(keys: &PgpKeys, data: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut rng = rand_08::thread_rng();
    let builder = MessageBuilder::from_reader("", Cursor::new(data));
    let mut builder = builder.seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
    for p in &keys.public {
        let r = match encryption_subkey(p) {
            Some(sub) => builder.encrypt_to_key(&mut rng, sub).map(|_| ()),
            None => builder.encrypt_to_key(&mut rng, p).map(|_| ()),
        };
        r.map_err(|e| failure(format!("OpenPGP encryption failed ({})", short(&e))))?;
    }
    builder
        .to_vec(&mut rng)
        .map_err(|e| failure(format!("OpenPGP encryption failed ({})", short(&e))))
}

/// Decrypts one object with any secret key of the keyring and checks its
/// integrity (MDC) before returning anything.
pub fn pgp_decrypt(keys: &PgpKeys, data: Vec<u8>) -> io::Result<Vec<u8>> {
    if let Some(why) = keys.decrypt_refusal() {
        return Err(failure(why));
    }
    let msg = Message::from_bytes(BufReader::new(Cursor::new(data)))
        .map_err(|e| failure(format!("not an OpenPGP message ({})", short(&e))))?;
    if !msg.is_encrypted() {
        return Err(failure(
            "not an encrypted OpenPGP message; the object may be stored without encryption"
                .to_string(),
        ));
    }
    let pws: Vec<&Password> = keys.secret.iter().map(|_| &keys.passphrase).collect();
    let mut msg = msg
        .decrypt_with_keys(pws, keys.secret.iter().collect())
        .map_err(|e| {
            let why = short(&e);
            if why.contains("Modification Detection Code") {
                // The key opened it; the integrity check refused the data.
                failure(format!(
                    "OpenPGP object damaged or tampered with: its integrity check (MDC) failed ({why})"
                ))
            } else {
                failure(format!(
                    "OpenPGP decryption failed: no key of {} opens the object ({why})",
                    keys.setting
                ))
            }
        })?;
    let mut out = Vec::new();
    let r = if msg.is_compressed() {
        Err("a compressed OpenPGP packet inside (walg expects none)".to_string())
    } else {
        msg.read_to_end(&mut out)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    r.map_err(|e| failure(format!("OpenPGP object damaged or tampered with: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgp::packet::PacketTrait;

    const A_PUB: &[u8] = include_bytes!("../../testdata/pgp/a.pub");
    const A_SEC: &[u8] = include_bytes!("../../testdata/pgp/a.sec");
    const B_SEC: &[u8] = include_bytes!("../../testdata/pgp/b.sec");
    /// Protected with the passphrase "correct horse".
    const C_SEC: &[u8] = include_bytes!("../../testdata/pgp/c.sec");
    /// `gpg -e --compress-algo none -r walg-test-a` of `plain.bin`.
    const GPG_OBJ: &[u8] = include_bytes!("../../testdata/pgp/gpg.obj");
    const GPG_PLAIN: &[u8] = include_bytes!("../../testdata/pgp/plain.bin");

    fn keys(armored: &[u8], pw: Option<&str>) -> Result<PgpKeys, String> {
        pgp_keys(armored, pw.map(str::as_bytes), "WALG_PGP_KEY")
    }

    /// The packet tags at the top level of a binary message (new format).
    fn top_tags(data: &[u8]) -> Vec<u8> {
        let mut parser = pgp::packet::PacketParser::new(BufReader::new(data));
        let mut tags = Vec::new();
        for p in parser.by_ref() {
            tags.push(u8::from(p.expect("packet").tag()));
        }
        tags
    }

    #[test]
    fn round_trip_and_walg_format() {
        let public = keys(A_PUB, None).unwrap();
        let secret = keys(A_SEC, None).unwrap();
        assert!(!public.can_decrypt());
        assert!(secret.can_decrypt());
        for n in [0usize, 1, 8191, 8192, 100_000] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
            let obj = pgp_encrypt(&public, data.clone()).unwrap();
            // PKESK, then SEIPD: no compression, no signature outside.
            assert_eq!(top_tags(&obj), vec![1, 18], "n = {n}");
            let msg = Message::from_bytes(BufReader::new(Cursor::new(obj.clone()))).unwrap();
            let msg = msg.decrypt(&Password::empty(), &secret.secret[0]).unwrap();
            assert!(msg.is_literal() && !msg.is_compressed(), "n = {n}");
            let hdr = msg.literal_data_header().unwrap();
            assert_eq!(hdr.mode(), pgp::packet::DataMode::Binary);
            assert_eq!(pgp_decrypt(&secret, obj).unwrap(), data, "n = {n}");
        }
    }

    #[test]
    fn reads_gpg_objects() {
        let secret = keys(A_SEC, None).unwrap();
        assert_eq!(pgp_decrypt(&secret, GPG_OBJ.to_vec()).unwrap(), GPG_PLAIN);
    }

    #[test]
    fn keyring_rotation_reads_with_any_key() {
        let mut ring = A_SEC.to_vec();
        ring.extend_from_slice(b"\n");
        ring.extend_from_slice(B_SEC);
        let ring = keys(&ring, None).unwrap();
        assert_eq!(ring.secret.len(), 2);
        let only_b = keys(B_SEC, None).unwrap();
        let obj = pgp_encrypt(&only_b, b"old segment".to_vec()).unwrap();
        assert_eq!(pgp_decrypt(&ring, obj).unwrap(), b"old segment");
        // Writing with a keyring encrypts to every key.
        let obj = pgp_encrypt(&ring, b"new".to_vec()).unwrap();
        assert_eq!(top_tags(&obj), vec![1, 1, 18]);
        assert_eq!(pgp_decrypt(&only_b, obj).unwrap(), b"new");
    }

    #[test]
    fn bad_inputs_are_clear_errors_without_secrets() {
        let public = keys(A_PUB, None).unwrap();
        let obj = pgp_encrypt(&public, b"segment".to_vec()).unwrap();
        // A public key cannot read.
        let e = pgp_decrypt(&public, obj.clone()).unwrap_err().to_string();
        assert!(e.contains("WALG_PGP_KEY holds only public keys"), "{e}");
        // The wrong key.
        let e = pgp_decrypt(&keys(B_SEC, None).unwrap(), obj.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no key of WALG_PGP_KEY opens the object"), "{e}");
        // Tampered: the last byte (inside the MDC) flipped.
        let mut bad = obj.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(pgp_decrypt(&keys(A_SEC, None).unwrap(), bad).is_err());
        // Truncated.
        assert!(pgp_decrypt(&keys(A_SEC, None).unwrap(), obj[..obj.len() - 5].to_vec()).is_err());
        // A clear-text object.
        let e = pgp_decrypt(
            &keys(A_SEC, None).unwrap(),
            b"\x04\x22\x4d\x18 lz4".to_vec(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("OpenPGP"), "{e}");
        // Passphrases: missing, wrong, right.
        for pw in [None, Some("wrong horse")] {
            let e = keys(C_SEC, pw).unwrap_err();
            assert!(
                e.contains("WALG_PGP_KEY_PASSPHRASE is missing or wrong"),
                "{e}"
            );
            assert!(!e.contains("horse"), "{e}");
        }
        let c = keys(C_SEC, Some("correct horse")).unwrap();
        let obj = pgp_encrypt(&c, b"x".to_vec()).unwrap();
        assert_eq!(pgp_decrypt(&c, obj).unwrap(), b"x");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("horse") && !dbg.contains("BEGIN"), "{dbg}");
        // Not a key at all.
        let e = keys(b"not a key", None).unwrap_err();
        assert!(
            e.starts_with("WALG_PGP_KEY is not an ASCII-armored OpenPGP key"),
            "{e}"
        );
        let e = keys(b"", None).unwrap_err();
        assert!(e.contains("WALG_PGP_KEY"), "{e}");
    }
}

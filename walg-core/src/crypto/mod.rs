//! Encryption, in WAL-G's two formats: libsodium streams (this file) and
//! OpenPGP objects ([`openpgp`]).
//!
//! Must not know: storages, codecs, settings or files (the CLI reads key
//! text and passes it in).
//!
//! Invariant: secrets live in types whose `Debug` prints `***`; no error
//! carries key material; a fetch yields no plaintext byte of a piece before
//! that piece authenticated.
//!
//! Client-side encryption in WAL-G's byte formats, applied after compression
//! on push and before decompression on fetch.
//!
//! libsodium: `crypto_secretstream_xchacha20poly1305` (dryoc, pure Rust) in
//! WAL-G's framing: a 24-byte header, then the compressed bytes cut into
//! 8192-byte pieces, each pushed with tag MESSAGE, and a last piece of 0 to
//! 8191 bytes pushed with tag FINAL. There is no magic, version byte or
//! object-name suffix: an object does not say whether it is encrypted. Keys
//! follow WAL-G's rules (`WALG_LIBSODIUM_KEY_TRANSFORM` = `none`, `hex`,
//! `base64`); several keys may be given for reading (rotation), the first one
//! writes.
//!
//! Stricter than WAL-G on reading: a stream must end with its FINAL piece and
//! nothing may follow it, so an object cut at a piece boundary is refused
//! rather than restored short.
//!
//! Secrets live in [`SodiumKey`], whose `Debug` prints `***`; no error built
//! here contains key material. This module does not read settings or files
//! of its own accord: the CLI gathers key text and passes it in.

pub mod openpgp;

use std::fmt;
use std::io::{self, BufRead, Cursor, Read};
use std::sync::Arc;

use dryoc::classic::crypto_secretstream_xchacha20poly1305::{
    crypto_secretstream_xchacha20poly1305_init_pull,
    crypto_secretstream_xchacha20poly1305_init_push, crypto_secretstream_xchacha20poly1305_pull,
    crypto_secretstream_xchacha20poly1305_push, State,
};
use zeroize::Zeroize;

/// Plaintext bytes per libsodium piece (WAL-G's `chunkSize`).
pub const SODIUM_CHUNK: usize = 8192;
/// Bytes a piece grows by: one encrypted tag byte and a 16-byte MAC.
pub const SODIUM_ABYTES: usize = 17;
/// The stream header.
pub const SODIUM_HEADER: usize = 24;
const SODIUM_PIECE: usize = SODIUM_CHUNK + SODIUM_ABYTES;
const TAG_MESSAGE: u8 = 0;
const TAG_FINAL: u8 = 3;
/// WAL-G's `minimalKeyLength` for the `none` transform.
const MIN_RAW_KEY: usize = 25;
const KEY_BYTES: usize = 32;

/// A 32-byte libsodium key. `Debug` never shows it; dropped keys are zeroed.
#[derive(Clone, PartialEq, Eq)]
pub struct SodiumKey(Box<[u8; KEY_BYTES]>);

impl SodiumKey {
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> SodiumKey {
        SodiumKey(Box::new(bytes))
    }

    fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

impl Drop for SodiumKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SodiumKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SodiumKey(***)")
    }
}

/// How key text becomes 32 key bytes (`WALG_LIBSODIUM_KEY_TRANSFORM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyTransform {
    /// The text's bytes: at least 25, zero-padded to 32, cut at 32. WAL-G's
    /// default, kept for compatibility; it is not a key derivation.
    #[default]
    None,
    Hex,
    Base64,
}

impl KeyTransform {
    /// Parses the setting; names are case-sensitive, as in WAL-G.
    pub fn from_setting(value: &str) -> Result<KeyTransform, KeyError> {
        match value {
            "none" => Ok(KeyTransform::None),
            "hex" => Ok(KeyTransform::Hex),
            "base64" => Ok(KeyTransform::Base64),
            other => Err(KeyError::UnknownTransform(other.to_string())),
        }
    }
}

/// Why key text was refused. Never carries the key or any part of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("unknown key transform {0:?} (must be base64, hex or none)")]
    UnknownTransform(String),
    #[error("the key is empty")]
    Empty,
    #[error("key length must not be less than 25, got {0}")]
    TooShort(usize),
    #[error("while hex decoding key: {0}")]
    Hex(String),
    #[error("while base64 decoding key: {0}")]
    Base64(String),
    #[error("key must be exactly 32 bytes (got {0} bytes)")]
    WrongLength(usize),
}

/// Turns key text into a key by WAL-G's rules (`keytransform.go`).
pub fn sodium_key(text: &[u8], transform: KeyTransform) -> Result<SodiumKey, KeyError> {
    if text.is_empty() {
        return Err(KeyError::Empty);
    }
    let mut decoded = match transform {
        KeyTransform::None => {
            if text.len() < MIN_RAW_KEY {
                return Err(KeyError::TooShort(text.len()));
            }
            let mut key = [0u8; KEY_BYTES];
            let n = text.len().min(KEY_BYTES);
            key[..n].copy_from_slice(&text[..n]);
            return Ok(SodiumKey::from_bytes(key));
        }
        KeyTransform::Hex => decode_hex(text).map_err(KeyError::Hex)?,
        KeyTransform::Base64 => decode_base64(text).map_err(KeyError::Base64)?,
    };
    if decoded.len() != KEY_BYTES {
        let n = decoded.len();
        decoded.zeroize();
        return Err(KeyError::WrongLength(n));
    }
    let mut key = [0u8; KEY_BYTES];
    key.copy_from_slice(&decoded);
    decoded.zeroize();
    Ok(SodiumKey::from_bytes(key))
}

/// Go's `hex.DecodeString`: even length, either case, nothing else. Errors
/// give positions, never the offending characters.
fn decode_hex(text: &[u8]) -> Result<Vec<u8>, String> {
    let digit = |i: usize| -> Result<u8, String> {
        match text[i] {
            c @ b'0'..=b'9' => Ok(c - b'0'),
            c @ b'a'..=b'f' => Ok(c - b'a' + 10),
            c @ b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(format!("invalid hex character at position {i}")),
        }
    };
    let mut out = Vec::with_capacity(text.len() / 2);
    for i in (0..text.len() / 2 * 2).step_by(2) {
        out.push(digit(i)? << 4 | digit(i + 1)?);
    }
    if text.len() % 2 == 1 {
        digit(text.len() - 1)?;
        out.zeroize();
        return Err(format!("odd length hex string ({} characters)", text.len()));
    }
    Ok(out)
}

/// Go's `base64.StdEncoding.DecodeString`: the standard alphabet, padding
/// required, `\r` and `\n` skipped, trailing bits not checked.
fn decode_base64(text: &[u8]) -> Result<Vec<u8>, String> {
    let value = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    // Positions refer to the input as given, as Go's errors do.
    let symbols: Vec<(usize, u8)> = text
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, c)| *c != b'\r' && *c != b'\n')
        .collect();
    let illegal = |i: usize| format!("illegal base64 data at input byte {i}");
    if !symbols.len().is_multiple_of(4) {
        return Err(illegal(symbols.last().map_or(0, |(i, _)| *i)));
    }
    let mut out = Vec::with_capacity(symbols.len() / 4 * 3);
    let quads = symbols.len() / 4;
    for (q, quad) in symbols.chunks(4).enumerate() {
        let pad = quad.iter().rev().take_while(|(_, c)| *c == b'=').count();
        if pad > 2 || (pad > 0 && q + 1 != quads) {
            return Err(illegal(quad[4 - pad].0));
        }
        let mut acc = 0u32;
        for &(i, c) in &quad[..4 - pad] {
            acc = acc << 6 | value(c).ok_or_else(|| illegal(i))?;
        }
        acc <<= 6 * pad as u32;
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Ok(out)
}

/// Key text from a key file: WAL-G trims surrounding whitespace.
pub fn trim_key_file(content: &[u8]) -> &[u8] {
    match std::str::from_utf8(content) {
        Ok(s) => s.trim().as_bytes(),
        Err(_) => content.trim_ascii(),
    }
}

/// The libsodium keys: `main` writes and is tried first for reading, then
/// each of `old` (rotation).
#[derive(Clone, PartialEq, Eq)]
pub struct SodiumKeys {
    pub main: SodiumKey,
    pub old: Vec<SodiumKey>,
}

impl fmt::Debug for SodiumKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SodiumKeys(*** + {} old)", self.old.len())
    }
}

/// The encryption of stored objects, the same for every storage (like
/// compression). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub enum Encryption {
    #[default]
    None,
    Libsodium(Arc<SodiumKeys>),
    Pgp(Arc<crate::crypto::openpgp::PgpKeys>),
}

impl Encryption {
    pub fn libsodium(main: SodiumKey, old: Vec<SodiumKey>) -> Encryption {
        Encryption::Libsodium(Arc::new(SodiumKeys { main, old }))
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Encryption::None)
    }

    /// A short name for log lines.
    pub fn name(&self) -> &'static str {
        match self {
            Encryption::None => "none",
            Encryption::Libsodium(_) => "libsodium",
            Encryption::Pgp(_) => "openpgp",
        }
    }

    /// A streaming encryptor for one object.
    pub fn encryptor(&self) -> Encryptor {
        match self {
            Encryption::None => Encryptor(EncryptorInner::None),
            Encryption::Libsodium(keys) => Encryptor(EncryptorInner::Sodium(Box::new(
                SodiumWriter::new(&keys.main),
            ))),
            Encryption::Pgp(keys) => Encryptor(EncryptorInner::Pgp(keys.clone(), Vec::new())),
        }
    }

    /// Wraps `input` (a stored object) in a reader of the decrypted bytes.
    /// Call [`Decryptor::finish`] after the consumer is done: it checks
    /// that the stream was complete and nothing followed it.
    ///
    /// libsodium pieces that `input` holds whole in its buffer are opened
    /// where they lie, and a `read` into a buffer of at least
    /// [`SODIUM_CHUNK`] bytes decrypts straight into it: the plaintext is
    /// written once.
    pub fn decryptor<R: BufRead>(&self, input: R) -> Decryptor<R> {
        match self {
            Encryption::None => Decryptor(DecryptorInner::None(input)),
            Encryption::Libsodium(keys) => Decryptor(DecryptorInner::Sodium(Box::new(
                SodiumReader::new(input, keys.clone()),
            ))),
            Encryption::Pgp(keys) => Decryptor(DecryptorInner::Pgp(Box::new(PgpReader {
                input: Some(input),
                keys: keys.clone(),
                plain: Cursor::new(Vec::new()),
                failure: None,
            }))),
        }
    }

    /// The stored size of `n` plaintext bytes, when it is known in advance.
    pub fn encrypted_len(&self, n: u64) -> Option<u64> {
        match self {
            Encryption::None => Some(n),
            Encryption::Libsodium(_) => Some(sodium_encrypted_len(n)),
            Encryption::Pgp(_) => None,
        }
    }
}

/// Added to a decode failure when no encryption is configured: WAL-G marks
/// nothing, so an encrypted object read without a key just looks corrupt.
pub const ENCRYPTED_HINT: &str =
    "; if the archive was written with encryption, set WALG_LIBSODIUM_KEY (or WALG_PGP_KEY) to its key";

/// WAL-G's libsodium object size for `n` plaintext bytes.
pub fn sodium_encrypted_len(n: u64) -> u64 {
    let chunk = SODIUM_CHUNK as u64;
    SODIUM_HEADER as u64 + n / chunk * SODIUM_PIECE as u64 + n % chunk + SODIUM_ABYTES as u64
}

/// Encrypts one object chunk by chunk: `push` bytes, take what is ready.
#[derive(Debug)]
pub struct Encryptor(EncryptorInner);

#[derive(Debug)]
enum EncryptorInner {
    None,
    Sodium(Box<SodiumWriter>),
    /// The whole object, encrypted at `finish`.
    Pgp(Arc<crate::crypto::openpgp::PgpKeys>, Vec<u8>),
}

impl Encryptor {
    /// Encrypts `input` and returns the bytes ready so far. Without
    /// encryption the same buffer comes back, uncopied.
    pub fn push(&mut self, input: Vec<u8>) -> io::Result<Vec<u8>> {
        match &mut self.0 {
            EncryptorInner::None => Ok(input),
            EncryptorInner::Sodium(w) => w.push(&input),
            EncryptorInner::Pgp(_, buf) => {
                if buf.is_empty() {
                    *buf = input;
                } else {
                    buf.extend_from_slice(&input);
                }
                Ok(Vec::new())
            }
        }
    }

    /// Encrypts `input` and appends the bytes ready so far to `out`, so a
    /// caller can recycle its buffers (without encryption, a copy).
    pub fn push_into(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        match &mut self.0 {
            EncryptorInner::None => out.extend_from_slice(input),
            EncryptorInner::Sodium(w) => w.push_into(input, out)?,
            EncryptorInner::Pgp(_, buf) => buf.extend_from_slice(input),
        }
        Ok(())
    }

    /// Ends the object and returns its last bytes.
    pub fn finish(self) -> io::Result<Vec<u8>> {
        match self.0 {
            EncryptorInner::None => Ok(Vec::new()),
            EncryptorInner::Sodium(w) => w.finish(),
            EncryptorInner::Pgp(keys, buf) => crate::crypto::openpgp::pgp_encrypt(&keys, buf),
        }
    }
}

struct SodiumWriter {
    state: State,
    header: Option<[u8; SODIUM_HEADER]>,
    /// Plaintext of the current, incomplete piece (< 8192 bytes).
    pending: Vec<u8>,
}

impl fmt::Debug for SodiumWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SodiumWriter")
    }
}

fn sodium_failure(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl SodiumWriter {
    fn new(key: &SodiumKey) -> SodiumWriter {
        let mut state = State::new();
        let mut header = [0u8; SODIUM_HEADER];
        crypto_secretstream_xchacha20poly1305_init_push(&mut state, &mut header, key.bytes());
        SodiumWriter {
            state,
            header: Some(header),
            pending: Vec::with_capacity(SODIUM_CHUNK),
        }
    }

    fn seal(&mut self, piece: &[u8], tag: u8, out: &mut Vec<u8>) -> io::Result<()> {
        let at = out.len();
        out.resize(at + piece.len() + SODIUM_ABYTES, 0);
        crypto_secretstream_xchacha20poly1305_push(
            &mut self.state,
            &mut out[at..],
            piece,
            None,
            tag,
        )
        .map_err(|_| sodium_failure("libsodium encryption failed"))
    }

    fn push(&mut self, input: &[u8]) -> io::Result<Vec<u8>> {
        let total = self.pending.len() + input.len();
        let mut out = Vec::with_capacity(SODIUM_HEADER + total / SODIUM_CHUNK * SODIUM_PIECE);
        self.push_into(input, &mut out)?;
        Ok(out)
    }

    fn push_into(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        // The header goes out with the first bytes, so an object always starts
        // with it, whatever the caller's write sizes.
        if let Some(h) = self.header.take() {
            out.extend_from_slice(&h);
        }
        if !self.pending.is_empty() {
            let take = (SODIUM_CHUNK - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() < SODIUM_CHUNK {
                return Ok(());
            }
            let piece = std::mem::take(&mut self.pending);
            self.seal(&piece, TAG_MESSAGE, out)?;
            self.pending = piece;
            self.pending.clear();
        }
        // A full piece is never FINAL, so it can go out at once: the FINAL
        // piece is whatever is pending when the object ends (0..8191 bytes).
        let mut pieces = input.chunks_exact(SODIUM_CHUNK);
        for piece in &mut pieces {
            self.seal(piece, TAG_MESSAGE, out)?;
        }
        self.pending.extend_from_slice(pieces.remainder());
        Ok(())
    }

    fn finish(mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(SODIUM_HEADER + SODIUM_PIECE);
        if let Some(h) = self.header.take() {
            out.extend_from_slice(&h);
        }
        let piece = std::mem::take(&mut self.pending);
        self.seal(&piece, TAG_FINAL, &mut out)?;
        Ok(out)
    }
}

/// A stored object being decrypted.
#[derive(Debug)]
pub struct Decryptor<R>(DecryptorInner<R>);

#[derive(Debug)]
enum DecryptorInner<R> {
    None(R),
    Sodium(Box<SodiumReader<R>>),
    Pgp(Box<PgpReader<R>>),
}

/// Reads the whole OpenPGP object, decrypts and authenticates it, then
/// serves the plaintext.
struct PgpReader<R> {
    input: Option<R>,
    keys: Arc<crate::crypto::openpgp::PgpKeys>,
    plain: Cursor<Vec<u8>>,
    failure: Option<String>,
}

impl<R> fmt::Debug for PgpReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PgpReader")
    }
}

impl<R: Read> Read for PgpReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(mut input) = self.input.take() {
            let mut data = Vec::new();
            input.read_to_end(&mut data)?;
            match crate::crypto::openpgp::pgp_decrypt(&self.keys, data) {
                Ok(p) => self.plain = Cursor::new(p),
                Err(e) => {
                    self.failure = Some(e.to_string());
                    return Err(e);
                }
            }
        }
        if let Some(f) = &self.failure {
            return Err(io::Error::new(io::ErrorKind::InvalidData, f.clone()));
        }
        self.plain.read(buf)
    }
}

impl<R: BufRead> Read for Decryptor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            DecryptorInner::None(r) => r.read(buf),
            DecryptorInner::Sodium(r) => r.read(buf),
            DecryptorInner::Pgp(r) => r.read(buf),
        }
    }
}

impl<R: BufRead> Decryptor<R> {
    /// The first decryption error, if any: the consumer (a decompressor)
    /// may have wrapped it in a message of its own.
    pub fn failure(&self) -> Option<String> {
        match &self.0 {
            DecryptorInner::None(_) => None,
            DecryptorInner::Sodium(r) => r.failure.clone(),
            DecryptorInner::Pgp(r) => r.failure.clone(),
        }
    }

    /// Reads what the consumer left and checks the stream ended properly:
    /// its FINAL piece authenticated and nothing after it.
    pub fn finish(&mut self) -> io::Result<()> {
        match &mut self.0 {
            DecryptorInner::None(_) => Ok(()),
            DecryptorInner::Pgp(r) => {
                let mut sink = [0u8; 1];
                match r.read(&mut sink)? {
                    0 => Ok(()),
                    _ => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "decrypted data continues after the end of the compressed stream",
                    )),
                }
            }
            DecryptorInner::Sodium(r) => {
                let mut sink = [0u8; 1];
                match r.read(&mut sink)? {
                    0 => Ok(()),
                    // Plaintext the decompressor did not want: the object
                    // holds more than one compressed stream.
                    _ => Err(
                        r.fail("decrypted data continues after the end of the compressed stream")
                    ),
                }
            }
        }
    }
}

/// Reads WAL-G's libsodium framing, strictly.
struct SodiumReader<R> {
    input: R,
    keys: Arc<SodiumKeys>,
    state: Option<State>,
    /// A piece that straddles the input's buffer boundary is gathered here.
    piece: Vec<u8>,
    /// Plaintext of the last piece, for reads smaller than a piece;
    /// `plain[pos..len]` is what is left of it.
    plain: Vec<u8>,
    pos: usize,
    len: usize,
    done: bool,
    failure: Option<String>,
}

impl<R> fmt::Debug for SodiumReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SodiumReader")
    }
}

/// Reads until `buf` is full or the input ends.
pub(crate) fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What the first bytes of an object that failed to decrypt look like.
fn clear_text_hint(head: &[u8]) -> &'static str {
    match head {
        [0x04, 0x22, 0x4D, 0x18, ..] => {
            "; it starts like a clear-text lz4 frame: was it archived without encryption?"
        }
        [0x28, 0xB5, 0x2F, 0xFD, ..] => {
            "; it starts like a clear-text zstd frame: was it archived without encryption?"
        }
        [0xC1 | 0x84..=0x87, ..] => {
            "; it looks like an OpenPGP message: set WALG_PGP_KEY (the private key) instead of the libsodium key"
        }
        _ => "",
    }
}

/// Takes the next piece of `input` (at most [`SODIUM_PIECE`] bytes, fewer
/// only at the end of the input) and hands it to `open`: where it lies in
/// the input's buffer when it is whole there, else gathered into `spare`.
/// Returns the piece's size and what `open` said.
fn with_next_piece<R: BufRead, T>(
    input: &mut R,
    spare: &mut [u8],
    open: impl FnOnce(&[u8]) -> T,
) -> io::Result<(usize, T)> {
    let avail = loop {
        match input.fill_buf() {
            Ok(b) => break b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    if avail.len() >= SODIUM_PIECE {
        let out = open(&avail[..SODIUM_PIECE]);
        input.consume(SODIUM_PIECE);
        return Ok((SODIUM_PIECE, out));
    }
    let n = read_full(input, &mut spare[..SODIUM_PIECE])?;
    Ok((n, open(&spare[..n])))
}

impl<R: BufRead> SodiumReader<R> {
    fn new(input: R, keys: Arc<SodiumKeys>) -> Self {
        SodiumReader {
            input,
            keys,
            state: None,
            piece: vec![0u8; SODIUM_PIECE],
            plain: Vec::new(),
            pos: 0,
            len: 0,
            done: false,
            failure: None,
        }
    }

    fn fail(&mut self, msg: &str) -> io::Error {
        let msg = format!("libsodium: {msg}");
        self.failure.get_or_insert(msg.clone());
        io::Error::new(io::ErrorKind::InvalidData, msg)
    }

    /// Decrypts the next piece into `out` (at least [`SODIUM_CHUNK`] bytes)
    /// and returns its plaintext length; `None` at the end of the stream.
    fn next_piece(&mut self, out: &mut [u8]) -> io::Result<Option<usize>> {
        if self.done {
            return Ok(None);
        }
        let out = &mut out[..SODIUM_CHUNK];
        if self.state.is_none() {
            let mut header = [0u8; SODIUM_HEADER];
            let n = read_full(&mut self.input, &mut header)?;
            if n < SODIUM_HEADER {
                let hint = clear_text_hint(&header[..n]);
                return Err(self.fail(&format!(
                    "the object is {n} bytes, shorter than the 24-byte stream header: not encrypted with libsodium, or truncated{hint}"
                )));
            }
            // The first piece tells which key the object was written with.
            let keys = self.keys.clone();
            let (n, opened) = with_next_piece(&mut self.input, &mut self.piece, |piece| {
                std::iter::once(&keys.main)
                    .chain(keys.old.iter())
                    .find_map(|key| {
                        let mut state = State::new();
                        crypto_secretstream_xchacha20poly1305_init_pull(
                            &mut state,
                            &header,
                            key.bytes(),
                        );
                        Self::open(&mut state, piece, out).map(|tag| (state, tag))
                    })
            })?;
            if let Some((state, tag)) = opened {
                self.state = Some(state);
                return self.accept(tag, n);
            }
            let tried = if keys.old.is_empty() {
                "the libsodium key".to_string()
            } else {
                format!(
                    "the libsodium key nor any of the {} old keys",
                    keys.old.len()
                )
            };
            let hint = clear_text_hint(&header);
            return Err(self.fail(&format!(
                "the object does not authenticate with {tried} (a wrong key, an object not encrypted with libsodium, or damaged data){hint}"
            )));
        }
        let Some(state) = self.state.as_mut() else {
            return Ok(None);
        };
        let (n, tag) = with_next_piece(&mut self.input, &mut self.piece, |piece| {
            Self::open(state, piece, out)
        })?;
        if n == 0 {
            return Err(
                self.fail("the stream ends without its final piece: the object is truncated")
            );
        }
        match tag {
            Some(tag) => self.accept(tag, n),
            None => Err(self.fail(
                "a piece of the object does not authenticate: the object is damaged or truncated",
            )),
        }
    }

    /// Pulls one piece into `plain`; the tag on success.
    fn open(state: &mut State, piece: &[u8], plain: &mut [u8]) -> Option<u8> {
        if piece.len() < SODIUM_ABYTES {
            return None;
        }
        let mut tag = 0u8;
        crypto_secretstream_xchacha20poly1305_pull(
            state,
            &mut plain[..piece.len() - SODIUM_ABYTES],
            &mut tag,
            piece,
            None,
        )
        .ok()?;
        Some(tag)
    }

    /// Checks the tag of a piece of `n` bytes that authenticated; its
    /// plaintext length.
    fn accept(&mut self, tag: u8, n: usize) -> io::Result<Option<usize>> {
        let full = n == SODIUM_PIECE;
        match tag {
            TAG_MESSAGE if full => {}
            TAG_MESSAGE => {
                return Err(
                    self.fail("the stream ends without its final piece: the object is truncated")
                )
            }
            TAG_FINAL if !full => {
                self.done = true;
                let mut extra = [0u8; 1];
                if read_full(&mut self.input, &mut extra)? != 0 {
                    return Err(self.fail("data follows the final piece of the stream"));
                }
            }
            TAG_FINAL => {
                // WAL-G never writes a full FINAL piece and refuses to read one.
                return Err(self.fail("premature end: a full piece is tagged final"));
            }
            _ => return Err(self.fail("unexpected piece tag (not written by WAL-G or walg)")),
        }
        Ok(Some(n - SODIUM_ABYTES))
    }
}

impl<R: BufRead> Read for SodiumReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(f) = &self.failure {
            return Err(io::Error::new(io::ErrorKind::InvalidData, f.clone()));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos < self.len {
                let n = buf.len().min(self.len - self.pos);
                buf[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if buf.len() >= SODIUM_CHUNK {
                // Straight into the caller's buffer; a piece may hold
                // nothing (an empty FINAL one), then the next is read.
                match self.next_piece(buf)? {
                    Some(0) => continue,
                    Some(n) => return Ok(n),
                    None => return Ok(0),
                }
            }
            let mut plain = std::mem::take(&mut self.plain);
            plain.resize(SODIUM_CHUNK, 0);
            let got = self.next_piece(&mut plain);
            self.plain = plain;
            self.pos = 0;
            self.len = 0;
            match got? {
                Some(n) => self.len = n,
                None => return Ok(0),
            }
        }
    }
}

impl<R> Drop for SodiumReader<R> {
    fn drop(&mut self) {
        self.plain.zeroize();
    }
}

/// Encrypts a whole buffer; for tests and small files.
pub fn encrypt(e: &Encryption, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = e.encryptor();
    let mut out = enc.push(data.to_vec())?;
    out.extend(enc.finish()?);
    Ok(out)
}

/// Decrypts a whole buffer, strictly; for tests and small files.
pub fn decrypt(e: &Encryption, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut d = e.decryptor(data);
    d.read_to_end(&mut out)?;
    d.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests;

//! Bridges between async storage streams and blocking codecs.
//!
//! Compression and decompression (and, around them, encryption and
//! decryption) are CPU work on `Read`/`Write` adapters, so they run on
//! tokio's blocking pool while the async side moves chunks to or from the
//! storage; a bounded channel between the two overlaps the CPU work with I/O
//! and caps memory at a few chunks. Push compresses, then encrypts; fetch
//! decrypts, then decompresses (WAL-G's order).

use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::crypto::{read_full, Encryption};
use crate::pipeline::budget::MemoryBudget;
use crate::pipeline::codec::Compression;
use crate::store::error::{ErrorKind, StoreError};
use crate::store::{Body, ByteStream, LocalFile};

/// The budget every stage here is sized from (the storages size their
/// uploads from the same one).
const BUDGET: MemoryBudget = MemoryBudget::DEFAULT;

type Sender = mpsc::Sender<Result<Bytes, StoreError>>;

/// Buffers of one stage, recycled: what the stage sends is a `Bytes` over
/// one of its buffers, which comes back here (emptied) when the last holder
/// of those bytes (a channel, the next stage, the storage's writer) drops
/// them, so at most the budget's worth exist at once.
///
/// Recycling is what keeps the resident set at what is alive: glibc's
/// malloc, seeing megabyte buffers allocated on one thread and freed on
/// another, raises its mmap threshold and keeps what is freed (a 256 MiB
/// lz4 push to files peaked 9 MiB higher with fresh buffers than with
/// recycled ones), and a recycled buffer's pages are already there.
#[derive(Debug, Clone)]
struct Pool {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Capacity of a new buffer.
    capacity: usize,
}

/// A pooled buffer lent to a `Bytes`.
struct Pooled {
    buf: Vec<u8>,
    free: Weak<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // After the stage ended (the pool is gone), the buffer is freed.
        let Some(free) = self.free.upgrade() else {
            return;
        };
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        if let Ok(mut list) = free.lock() {
            list.push(buf);
        };
    }
}

impl Pool {
    fn new(capacity: usize) -> Pool {
        Pool {
            free: Arc::default(),
            capacity,
        }
    }

    /// An empty buffer: a returned one, or a new one.
    fn take(&self) -> Vec<u8> {
        let returned = self.free.lock().ok().and_then(|mut free| free.pop());
        returned.unwrap_or_else(|| Vec::with_capacity(self.capacity))
    }

    /// `buf` as bytes that return it here when dropped.
    fn bytes(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            free: Arc::downgrade(&self.free),
        })
    }
}

/// The stream a storage reads a body from. It ends cleanly only when the
/// producing stage said it finished (`done`): a stage that died without a
/// word (a panic) ends the stream with an error, so a cut object is never
/// taken as complete.
fn receiver_stream(
    rx: mpsc::Receiver<Result<Bytes, StoreError>>,
    done: Arc<AtomicBool>,
) -> ByteStream {
    Box::pin(futures::stream::unfold(
        (rx, done, false),
        |(mut rx, done, ended)| async move {
            if ended {
                return None;
            }
            match rx.recv().await {
                Some(item) => Some((item, (rx, done, false))),
                None if done.load(Ordering::Acquire) => None,
                None => Some((
                    Err(StoreError::new(
                        ErrorKind::Other,
                        "read",
                        "local",
                        "",
                        "the compression or encryption stage stopped before the end of the file",
                    )),
                    (rx, done, true),
                )),
            }
        },
    ))
}

/// What a stage does when its work ends: the final bytes go out and the
/// stream is marked complete, or the error goes out in their place.
fn stage_end(
    out: io::Result<Option<Vec<u8>>>,
    path: &Path,
    tx: &Sender,
    done: &AtomicBool,
    count: impl FnOnce(u64),
) {
    match out {
        Ok(Some(last)) => {
            count(last.len() as u64);
            if !last.is_empty() && tx.blocking_send(Ok(Bytes::from(last))).is_err() {
                return;
            }
            done.store(true, Ordering::Release);
        }
        // The consumer gave up; nothing to report to anyone.
        Ok(None) => {}
        Err(e) => {
            let key = path.display().to_string();
            let _ = tx.blocking_send(Err(StoreError::from_io("read", "local", &key, &e)));
        }
    }
}

/// Reads `path` and sends its compressed chunks to `tx`; returns the last
/// bytes (the codec's trailer), or `None` when the consumer went away.
fn compress_file(
    path: &Path,
    compression: Compression,
    expected: u64,
    tx: &Sender,
    produced: Option<&AtomicU64>,
) -> io::Result<Option<Vec<u8>>> {
    let chunk = BUDGET.chunk();
    let capacity = BUDGET.buffer();
    // What a codec may write beyond what it is given (lz4: a block's worst
    // case before it knows the block's size, see `buffer`; zstd: a block
    // it held back; brotli, flushed every read: framing), and the reads it
    // is best fed (lz4: whole blocks, or a partial one is copied aside
    // until the next read completes it).
    let (headroom, granule) = match compression {
        Compression::None => (0, 64 << 10),
        Compression::Lz4 => (capacity - chunk, crate::pipeline::lz4frame::BLOCK_SIZE),
        Compression::Zstd => (136 << 10, 64 << 10),
        Compression::Brotli => (64 << 10, 64 << 10),
    };
    let pool = Pool::new(capacity);
    let mut f = File::open(path)?;
    let mut enc = compression.encoder()?;
    let mut input = Vec::new();
    let mut out = pool.take();
    let mut read = 0u64;
    let mut ended = false;
    while !ended {
        // Compressed chunks are sent full: a storage that counts bytes to
        // size its parts then holds the memory it counts, not a pool
        // buffer per fraction of a chunk. So each read is what the room
        // left in `out` takes (the codecs add at most a small fraction to
        // what they read), and `out` goes when there is little room left.
        let room = capacity.saturating_sub(out.len() + headroom);
        let want = chunk.min(room) / granule * granule;
        if want > 0 {
            let n = if compression == Compression::None {
                // Nothing to encode: read straight into the buffer sent.
                let at = out.len();
                out.resize(at + want, 0);
                let n = read_full(&mut f, &mut out[at..])?;
                out.truncate(at + n);
                n
            } else {
                input.resize(want, 0);
                let n = read_full(&mut f, &mut input)?;
                enc.push_into(&input[..n], &mut out)?;
                n
            };
            read += n as u64;
            ended = n == 0;
            if !ended && out.len() < chunk - chunk / 4 {
                continue;
            }
        }
        if out.is_empty() {
            continue;
        }
        if let Some(p) = produced {
            p.fetch_add(out.len() as u64, Ordering::Relaxed);
        }
        let full = std::mem::replace(&mut out, pool.take());
        if tx.blocking_send(Ok(pool.bytes(full))).is_err() {
            return Ok(None);
        }
    }
    if read != expected {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("file changed size while reading: expected {expected} bytes, read {read}"),
        ));
    }
    let mut last = enc.finish()?;
    if out.is_empty() {
        return Ok(Some(last));
    }
    // Bytes still waiting in `out` (an unfilled last chunk) go before the
    // codec's trailer.
    out.append(&mut last);
    Ok(Some(out))
}

/// Encrypts the compressed chunks from `rx` into `tx`, counting what it
/// sends in `produced`; returns the encryption's trailer.
fn encrypt_stage(
    mut rx: mpsc::Receiver<Result<Bytes, StoreError>>,
    compressed: &AtomicBool,
    encryption: &Encryption,
    tx: &Sender,
    produced: &AtomicU64,
) -> io::Result<Option<Vec<u8>>> {
    let mut crypt = encryption.encryptor();
    // Room for a full compressed buffer and libsodium's 17 bytes per 8 KiB.
    let pool = Pool::new(BUDGET.buffer() + BUDGET.buffer() / 64 + 1024);
    while let Some(item) = rx.blocking_recv() {
        match item {
            Ok(chunk) => {
                let mut out = pool.take();
                crypt.push_into(&chunk, &mut out)?;
                // The compressed chunk's buffer goes back to its stage now.
                drop(chunk);
                produced.fetch_add(out.len() as u64, Ordering::Relaxed);
                if !out.is_empty() && tx.blocking_send(Ok(pool.bytes(out))).is_err() {
                    return Ok(None);
                }
            }
            Err(e) => {
                // The compression stage's error, passed on as it is.
                let _ = tx.blocking_send(Err(e));
                return Ok(None);
            }
        }
    }
    if !compressed.load(Ordering::Acquire) {
        return Err(io::Error::other(
            "the compression stage stopped before the end of the file",
        ));
    }
    let last = crypt.finish()?;
    produced.fetch_add(last.len() as u64, Ordering::Relaxed);
    Ok(Some(last))
}

/// A local file, compressed (then encrypted) on the fly each time it is
/// opened.
#[derive(Debug)]
pub struct FileBody {
    path: PathBuf,
    compression: Compression,
    encryption: Encryption,
    /// Exact size the file must have; a different size while reading is an
    /// error, so a file truncated under us is never stored as complete.
    expected_len: u64,
    produced: Arc<AtomicU64>,
}

impl FileBody {
    pub fn new(path: impl Into<PathBuf>, compression: Compression, expected_len: u64) -> Self {
        Self::encrypted(path, compression, Encryption::None, expected_len)
    }

    /// A body compressed with `compression`, then encrypted with `encryption`.
    pub fn encrypted(
        path: impl Into<PathBuf>,
        compression: Compression,
        encryption: Encryption,
        expected_len: u64,
    ) -> Self {
        FileBody {
            path: path.into(),
            compression,
            encryption,
            expected_len,
            produced: Arc::default(),
        }
    }

    /// Compressed bytes produced by the most recent complete read.
    pub fn produced(&self) -> u64 {
        self.produced.load(Ordering::Relaxed)
    }
}

impl Body for FileBody {
    fn open(&self) -> ByteStream {
        let (tx, rx) = mpsc::channel(BUDGET.channel_depth());
        let done = Arc::new(AtomicBool::new(false));
        let path = self.path.clone();
        let compression = self.compression;
        let expected = self.expected_len;
        let produced = self.produced.clone();
        produced.store(0, Ordering::Relaxed);
        if matches!(self.encryption, Encryption::None) {
            let finished = done.clone();
            tokio::task::spawn_blocking(move || {
                let out = compress_file(&path, compression, expected, &tx, Some(&produced));
                stage_end(out, &path, &tx, &finished, |n| {
                    produced.fetch_add(n, Ordering::Relaxed);
                });
            });
        } else {
            // Encryption gets a thread of its own, so it overlaps with the
            // codec and the I/O instead of adding to them.
            let (ctx, crx) = mpsc::channel(BUDGET.channel_depth());
            let compressed = Arc::new(AtomicBool::new(false));
            let finished = compressed.clone();
            let key = path.clone();
            tokio::task::spawn_blocking(move || {
                let out = compress_file(&path, compression, expected, &ctx, None);
                stage_end(out, &path, &ctx, &finished, |_| {});
            });
            let encryption = self.encryption.clone();
            let finished = done.clone();
            tokio::task::spawn_blocking(move || {
                let out = encrypt_stage(crx, &compressed, &encryption, &tx, &produced);
                stage_end(out, &key, &tx, &finished, |_| {});
            });
        }
        receiver_stream(rx, done)
    }

    fn local_file(&self) -> Option<LocalFile> {
        if self.compression != Compression::None || !matches!(self.encryption, Encryption::None) {
            return None;
        }
        // What a store that copies the file itself will have stored.
        self.produced.store(self.expected_len, Ordering::Relaxed);
        Some(LocalFile {
            path: self.path.clone(),
            len: self.expected_len,
            progress: None,
        })
    }

    fn len_hint(&self) -> Option<u64> {
        if self.compression == Compression::None {
            self.encryption.encrypted_len(self.expected_len)
        } else {
            None
        }
    }
}

/// Feeds chunks received from the async side to a blocking reader.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = buf.len().min(available.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(&self.current)
    }
    fn consume(&mut self, n: usize) {
        let _ = self.current.split_to(n);
    }
}

// Plaintext buffers are handed from the decryption stage to the
// decompressor, and handed back empty to be filled again, so the plaintext
// of a whole segment goes through the same few buffers (a chunk each, a
// whole number of libsodium pieces: fewer handoffs between the threads than
// smaller ones) instead of fresh pages: one being filled, one being read,
// and a channel's depth of filled ones waiting.

/// Reads the decryption stage's buffers and returns each, once read, for
/// the stage to fill again.
struct PlainReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    back: std::sync::mpsc::Sender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for PlainReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.current.len() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => {
                    let used = std::mem::replace(&mut self.current, b);
                    if used.capacity() > 0 {
                        let _ = self.back.send(used);
                    }
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Why decoding a stored object failed.
#[derive(Debug)]
pub enum DecodeError {
    /// The storage failed while streaming.
    Store(StoreError),
    /// The bytes do not decode (wrong format, truncated, checksum mismatch).
    Corrupt(io::Error),
    /// Writing the decoded bytes failed (local disk).
    Sink(io::Error),
}

/// A `Write` that records whether an error came from the sink, so a full
/// local disk is not reported as a corrupt archive.
struct SinkWriter<W> {
    inner: W,
    failed: Option<io::Error>,
}

impl<W: Write> Write for SinkWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner
            .write(buf)
            .inspect_err(|e| self.failed = Some(io::Error::new(e.kind(), e.to_string())))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts and decompresses `stream` into `sink` on the blocking pool and
/// returns the sink. Success means the whole object was read: with
/// encryption, every piece authenticated, the final one included.
pub async fn decode_into<W>(
    mut stream: ByteStream,
    compression: Compression,
    encryption: &Encryption,
    sink: W,
) -> Result<W, DecodeError>
where
    W: Write + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(BUDGET.channel_depth());
    let reader = ChannelReader {
        rx,
        current: Bytes::new(),
    };
    let worker = if matches!(encryption, Encryption::None) {
        tokio::task::spawn_blocking(move || decompress_stage(reader, compression, sink, None))
    } else {
        // Decryption gets a thread of its own, so it overlaps with the
        // decompressor and the download instead of adding to them.
        let (ptx, prx) = mpsc::channel::<io::Result<Vec<u8>>>(BUDGET.channel_depth());
        let (back, empty) = std::sync::mpsc::channel();
        let encryption = encryption.clone();
        let (vtx, verdict) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let _ = vtx.send(decrypt_stage(reader, &encryption, ptx, empty));
        });
        tokio::task::spawn_blocking(move || {
            let plain = PlainReader {
                rx: prx,
                back,
                current: Vec::new(),
                pos: 0,
            };
            decompress_stage(plain, compression, sink, Some(verdict))
        })
    };
    let mut store_error = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                if tx.send(Ok(chunk)).await.is_err() {
                    break; // the decoder stopped early; its error says why
                }
            }
            Err(e) => {
                let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                store_error = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let decoded = worker.await.map_err(|e| {
        DecodeError::Corrupt(io::Error::other(format!("decoder thread failed: {e}")))
    })?;
    match (store_error, decoded) {
        (Some(e), _) => Err(DecodeError::Store(e)),
        (None, result) => result,
    }
}

/// Decrypts everything `input` holds into `tx`, to the authenticated end of
/// the stream, filling the buffers the consumer hands back on `empty`. On
/// failure it returns why, in the decryptor's words.
fn decrypt_stage(
    input: ChannelReader,
    encryption: &Encryption,
    tx: mpsc::Sender<io::Result<Vec<u8>>>,
    empty: std::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<(), String> {
    let mut decrypted = encryption.decryptor(input);
    let size = BUDGET.chunk() / crate::crypto::SODIUM_CHUNK * crate::crypto::SODIUM_CHUNK;
    loop {
        let mut buf = empty.try_recv().unwrap_or_default();
        buf.resize(size, 0);
        let n = match read_full(&mut decrypted, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                let why = decrypted.failure().unwrap_or_else(|| e.to_string());
                let _ =
                    tx.blocking_send(Err(io::Error::new(io::ErrorKind::InvalidData, why.clone())));
                return Err(why);
            }
        };
        if n == 0 {
            return Ok(());
        }
        buf.truncate(n);
        if tx.blocking_send(Ok(buf)).is_err() {
            return Ok(()); // the decompressor stopped; its error says why
        }
    }
}

/// Decompresses `input` into `sink`. With a decryption stage in front, its
/// verdict wins, and decrypted bytes after the end of the compressed stream
/// are an error (the object holds more than one stream).
fn decompress_stage<W: Write, R: Read + Send>(
    mut input: R,
    compression: Compression,
    sink: W,
    verdict: Option<tokio::sync::oneshot::Receiver<Result<(), String>>>,
) -> Result<W, DecodeError> {
    let mut sink = SinkWriter {
        inner: sink,
        failed: None,
    };
    // Every byte of a decrypted stream was authenticated by the decryption
    // stage (its verdict is checked below): lz4's xxHash32 of the content
    // would only prove it a second time, at the cost of hashing the whole
    // segment.
    let mut framed;
    let source: &mut (dyn Read + Send) = if verdict.is_some() && compression == Compression::Lz4 {
        framed = crate::pipeline::lz4frame::WithoutContentChecksum::new(&mut input);
        &mut framed
    } else {
        &mut input
    };
    let mut result = compression
        .decoder(source)
        .and_then(|mut dec| io::copy(&mut dec, &mut sink))
        .map(|_| ());
    if let Some(verdict) = verdict {
        if result.is_ok() {
            let mut one = [0u8; 1];
            result = match input.read(&mut one) {
                Ok(0) => Ok(()),
                Ok(_) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "decrypted data continues after the end of the compressed stream",
                )),
                Err(e) => Err(e),
            };
        }
        // Let the decryption stage end: it may be blocked sending to us.
        drop(input);
        let verdict = verdict
            .blocking_recv()
            .unwrap_or_else(|_| Err("the decryption stage stopped before the end".into()));
        if let (Err(why), None) = (verdict, &sink.failed) {
            return Err(DecodeError::Corrupt(io::Error::new(
                io::ErrorKind::InvalidData,
                why,
            )));
        }
    }
    match result {
        Ok(()) => Ok(sink.inner),
        Err(e) => match sink.failed.take() {
            Some(sink_err) => Err(DecodeError::Sink(sink_err)),
            None => Err(DecodeError::Corrupt(e)),
        },
    }
}

/// A `Write` that only hashes and counts.
#[derive(Debug, Default)]
pub struct HashWriter {
    hasher: Sha256,
    pub len: u64,
}

impl HashWriter {
    pub fn digest(self) -> (Vec<u8>, u64) {
        (self.hasher.finalize().to_vec(), self.len)
    }
}

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// SHA-256 and length of a local file, computed on the blocking pool.
pub async fn hash_file(path: &Path) -> io::Result<(Vec<u8>, u64)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut f = File::open(&path)?;
        let mut h = HashWriter::default();
        io::copy(&mut f, &mut h)?;
        Ok(h.digest())
    })
    .await
    .map_err(io::Error::other)?
}

/// Converts a decode failure into a store error for callers that only deal
/// in store errors.
pub fn decode_error_to_store(e: DecodeError, store: &str, key: &str) -> StoreError {
    match e {
        DecodeError::Store(e) => e,
        DecodeError::Corrupt(e) => {
            StoreError::new(ErrorKind::Corrupt, "decode", store, key, e.to_string())
        }
        DecodeError::Sink(e) => StoreError::from_io("write", "local", key, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{sodium_key, KeyTransform};

    async fn encrypted_body(dir: &Path, data: &[u8], c: Compression, e: &Encryption) -> Vec<u8> {
        let path = dir.join("segment");
        std::fs::write(&path, data).expect("write");
        let body = FileBody::encrypted(&path, c, e.clone(), data.len() as u64);
        let mut s = body.open();
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
        assert_eq!(
            body.produced(),
            out.len() as u64,
            "produced counts stored bytes"
        );
        out
    }

    async fn decode(
        stored: Vec<u8>,
        c: Compression,
        e: &Encryption,
    ) -> Result<Vec<u8>, DecodeError> {
        let stream: ByteStream = Box::pin(futures::stream::iter(
            stored
                .chunks(100_000)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        ));
        decode_into(stream, c, e, Vec::new()).await
    }

    /// What a push's stages send fits their buffers, and is sent nearly
    /// full: a storage that sizes its parts by the bytes it holds then holds
    /// about the memory it counts.
    #[tokio::test]
    async fn chunks_fit_the_budget_and_go_full() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("segment");
        // Half random bytes, half zeros: every codec keeps part of it.
        let mut state = 7u64;
        let data: Vec<u8> = (0..6_000_000u32)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if i % 8192 < 4096 {
                    state as u8
                } else {
                    0
                }
            })
            .collect();
        std::fs::write(&path, &data).expect("write");
        for c in Compression::ALL {
            let body = FileBody::new(&path, c, data.len() as u64);
            let mut s = body.open();
            let mut sizes = Vec::new();
            while let Some(chunk) = s.next().await {
                sizes.push(chunk.expect("chunk").len());
            }
            let total: usize = sizes.iter().sum();
            assert!(
                sizes.iter().all(|n| *n <= BUDGET.buffer()),
                "{c}: {sizes:?}"
            );
            assert!(
                sizes.len() <= total / (BUDGET.chunk() / 2) + 1,
                "{c}: chunks of half a chunk or more: {sizes:?}"
            );
        }
    }

    /// The staged pipeline (compress | encrypt, decrypt | decompress) keeps
    /// every verdict of the one-thread pipeline: a cut object, a cut at a
    /// piece boundary, and a second stream appended are all refused.
    #[tokio::test]
    async fn staged_encryption_round_trips_and_refuses_damage() {
        let key = sodium_key(b"STAGED_LIBSODIUM_KEY_____", KeyTransform::None).expect("key");
        let e = Encryption::libsodium(key, vec![]);
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for c in Compression::ALL {
            let stored = encrypted_body(dir.path(), &data, c, &e).await;
            let got = decode(stored.clone(), c, &e).await.expect("round trip");
            assert_eq!(got, data, "{c}");
            for cut in [1, 8192 + 17, stored.len() - 24] {
                let cut_at = stored.len().saturating_sub(cut);
                let err = decode(stored[..cut_at].to_vec(), c, &e)
                    .await
                    .expect_err("a cut object must fail");
                assert!(
                    matches!(err, DecodeError::Corrupt(_)),
                    "{c} cut {cut}: {err:?}"
                );
            }
            let twice = [stored.clone(), stored.clone()].concat();
            let err = decode(twice, c, &e).await.expect_err("two streams");
            assert!(matches!(err, DecodeError::Corrupt(_)), "{c}: {err:?}");
        }
    }
}

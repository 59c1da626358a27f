//! Bridges between async storage streams and blocking codecs.
//!
//! Compression and decompression (and, around them, encryption and
//! decryption) are CPU work on `Read`/`Write` adapters, so they run on
//! tokio's blocking pool while the async side moves chunks to or from the
//! storage; a bounded channel between the two overlaps the CPU work with I/O
//! and caps memory at a few chunks. Push compresses, then encrypts; fetch
//! decrypts, then decompresses (WAL-G's order).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::codec::Compression;
use crate::crypto::Encryption;
use crate::error::{ErrorKind, StoreError};
use crate::store::{Body, ByteStream};

/// Chunk size read from local files.
pub const CHUNK_SIZE: usize = 1 << 20;
/// Chunks in flight between the codec thread and the storage.
const CHANNEL_DEPTH: usize = 4;

fn receiver_stream(rx: mpsc::Receiver<Result<Bytes, StoreError>>) -> ByteStream {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
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
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let path = self.path.clone();
        let compression = self.compression;
        let encryption = self.encryption.clone();
        let expected = self.expected_len;
        let produced = self.produced.clone();
        produced.store(0, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let run = |tx: &mpsc::Sender<Result<Bytes, StoreError>>| -> io::Result<()> {
                let mut f = File::open(&path)?;
                let mut enc = compression.encoder()?;
                let mut crypt = encryption.encryptor();
                let mut buf = vec![0u8; CHUNK_SIZE];
                let mut read = 0u64;
                loop {
                    let n = read_full(&mut f, &mut buf)?;
                    if n == 0 {
                        break;
                    }
                    read += n as u64;
                    let out = enc.push(&buf[..n])?;
                    let out = if out.is_empty() {
                        out
                    } else {
                        crypt.push(out)?
                    };
                    if !out.is_empty() {
                        produced.fetch_add(out.len() as u64, Ordering::Relaxed);
                        if tx.blocking_send(Ok(Bytes::from(out))).is_err() {
                            return Ok(()); // the consumer gave up; nothing to report
                        }
                    }
                }
                if read != expected {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file changed size while reading: expected {expected} bytes, read {read}"),
                    ));
                }
                let mut out = crypt.push(enc.finish()?)?;
                out.extend(crypt.finish()?);
                produced.fetch_add(out.len() as u64, Ordering::Relaxed);
                let _ = tx.blocking_send(Ok(Bytes::from(out)));
                Ok(())
            };
            if let Err(e) = run(&tx) {
                let key = path.display().to_string();
                let _ = tx.blocking_send(Err(StoreError::from_io("read", "local", &key, &e)));
            }
        });
        receiver_stream(rx)
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
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
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
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
    let encryption = encryption.clone();
    let worker = tokio::task::spawn_blocking(move || {
        let reader = ChannelReader {
            rx,
            current: Bytes::new(),
        };
        let mut sink = SinkWriter {
            inner: sink,
            failed: None,
        };
        let mut decrypted = encryption.decryptor(reader);
        let result = compression
            .decoder(&mut decrypted)
            .and_then(|mut dec| io::copy(&mut dec, &mut sink))
            // The decompressor may stop before the end of the encrypted
            // stream (an empty final piece): read it to the end, so a
            // truncated or extended object is never taken as complete.
            .and_then(|_| decrypted.finish());
        match result {
            Ok(_) => Ok(sink.inner),
            Err(e) => match (sink.failed.take(), decrypted.failure()) {
                (Some(sink_err), _) => Err(DecodeError::Sink(sink_err)),
                // Say why decryption failed, not how the decompressor
                // reworded it.
                (None, Some(why)) => Err(DecodeError::Corrupt(io::Error::new(
                    io::ErrorKind::InvalidData,
                    why,
                ))),
                (None, None) => Err(DecodeError::Corrupt(e)),
            },
        }
    });
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

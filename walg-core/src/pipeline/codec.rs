//! Streaming compression in WAL-G's formats: lz4 frames (`.lz4`, the
//! default), zstd frames (`.zst`), brotli (`.br`) and none (bare name).
//!
//! The encoders work chunk by chunk so a push never holds a whole segment;
//! the decoders are `Read` adapters so they can run on a blocking thread fed
//! from a storage stream. Frames are the standard ones: the `lz4` and `zstd`
//! command-line tools read what walg writes and the reverse.
//!
//! Encryption is not here; it would wrap the compressed stream.

use std::fmt;
use std::io::{self, Read, Write};

pub use crate::wal::layout::{Compression, UnknownCompression};

/// The codecs of each method; the method itself (names, extensions) is
/// the bucket layout's vocabulary.
impl Compression {
    /// A streaming encoder for this method.
    pub fn encoder(self) -> io::Result<Encoder> {
        let inner =
            match self {
                Compression::None => EncoderInner::None(Vec::new()),
                Compression::Lz4 => {
                    EncoderInner::Lz4(crate::pipeline::lz4frame::Lz4FrameEncoder::default())
                }
                Compression::Zstd => {
                    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3)?;
                    enc.include_checksum(true)?;
                    EncoderInner::Zstd(enc)
                }
                // Quality 4 with a 1 MiB window (lgwin 20): brotli's ring
                // buffer is twice the window, and a 4 MiB window (lgwin 22)
                // made it 8 MiB for no better ratio on WAL (a pgbench
                // segment: 3,138,210 bytes with lgwin 20, 3,140,149 with 22)
                // and a slower encoder.
                Compression::Brotli => EncoderInner::Brotli(Box::new(
                    brotli::CompressorWriter::new(Vec::new(), 64 * 1024, 4, 20),
                )),
            };
        Ok(Encoder { inner })
    }

    /// Wraps `input` (compressed bytes) in a reader of the original bytes.
    pub fn decoder<'a, R: Read + Send + 'a>(
        self,
        input: R,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            Compression::None => Box::new(input),
            Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(input)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
            Compression::Brotli => Box::new(brotli::Decompressor::new(input, 64 * 1024)),
        })
    }
}

enum EncoderInner {
    None(Vec<u8>),
    Lz4(crate::pipeline::lz4frame::Lz4FrameEncoder),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
}

/// Compresses a stream chunk by chunk: `push` input, take what is ready.
pub struct Encoder {
    inner: EncoderInner,
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Encoder")
    }
}

impl Encoder {
    /// Compresses `input` and returns the compressed bytes ready so far
    /// (possibly empty: encoders buffer up to one block).
    pub fn push(&mut self, input: &[u8]) -> io::Result<Vec<u8>> {
        let ready = match &mut self.inner {
            EncoderInner::None(buf) => {
                buf.extend_from_slice(input);
                buf
            }
            EncoderInner::Lz4(e) => return Ok(e.push(input)),
            EncoderInner::Zstd(e) => {
                e.write_all(input)?;
                e.get_mut()
            }
            EncoderInner::Brotli(e) => {
                // A flush per input chunk ends a metablock: without it the
                // encoder gathers commands for up to 16 MiB of input (16 MiB
                // of them for a 16 MiB segment) before it emits anything.
                e.write_all(input)?;
                e.flush()?;
                e.get_mut()
            }
        };
        Ok(std::mem::take(ready))
    }

    /// Compresses `input` and appends the compressed bytes ready so far to
    /// `out`, so a caller can recycle its buffers.
    pub fn push_into(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        match &mut self.inner {
            EncoderInner::None(_) => out.extend_from_slice(input),
            EncoderInner::Lz4(e) => e.push_into(input, out),
            // The encoder writes to `out` itself (no copy through its own
            // vector): `out` stands in for that vector while it works.
            EncoderInner::Zstd(e) => {
                std::mem::swap(e.get_mut(), out);
                let written = e.write_all(input);
                std::mem::swap(e.get_mut(), out);
                written?;
            }
            EncoderInner::Brotli(e) => {
                std::mem::swap(e.get_mut(), out);
                let written = e.write_all(input).and_then(|()| e.flush());
                std::mem::swap(e.get_mut(), out);
                written?;
            }
        }
        Ok(())
    }

    /// Ends the stream and returns the remaining compressed bytes.
    pub fn finish(self) -> io::Result<Vec<u8>> {
        match self.inner {
            EncoderInner::None(buf) => Ok(buf),
            EncoderInner::Lz4(e) => Ok(e.finish()),
            EncoderInner::Zstd(e) => e.finish(),
            EncoderInner::Brotli(mut e) => {
                e.flush()?;
                Ok(e.into_inner())
            }
        }
    }
}

/// Compresses a whole buffer; for tests and small files.
pub fn compress(c: Compression, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = c.encoder()?;
    let mut out = enc.push(data)?;
    out.extend(enc.finish()?);
    Ok(out)
}

/// Decompresses a whole buffer; for tests and small files.
pub fn decompress(c: Compression, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    c.decoder(data)?.read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(c: Compression, data: &[u8]) {
        // Chunked compression must give a stream any decoder reads back.
        let mut enc = c.encoder().expect("encoder");
        let mut out = Vec::new();
        for chunk in data.chunks(100_000) {
            out.extend(enc.push(chunk).expect("push"));
        }
        out.extend(enc.finish().expect("finish"));
        assert_eq!(
            decompress(c, &out).expect("decompress"),
            data,
            "{c} round trip"
        );
        assert_eq!(
            decompress(c, &compress(c, data).expect("compress")).expect("decompress"),
            data
        );
    }

    #[test]
    fn round_trips_every_method() {
        let seg = crate::wal::page::synthetic_segment(
            &crate::wal::Segment {
                timeline: 1,
                log: 0,
                seg: 1,
            },
            1 << 20,
            7,
            3,
        );
        for c in Compression::ALL {
            check(c, &seg);
            check(c, b"");
            check(c, b"x");
        }
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let mut data = compress(Compression::Lz4, &[7u8; 300_000]).expect("compress");
        let mid = data.len() / 2;
        data[mid] ^= 0xFF;
        data.truncate(data.len() - 3);
        assert!(decompress(Compression::Lz4, &data).is_err());
        assert!(decompress(Compression::Zstd, b"not zstd").is_err());
    }

    #[test]
    fn settings_and_extensions() {
        assert_eq!(Compression::from_setting("LZ4"), Ok(Compression::Lz4));
        assert_eq!(Compression::from_setting("zstd"), Ok(Compression::Zstd));
        assert_eq!(Compression::from_setting("brotli"), Ok(Compression::Brotli));
        assert!(Compression::from_setting("lzma").is_err());
        for c in Compression::ALL {
            if let Some(ext) = c.extension() {
                assert_eq!(Compression::from_extension(ext), Some(c));
            }
        }
    }
}

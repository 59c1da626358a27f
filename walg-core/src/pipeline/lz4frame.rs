//! A standard lz4 frame encoder that compresses independent blocks on two
//! threads.
//!
//! The lz4 frame format (the one the `lz4` tool and WAL-G read) allows
//! independent blocks; each 256 KiB block can then be compressed on its own,
//! and only the content checksum (xxHash32 of the whole input) must be
//! computed in order. Per input chunk, the blocks are split between two
//! threads (the calling one and one helper per chunk) and the calling thread
//! hashes, so compressing a segment takes
//! about half the wall time of a single-threaded encoder and wal-push is
//! bound by the disk rather than by lz4.
//!
//! What this module does not do: decode (lz4_flex's frame decoder reads
//! these frames), linked blocks or dictionaries. It does, for streams that
//! were already authenticated by their encryption, take the content
//! checksum out of any lz4 frame before the decoder sees it
//! ([`WithoutContentChecksum`]).

use std::hash::Hasher;
use std::thread;

/// Block size; matches the `BD` byte below.
pub const BLOCK_SIZE: usize = 256 * 1024;
const MAGIC: u32 = 0x184D_2204;
/// FLG: version 01, independent blocks, no block checksums, no content
/// size, content checksum, no dictionary.
const FLG: u8 = 0b0110_0100;
/// BD: maximum block size 256 KiB (code 5).
const BD: u8 = 5 << 4;
/// Bit set in a block's size when the block is stored uncompressed.
const UNCOMPRESSED: u32 = 0x8000_0000;

/// Streaming lz4 frame encoder.
pub struct Lz4FrameEncoder {
    pending: Vec<u8>,
    hasher: twox_hash::XxHash32,
    header_written: bool,
    /// The helper thread's output, kept from chunk to chunk so its pages
    /// are touched once, not once per chunk.
    helper_out: Vec<u8>,
}

impl std::fmt::Debug for Lz4FrameEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lz4FrameEncoder")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Default for Lz4FrameEncoder {
    fn default() -> Self {
        Lz4FrameEncoder {
            pending: Vec::new(),
            hasher: twox_hash::XxHash32::with_seed(0),
            header_written: false,
            helper_out: Vec::new(),
        }
    }
}

fn header() -> [u8; 7] {
    let mut h = [0u8; 7];
    h[..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4] = FLG;
    h[5] = BD;
    h[6] = (twox_hash::XxHash32::oneshot(0, &[FLG, BD]) >> 8) as u8;
    h
}

fn encode_block(block: &[u8], out: &mut Vec<u8>) {
    // Compress straight into `out` behind room for the size word: no
    // temporary vector per block, no second copy.
    let at = out.len();
    let bound = lz4_flex::block::get_maximum_output_size(block.len());
    out.resize(at + 4 + bound, 0);
    match lz4_flex::block::compress_into(block, &mut out[at + 4..]) {
        Ok(n) if n < block.len() => {
            out[at..at + 4].copy_from_slice(&(n as u32).to_le_bytes());
            out.truncate(at + 4 + n);
        }
        _ => {
            // Incompressible: stored as is, as the format allows.
            out.truncate(at);
            out.extend_from_slice(&(block.len() as u32 | UNCOMPRESSED).to_le_bytes());
            out.extend_from_slice(block);
        }
    }
}

fn encode_blocks(data: &[u8], out: &mut Vec<u8>) {
    for block in data.chunks(BLOCK_SIZE) {
        encode_block(block, out);
    }
}

impl Lz4FrameEncoder {
    /// Compresses `input`; returns the frame bytes ready so far.
    pub fn push(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        self.push_into(input, &mut out);
        out
    }

    /// Compresses `input` and appends the frame bytes ready so far to `out`.
    pub fn push_into(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if !self.header_written {
            out.extend_from_slice(&header());
            self.header_written = true;
        }
        if self.pending.is_empty() {
            // The common case (1 MiB reads): whole blocks straight from the
            // caller's buffer, only the tail kept.
            let full = input.len() / BLOCK_SIZE * BLOCK_SIZE;
            self.encode_full_blocks(&input[..full], out);
            self.pending.extend_from_slice(&input[full..]);
            return;
        }
        self.pending.extend_from_slice(input);
        let full = self.pending.len() / BLOCK_SIZE * BLOCK_SIZE;
        let pending = std::mem::take(&mut self.pending);
        self.encode_full_blocks(&pending[..full], out);
        self.pending = pending;
        self.pending.drain(..full);
    }

    /// Encodes whole blocks: the second half on one helper thread, the
    /// first half and the checksum on this one (one thread started per
    /// call, not two).
    fn encode_full_blocks(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let blocks = data.len() / BLOCK_SIZE;
        if blocks == 0 {
            return;
        }
        let hasher = &mut self.hasher;
        if blocks >= 2 {
            let split = blocks / 2 * BLOCK_SIZE;
            let (a, b) = data.split_at(split);
            let mut pb = std::mem::take(&mut self.helper_out);
            pb.clear();
            let joined = thread::scope(|s| {
                let tb = s.spawn(move || {
                    encode_blocks(b, &mut pb);
                    pb
                });
                encode_blocks(a, out);
                hasher.write(data);
                tb.join()
            });
            // A panic in lz4_flex would be a bug there; fall back to doing
            // the work on this thread rather than lose the segment.
            match joined {
                Ok(pb) => {
                    out.extend_from_slice(&pb);
                    self.helper_out = pb;
                }
                Err(_) => encode_blocks(b, out),
            }
        } else {
            hasher.write(data);
            encode_blocks(data, out);
        }
    }

    /// Ends the frame: the last partial block, the end mark and the checksum.
    pub fn finish(mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.header_written {
            out.extend_from_slice(&header());
        }
        if !self.pending.is_empty() {
            self.hasher.write(&self.pending);
            encode_block(&self.pending, &mut out);
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.hasher.finish_32().to_le_bytes());
        out
    }
}

/// FLG bits the reader below looks at.
const FLG_BLOCK_CHECKSUM: u8 = 0x10;
const FLG_CONTENT_SIZE: u8 = 0x08;
const FLG_CONTENT_CHECKSUM: u8 = 0x04;
const FLG_DICT_ID: u8 = 0x01;
const SKIPPABLE: std::ops::RangeInclusive<u32> = 0x184D_2A50..=0x184D_2A5F;

/// Passes lz4 frames through with their content checksum taken out (the
/// FLG bit cleared, the header checksum recomputed, the 4 bytes after the
/// end mark dropped), so the decoder does not hash every decompressed byte.
///
/// Only for a stream whose every byte was already authenticated: with
/// libsodium every 8 KiB piece carries a Poly1305 tag chained to the end of
/// the stream, which proves the bytes are the writer's far more strongly
/// than xxHash32 does, and computing xxHash32 over 16 MiB was the longest
/// step left in an encrypted `wal-fetch`. Everything else (block checksums,
/// content size, linked blocks, skippable and concatenated frames) passes
/// through to the decoder unchanged. Stricter than lz4_flex's decoder: a
/// frame that ends before its end mark is an error, and so is a header
/// whose own checksum is wrong.
#[derive(Debug)]
pub struct WithoutContentChecksum<R> {
    inner: R,
    state: Part,
    /// Rewritten header bytes waiting to be read, from `pos`.
    head: Vec<u8>,
    pos: usize,
}

#[derive(Debug, Clone, Copy)]
enum Part {
    /// Before a frame's magic number (or at the end of the stream).
    Magic,
    /// Before a block's size word.
    Block(Flags),
    /// Inside a block (`in_frame`: its frame's flags) or a skippable frame
    /// (`None`): `left` bytes pass through.
    Data { left: u64, in_frame: Option<Flags> },
    /// Not an lz4 frame: everything passes through, the decoder says why.
    Foreign,
}

/// The FLG bits of the current frame that change what follows a block.
#[derive(Debug, Clone, Copy)]
struct Flags {
    block_checksum: bool,
    content_checksum: bool,
}

fn truncated(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("lz4 frame truncated: the stream ends {what}"),
    )
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` if the input ends first
/// with nothing read, an error if it ends part way.
fn read_all<R: std::io::Read>(r: &mut R, buf: &mut [u8], what: &str) -> std::io::Result<bool> {
    let n = crate::crypto::read_full(r, buf)?;
    match n {
        0 if !buf.is_empty() => Ok(false),
        n if n == buf.len() => Ok(true),
        _ => Err(truncated(what)),
    }
}

impl<R: std::io::Read> WithoutContentChecksum<R> {
    pub fn new(inner: R) -> Self {
        WithoutContentChecksum {
            inner,
            state: Part::Magic,
            head: Vec::new(),
            pos: 0,
        }
    }

    /// Reads the next frame's header into `head`, rewritten.
    fn frame_header(&mut self) -> std::io::Result<bool> {
        let mut magic = [0u8; 4];
        if !read_all(&mut self.inner, &mut magic, "inside a frame's magic number")? {
            return Ok(false);
        }
        self.head.clear();
        self.pos = 0;
        self.head.extend_from_slice(&magic);
        let number = u32::from_le_bytes(magic);
        if SKIPPABLE.contains(&number) {
            let mut size = [0u8; 4];
            if !read_all(&mut self.inner, &mut size, "inside a skippable frame")? {
                return Err(truncated("inside a skippable frame"));
            }
            self.head.extend_from_slice(&size);
            self.state = Part::Data {
                left: u64::from(u32::from_le_bytes(size)),
                in_frame: None,
            };
            return Ok(true);
        }
        if number != MAGIC {
            self.state = Part::Foreign;
            return Ok(true);
        }
        let mut fb = [0u8; 2];
        if !read_all(&mut self.inner, &mut fb, "inside a frame header")? {
            return Err(truncated("inside a frame header"));
        }
        let flg = fb[0];
        let extra = if flg & FLG_CONTENT_SIZE != 0 { 8 } else { 0 }
            + if flg & FLG_DICT_ID != 0 { 4 } else { 0 };
        let mut rest = [0u8; 13];
        let rest = &mut rest[..extra + 1];
        if !read_all(&mut self.inner, rest, "inside a frame header")? {
            return Err(truncated("inside a frame header"));
        }
        let mut descriptor = Vec::with_capacity(2 + extra);
        descriptor.extend_from_slice(&fb);
        descriptor.extend_from_slice(&rest[..extra]);
        let hc = |d: &[u8]| (twox_hash::XxHash32::oneshot(0, d) >> 8) as u8;
        if hc(&descriptor) != rest[extra] {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "lz4 frame header checksum mismatch",
            ));
        }
        descriptor[0] = flg & !FLG_CONTENT_CHECKSUM;
        self.head.extend_from_slice(&descriptor);
        self.head.push(hc(&descriptor));
        self.state = Part::Block(Flags {
            block_checksum: flg & FLG_BLOCK_CHECKSUM != 0,
            content_checksum: flg & FLG_CONTENT_CHECKSUM != 0,
        });
        Ok(true)
    }
}

impl<R: std::io::Read> std::io::Read for WithoutContentChecksum<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos < self.head.len() {
                let n = buf.len().min(self.head.len() - self.pos);
                buf[..n].copy_from_slice(&self.head[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            match self.state {
                Part::Foreign => return self.inner.read(buf),
                Part::Magic => {
                    if !self.frame_header()? {
                        return Ok(0);
                    }
                }
                Part::Block(flags) => {
                    let mut word = [0u8; 4];
                    if !read_all(&mut self.inner, &mut word, "before its end mark")? {
                        return Err(truncated("before its end mark"));
                    }
                    self.head.clear();
                    self.pos = 0;
                    self.head.extend_from_slice(&word);
                    let size = u32::from_le_bytes(word) & !UNCOMPRESSED;
                    if u32::from_le_bytes(word) == 0 {
                        if flags.content_checksum {
                            let mut sum = [0u8; 4];
                            if !read_all(&mut self.inner, &mut sum, "inside its checksum")? {
                                return Err(truncated("inside its checksum"));
                            }
                        }
                        self.state = Part::Magic;
                    } else {
                        self.state = Part::Data {
                            left: u64::from(size) + if flags.block_checksum { 4 } else { 0 },
                            in_frame: Some(flags),
                        };
                    }
                }
                Part::Data { left: 0, in_frame } => {
                    self.state = in_frame.map_or(Part::Magic, Part::Block);
                }
                Part::Data { left, in_frame } => {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(truncated("inside a block"));
                    }
                    self.state = Part::Data {
                        left: left - n as u64,
                        in_frame,
                    };
                    return Ok(n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn check(data: &[u8], chunk: usize) {
        let mut enc = Lz4FrameEncoder::default();
        let mut frame = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            frame.extend(enc.push(c));
        }
        frame.extend(enc.finish());
        let mut back = Vec::new();
        lz4_flex::frame::FrameDecoder::new(&frame[..])
            .read_to_end(&mut back)
            .expect("a valid lz4 frame");
        assert_eq!(
            back,
            data,
            "round trip of {} bytes in chunks of {chunk}",
            data.len()
        );
    }

    #[test]
    fn frames_decode_with_the_reference_decoder() {
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
        let mut random = vec![0u8; 700_000];
        let mut x = 88172645463325252u64;
        for b in random.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        for chunk in [1, 1000, BLOCK_SIZE, 1 << 20, 3 << 20] {
            check(&seg, chunk);
            check(&random, chunk);
        }
        check(b"", 10);
        check(b"x", 10);
    }

    #[test]
    fn a_corrupted_frame_fails_its_checksum() {
        let data = vec![42u8; 600_000];
        let mut enc = Lz4FrameEncoder::default();
        let mut frame = enc.push(&data);
        frame.extend(enc.finish());
        let n = frame.len();
        frame[n - 1] ^= 1;
        let mut back = Vec::new();
        assert!(lz4_flex::frame::FrameDecoder::new(&frame[..])
            .read_to_end(&mut back)
            .is_err());
    }

    fn reference_frame(data: &[u8], info: lz4_flex::frame::FrameInfo) -> Vec<u8> {
        use std::io::Write;
        let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(data).expect("encode");
        enc.finish().expect("finish")
    }

    fn through(frame: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut back = Vec::new();
        let mut dec = lz4_flex::frame::FrameDecoder::new(WithoutContentChecksum::new(
            std::io::BufReader::with_capacity(7, frame),
        ));
        dec.read_to_end(&mut back)?;
        Ok(back)
    }

    /// Every kind of frame decodes to the same bytes with the content
    /// checksum taken out, its damage still shows where the decoder would
    /// see it, and a frame cut before its end mark is refused.
    #[test]
    fn frames_without_their_content_checksum_decode_the_same() {
        use lz4_flex::frame::{BlockMode, BlockSize, FrameInfo};
        let data: Vec<u8> = (0..700_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
            .collect();
        let mut ours = Lz4FrameEncoder::default();
        let mut frame = ours.push(&data);
        frame.extend(ours.finish());
        let mut frames = vec![frame];
        for (mode, size, block_sum, content_sum, content_size) in [
            (BlockMode::Linked, BlockSize::Max64KB, false, true, false),
            (BlockMode::Independent, BlockSize::Max4MB, true, true, true),
            (BlockMode::Linked, BlockSize::Max256KB, true, false, true),
        ] {
            let mut info = FrameInfo::new()
                .block_mode(mode)
                .block_size(size)
                .block_checksums(block_sum)
                .content_checksum(content_sum);
            if content_size {
                info = info.content_size(Some(data.len() as u64));
            }
            frames.push(reference_frame(&data, info));
        }
        for frame in &frames {
            assert!(through(frame).expect("decodes") == data);
            // Cut anywhere before the end mark: refused, never short.
            for cut in [3, 6, 100, frame.len() / 2, frame.len() - 9] {
                assert!(through(&frame[..cut]).is_err(), "cut at {cut}");
            }
            // A damaged header is refused.
            let mut bad = frame.clone();
            bad[5] ^= 0x40;
            assert!(through(&bad).is_err());
        }
        // Frames one after the other, with and without a skippable frame
        // between: the same bytes as the decoder alone gives.
        let mut skippable = 0x184D_2A51u32.to_le_bytes().to_vec();
        skippable.extend_from_slice(&3u32.to_le_bytes());
        skippable.extend_from_slice(b"abc");
        for between in [&[][..], &skippable[..]] {
            let mut two = frames[0].clone();
            two.extend_from_slice(between);
            two.extend_from_slice(&frames[1]);
            let mut alone = Vec::new();
            let direct = lz4_flex::frame::FrameDecoder::new(&two[..]).read_to_end(&mut alone);
            let ours = through(&two);
            assert_eq!(direct.is_ok(), ours.is_ok(), "{direct:?}");
            if let Ok(ours) = ours {
                assert!(
                    ours == alone,
                    "{} bytes, the decoder alone {}",
                    ours.len(),
                    alone.len()
                );
            }
        }
        // The content checksum is what is left out: a wrong one stops the
        // decoder alone, not the decoder behind this reader.
        let mut wrong_sum = frames[0].clone();
        let n = wrong_sum.len();
        wrong_sum[n - 1] ^= 1;
        let mut sink = Vec::new();
        assert!(lz4_flex::frame::FrameDecoder::new(&wrong_sum[..])
            .read_to_end(&mut sink)
            .is_err());
        assert!(through(&wrong_sum).expect("checksum not read") == data);
        // Not lz4 at all: passed through for the decoder to refuse.
        assert!(through(b"not an lz4 frame").is_err());
        assert_eq!(through(b"").expect("empty"), Vec::<u8>::new());
    }
}

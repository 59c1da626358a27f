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
//! these frames), linked blocks or dictionaries.

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
        if !self.header_written {
            out.extend_from_slice(&header());
            self.header_written = true;
        }
        if self.pending.is_empty() {
            // The common case (1 MiB reads): whole blocks straight from the
            // caller's buffer, only the tail kept.
            let full = input.len() / BLOCK_SIZE * BLOCK_SIZE;
            self.encode_full_blocks(&input[..full], &mut out);
            self.pending.extend_from_slice(&input[full..]);
            return out;
        }
        self.pending.extend_from_slice(input);
        let full = self.pending.len() / BLOCK_SIZE * BLOCK_SIZE;
        let pending = std::mem::take(&mut self.pending);
        self.encode_full_blocks(&pending[..full], &mut out);
        self.pending = pending;
        self.pending.drain(..full);
        out
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
            let pb = thread::scope(|s| {
                let tb = s.spawn(|| {
                    let mut pb = Vec::with_capacity(b.len() / 2);
                    encode_blocks(b, &mut pb);
                    pb
                });
                encode_blocks(a, out);
                hasher.write(data);
                tb.join()
            });
            // A panic in lz4_flex would be a bug there; fall back to doing
            // the work on this thread rather than lose the segment.
            match pb {
                Ok(pb) => out.extend_from_slice(&pb),
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
        let seg = crate::page::synthetic_segment(
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
}

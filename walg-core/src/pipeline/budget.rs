//! One memory budget for one transfer (a push or a fetch of one file), from
//! which every buffer size on the data path is derived: the pipeline's
//! chunks and channel depths, and the storage's upload plan (how large an
//! object goes in one request, how large the parts of a bigger one are).
//!
//! Sizing each stage on its own is how a push of a 256 MiB segment to S3
//! reached 88 MiB: four compressed chunks in each channel, plus opendal's
//! writer holding two 16 MiB parts, plus brotli's own 8 MiB ring buffer and
//! a metablock of commands, each reasonable alone. Here the bytes of WAL
//! data a transfer may hold are one number, split once:
//!
//! - the pipeline: one chunk being read, one being compressed or
//!   encrypted, [`MemoryBudget::channel_depth`] chunks waiting between each
//!   pair of stages (two channels with encryption, one without);
//! - the storage: what is left. An object up to
//!   [`UploadPlan::single_request_max`] is held whole and sent in one
//!   request (one round trip: a 16 MiB segment never pays for a multipart
//!   upload); a larger one goes in parts, of which the service's writer
//!   holds [`PartRules::parts_held`] at once plus [`PartRules::fixed`].
//!
//! Not counted here, because no size chosen here changes them: the binary
//! and the runtime (about 12 MiB of a release build's resident set), a
//! codec's own state (zstd's window, brotli's ring buffer: both bounded by
//! the settings in [`codec`](crate::pipeline::codec)), and the HTTP
//! client's buffers.
//!
//! What this module does not know: which service has which rules (each
//! storage backend states its own [`PartRules`]), or settings.

/// The largest object a transfer moves: a 1 GiB segment (the largest WAL
/// segment size) with room for what compression and encryption may add to
/// incompressible input (lz4 stores such blocks with a 4-byte header,
/// libsodium adds 17 bytes per 8 KiB piece).
pub const MAX_OBJECT: u64 = (1 << 30) + (1 << 30) / 64;

const MIB: usize = 1 << 20;

/// The object of a default-sized (16 MiB) segment that does not compress,
/// with the same room for framing as [`MAX_OBJECT`].
const SEGMENT_OBJECT: usize = 16 * MIB + 16 * MIB / 64;

/// The bytes of WAL data one transfer may hold in buffers at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    bytes: usize,
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget::DEFAULT
    }
}

/// What a storage service asks of a streamed upload in parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartRules {
    /// The smallest part the service takes (all but the last): 5 MiB on S3.
    pub min_part: usize,
    /// The largest part it takes.
    pub max_part: usize,
    /// The most parts one object may have: 10,000 on S3.
    pub max_parts: u64,
    /// Parts are a multiple of this (1 when the service does not care).
    pub align: usize,
    /// Parts the service's writer holds at once: the one being sent and the
    /// next one being filled.
    pub parts_held: usize,
    /// Bytes the service's writer holds besides its parts (GCS: opendal's
    /// resumable upload sends fixed 8 MiB pieces and keeps one pending).
    pub fixed: usize,
}

/// How a storage uploads one object within the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadPlan {
    /// An object of at most this many bytes is held whole and sent in one
    /// request.
    pub single_request_max: usize,
    /// A larger object goes in parts of this size.
    pub part: usize,
}

impl MemoryBudget {
    /// The pipeline with encryption plus a 16 MiB segment that does not
    /// compress (with framing), about 22 MiB: a default-sized segment always
    /// goes in one request, and larger ones in parts of about 8 MiB.
    pub const DEFAULT: MemoryBudget =
        MemoryBudget::new(SEGMENT_OBJECT + MemoryBudget::pipeline_bytes(2));

    /// The least budget: the pipeline with encryption and two 5 MiB parts
    /// (S3's smallest), so that every plan fits.
    pub const FLOOR: usize = 16 * MIB;

    /// A budget of `bytes`, raised to [`MemoryBudget::FLOOR`].
    pub const fn new(bytes: usize) -> Self {
        MemoryBudget {
            bytes: if bytes < Self::FLOOR {
                Self::FLOOR
            } else {
                bytes
            },
        }
    }

    /// The budget in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Size of the pieces moved between stages: reads of the local file,
    /// plaintext buffers of a fetch, the fetch's write buffer. 512 KiB: two
    /// 256 KiB lz4 blocks to compress on two threads, and few enough bytes
    /// in the buffers a 16 MiB push keeps alive (1 MiB pieces cost it
    /// 3 MiB of peak RSS).
    pub const fn chunk(&self) -> usize {
        Self::CHUNK
    }

    const CHUNK: usize = MIB / 2;

    /// Capacity of a buffer that carries a chunk out of a stage: the chunk,
    /// and room for what a codec works in beyond what it returns (lz4
    /// writes a block's worst case, 256 KiB and a 1/255th, before it
    /// knows the block's size) and for framing (libsodium's 17 bytes per
    /// 8 KiB).
    pub const fn buffer(&self) -> usize {
        Self::BUFFER
    }

    const BUFFER: usize = Self::CHUNK + 272 * 1024;

    /// Chunks waiting in each channel between two stages: enough for each
    /// stage to find work when it is ready, no more (a stage that waits
    /// longer waits on the slowest one, which a deeper queue does not
    /// speed up).
    pub const fn channel_depth(&self) -> usize {
        2
    }

    /// What the pipeline holds at most with `channels` channels between its
    /// stages: one buffer being read, one being worked on per stage, and
    /// full channels. (The same for every budget: the chunk and the depth
    /// are fixed, the storage's share is what varies.)
    pub const fn pipeline_bytes(channels: usize) -> usize {
        Self::BUFFER * (1 + channels + channels * 2)
    }

    /// What is left for the storage: the budget less the pipeline with
    /// encryption (two channels).
    pub fn storage_bytes(&self) -> usize {
        self.bytes.saturating_sub(Self::pipeline_bytes(2))
    }

    /// How a storage with `rules` uploads within this budget: objects that
    /// fit the storage's share go in one request, larger ones in the
    /// largest parts the share holds (`parts_held` of them plus `fixed`),
    /// within the service's limits. Every part plan reaches
    /// [`MAX_OBJECT`] within `max_parts`.
    pub fn upload(&self, rules: &PartRules) -> UploadPlan {
        let share = self.storage_bytes();
        let align = rules.align.max(1);
        let per_part = share.saturating_sub(rules.fixed) / rules.parts_held.max(1);
        // The fewest bytes a part may have for MAX_OBJECT to fit.
        let for_count = MAX_OBJECT.div_ceil(rules.max_parts.max(1)) as usize;
        let floor = rules.min_part.max(for_count).max(align).div_ceil(align) * align;
        let part = (per_part.min(rules.max_part) / align * align).max(floor);
        UploadPlan {
            single_request_max: share.max(part),
            part,
        }
    }
}

/// Makes freed WAL buffers go back to the operating system at once.
///
/// The budget counts what is alive; glibc's allocator keeps what was freed.
/// Its threshold for serving a large allocation from its own mapping grows
/// to the largest block ever freed (up to 32 MiB), so after the first
/// chunks and objects are freed, later ones come from the heaps of the
/// threads that allocated them and stay there: sixteen 16 MiB segments
/// uploaded ahead by one push peaked at 132 to 145 MiB though about 40 MiB
/// was alive at once. Fixing the threshold at 512 KiB, below the
/// pipeline's chunk buffers ([`MemoryBudget::buffer`]), keeps every chunk,
/// part and object in a mapping of its own that is returned when it is
/// freed: the same push peaked at 52 MiB. A fixed 4 MiB threshold did not
/// help (the chunks are what piles up); 128 KiB (glibc's starting value)
/// helped as much but also mapped the HTTP client's smaller buffers, and a
/// fetch over S3 was measurably slower. The pipeline recycles its chunk
/// buffers, so the mappings are made a few times per transfer.
///
/// For a binary to call once at start (it sets a process-wide policy); does
/// nothing where the C library is not glibc. walg calls it for `wal-push`
/// only: a `wal-fetch` streams one file, keeps its few buffers alive, and
/// measured about 6% slower with the fixed threshold (page faults of fresh
/// mappings), with no peak to cut.
// The one exception to the workspace's `unsafe_code = "deny"`: no safe
// wrapper of `mallopt` exists (rustix has none).
#[allow(unsafe_code)]
pub fn return_freed_buffers_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator parameter; it is called
        // before the runtime's threads start.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 512 * 1024);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S3: PartRules = PartRules {
        min_part: 5 * MIB,
        max_part: 5 << 30,
        max_parts: 10_000,
        align: 1,
        parts_held: 2,
        fixed: 0,
    };

    fn check(budget: MemoryBudget, rules: PartRules, single: usize, part: usize) {
        let plan = budget.upload(&rules);
        assert_eq!(
            (plan.single_request_max, plan.part),
            (single, part),
            "{budget:?} {rules:?}"
        );
        assert!(plan.part >= rules.min_part && plan.part <= rules.max_part);
        assert_eq!(plan.part % rules.align.max(1), 0);
        assert!(plan.part as u64 * rules.max_parts >= MAX_OBJECT);
        let align = rules.align.max(1);
        let least = (rules.min_part)
            .max(MAX_OBJECT.div_ceil(rules.max_parts) as usize)
            .div_ceil(align)
            * align;
        assert!(
            plan.part * rules.parts_held + rules.fixed <= budget.storage_bytes()
                || plan.part == least,
            "the parts held fit the storage's share, or are the smallest allowed"
        );
    }

    #[test]
    fn plans_fit_the_budget_and_the_service() {
        let d = MemoryBudget::DEFAULT;
        // 7 buffers of pipeline, and a 16 MiB segment that does not
        // compress goes in one request.
        assert_eq!(MemoryBudget::pipeline_bytes(2), 7 * d.buffer());
        let share = d.storage_bytes();
        assert_eq!(share, SEGMENT_OBJECT);
        check(d, S3, share, share / 2);
        // GCS: an 8 MiB piece held besides the parts, 256 KiB alignment;
        // what is left is less than two of its smallest chunks.
        let gcs = PartRules {
            align: 256 << 10,
            fixed: 8 * MIB,
            ..S3
        };
        check(d, gcs, share, 5 * MIB);
        // A service with few parts gets parts that reach MAX_OBJECT, even
        // beyond the budget's share.
        let few = PartRules {
            min_part: 0,
            max_parts: 100,
            ..S3
        };
        let least = MAX_OBJECT.div_ceil(100) as usize;
        let small = MemoryBudget::new(0);
        assert!(small.storage_bytes() / 2 < least);
        check(small, few, small.storage_bytes(), least);
        // A bigger budget means bigger parts, never beyond the service's.
        let capped = PartRules {
            max_part: 8 * MIB,
            ..S3
        };
        let big = MemoryBudget::new(256 * MIB);
        check(big, capped, big.storage_bytes(), 8 * MIB);
    }

    #[test]
    fn the_floor_holds_the_smallest_plan() {
        let b = MemoryBudget::new(1);
        assert_eq!(b.bytes(), MemoryBudget::FLOOR);
        assert!(MemoryBudget::pipeline_bytes(2) + 2 * S3.min_part <= b.bytes());
        let share = b.storage_bytes();
        check(b, S3, share, share / 2);
    }
}

//! End-to-end failover scenario (being written).

use std::path::Path;

use anyhow::Result;

use crate::emulators::Emulators;

/// Runs the failover scenario against the S3 emulator.
pub fn run(_built: &Path, _emus: &Emulators) -> Result<()> {
    anyhow::bail!("failover end-to-end scenario not written yet")
}

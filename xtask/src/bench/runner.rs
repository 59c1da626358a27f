//! The runs themselves: a fake data directory per run, the archiver's and
//! the restore loop's semantics, the timing, the checks that a peer's
//! success was real, and peak memory.
//!
//! It does not decide the order of the peers (the bench's `run` does) or
//! render anything ([`super::report`] does).

use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::cases::{Compression, MemoryRow, Peer, Sample, Scenario, Storage};
use super::children::{Identity, Watchdog};
use super::corpus::{Corpus, Workload};
use super::peers::Tool;
use super::s3::S3;
use super::CHILD_PATH;
use crate::infra::pg;

/// Peak RSS of 1 GiB segments per storage: `(what, KiB)` pairs, or why
/// they could not be measured.
pub(super) type LargeMemory = Vec<(String, Result<Vec<(String, u64)>, String>)>;

/// What every run shares: the corpus and its cluster, the walg binary, who
/// the children run as, their watchdog, and S3 when it started.
#[derive(Debug)]
pub(super) struct Bench<'a> {
    pub(super) runs_dir: PathBuf,
    pub(super) identity: Identity,
    pub(super) walg: PathBuf,
    pub(super) corpus: Corpus,
    pub(super) cluster_data: PathBuf,
    pub(super) cluster_socket: PathBuf,
    pub(super) cluster_port: u16,
    pub(super) concurrency: usize,
    pub(super) watchdog: Watchdog,
    pub(super) s3: Option<&'a S3>,
}

impl Bench<'_> {
    pub(super) fn run_dir(
        &self,
        r: usize,
        storage: Storage,
        scenario: Scenario,
        peer: Peer,
    ) -> PathBuf {
        self.runs_dir.join(format!(
            "r{r}-{}-{}-{}",
            storage.name(),
            scenario.name(),
            peer.slug()
        ))
    }

    /// The run whose archive a fetch reads: the same repetition's sequential
    /// push by the same program.
    pub(super) fn source_of(&self, r: usize, storage: Storage, peer: Peer) -> PathBuf {
        self.run_dir(
            r,
            storage,
            Scenario::Push,
            if peer.is_walg() {
                Peer::Walg
            } else {
                Peer::Pgbr
            },
        )
    }

    pub(super) fn measure(
        &self,
        r: usize,
        storage: Storage,
        scenario: Scenario,
        peer: Peer,
    ) -> Result<Sample> {
        let dir = self.run_dir(r, storage, scenario, peer);
        fresh_dir(&dir)?;
        let log = File::create(dir.join("commands.log")).context("create the command log")?;
        let result = match scenario {
            Scenario::Push => {
                let pgdata = self.pgdata(&dir.join("pgdata"), true, false)?;
                let tool = self.tool(&dir, storage, scenario, peer, &dir, &pgdata)?;
                let sample = self.push_each(&tool, &pgdata, &log)?;
                self.verify(storage, peer, &dir)?;
                Ok(sample)
            }
            Scenario::Backlog => {
                let pgdata = self.pgdata(&dir.join("pgdata"), true, true)?;
                let tool = self.tool(&dir, storage, scenario, peer, &dir, &pgdata)?;
                let sample = self.drain(&tool, &pgdata, &log)?;
                self.verify(storage, peer, &dir)?;
                Ok(sample)
            }
            Scenario::Fetch => {
                let source = self.source_of(r, storage, peer);
                ensure!(
                    source.join("pushed").exists(),
                    "no archive to fetch from: this repetition's push by the same program failed"
                );
                let pgdata = self.pgdata(&dir.join("pgdata"), false, false)?;
                let tool = self.tool(&dir, storage, scenario, peer, &source, &pgdata)?;
                self.fetch_each(&tool, &pgdata, &log)
            }
        };
        self.wait_quiet(&dir);
        if scenario != Scenario::Fetch && result.is_ok() {
            fs::write(dir.join("pushed"), "").context("mark the archive complete")?;
        }
        result.with_context(|| format!("see {}", dir.join("commands.log").display()))
    }

    /// A data directory as the peers see it: `global/pg_control` and
    /// `PG_VERSION` of the corpus cluster (pgBackRest checks the system id),
    /// `pg_wal` with hard links to the corpus and, for a backlog, a `.ready`
    /// file for every segment.
    pub(super) fn pgdata(&self, dir: &Path, segments: bool, ready: bool) -> Result<PathBuf> {
        let status = dir.join("pg_wal").join("archive_status");
        fs::create_dir_all(&status).with_context(|| format!("create {}", status.display()))?;
        fs::create_dir_all(dir.join("global"))?;
        fs::copy(
            self.cluster_data.join("global/pg_control"),
            dir.join("global/pg_control"),
        )
        .context("copy pg_control")?;
        fs::copy(self.cluster_data.join("PG_VERSION"), dir.join("PG_VERSION"))
            .context("copy PG_VERSION")?;
        if segments {
            for s in &self.corpus.segments {
                fs::hard_link(&s.path, dir.join("pg_wal").join(&s.name))
                    .with_context(|| format!("link {} into the fake pg_wal", s.name))?;
                if ready {
                    File::create(status.join(format!("{}.ready", s.name)))?;
                }
            }
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        pg::chown_postgres(dir)?;
        Ok(dir.to_path_buf())
    }

    pub(super) fn command(&self, argv: &[OsString], cwd: &Path) -> Command {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..])
            .current_dir(cwd)
            .env_clear()
            .env("PATH", CHILD_PATH)
            .env("HOME", &self.identity.home)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null());
        if let Some(s3) = self.s3 {
            // walg's TLS roots (rustls-native-certs) come from this file.
            c.env("SSL_CERT_FILE", &s3.cert);
        }
        if let Some((uid, gid)) = self.identity.ids {
            c.uid(uid).gid(gid);
        }
        c
    }

    pub(super) fn exec(&self, mut cmd: Command, log: &File, what: &str) -> Result<()> {
        cmd.stdout(log.try_clone()?).stderr(log.try_clone()?);
        let mut child = cmd.spawn().with_context(|| format!("start {what}"))?;
        self.watchdog.arm(child.id());
        let status = child.wait();
        self.watchdog.disarm();
        let status = status.with_context(|| format!("wait for {what}"))?;
        ensure!(status.success(), "{what} exited with {status}");
        Ok(())
    }

    pub(super) fn push_each(&self, tool: &Tool, pgdata: &Path, log: &File) -> Result<Sample> {
        settle(&self.corpus);
        let mut kinds = [Duration::ZERO; 2];
        for s in &self.corpus.segments {
            let cmd = self.command(&tool.push(&self.walg, &s.name), pgdata);
            let t = Instant::now();
            self.exec(cmd, log, &format!("push {}", s.name))?;
            kinds[s.workload.index()] += t.elapsed();
        }
        Ok(Sample {
            total: kinds[0] + kinds[1],
            by_kind: Some(kinds),
        })
    }

    /// Sequential pushes of several peers, interleaved segment by segment
    /// (the peers' order rotating every segment), so a disk whose speed
    /// depends on what was written just before (this VM's disk wrote 16 MiB
    /// with `dd conv=fsync` in 17 ms fresh and in 56 ms after 2 GiB of
    /// other writes) weighs on every peer alike. One result per peer.
    pub(super) fn measure_interleaved(
        &self,
        r: usize,
        storage: Storage,
        peers: &[Peer],
    ) -> Vec<Result<Sample>> {
        struct Run {
            dir: PathBuf,
            log: File,
            pgdata: PathBuf,
            tool: Tool,
            kinds: [Duration; 2],
            failed: Option<anyhow::Error>,
        }
        let runs: Vec<Result<Run>> = peers
            .iter()
            .map(|&peer| {
                let dir = self.run_dir(r, storage, Scenario::Push, peer);
                fresh_dir(&dir)?;
                let log =
                    File::create(dir.join("commands.log")).context("create the command log")?;
                let pgdata = self.pgdata(&dir.join("pgdata"), true, false)?;
                let tool = self.tool(&dir, storage, Scenario::Push, peer, &dir, &pgdata)?;
                Ok(Run {
                    dir,
                    log,
                    pgdata,
                    tool,
                    kinds: [Duration::ZERO; 2],
                    failed: None,
                })
            })
            .collect();
        let mut runs: Vec<Result<Run>> = runs;
        settle(&self.corpus);
        for (k, s) in self.corpus.segments.iter().enumerate() {
            for j in 0..runs.len() {
                let Ok(run) = &mut runs[(j + k) % peers.len()] else {
                    continue;
                };
                if run.failed.is_some() {
                    continue;
                }
                let cmd = self.command(&run.tool.push(&self.walg, &s.name), &run.pgdata);
                let t = Instant::now();
                match self.exec(cmd, &run.log, &format!("push {}", s.name)) {
                    Ok(()) => run.kinds[s.workload.index()] += t.elapsed(),
                    Err(e) => run.failed = Some(e),
                }
            }
        }
        runs.into_iter()
            .zip(peers)
            .map(|(run, &peer)| {
                let run = run?;
                self.wait_quiet(&run.dir);
                let see = || format!("see {}", run.dir.join("commands.log").display());
                if let Some(e) = run.failed {
                    return Err(e).with_context(see);
                }
                self.verify(storage, peer, &run.dir).with_context(see)?;
                fs::write(run.dir.join("pushed"), "").context("mark the archive complete")?;
                Ok(Sample {
                    total: run.kinds[0] + run.kinds[1],
                    by_kind: Some(run.kinds),
                })
            })
            .collect()
    }

    /// PostgreSQL's archiver loop: oldest `.ready` first, one call at a
    /// time, `.ready` -> `.done` on success.
    pub(super) fn drain(&self, tool: &Tool, pgdata: &Path, log: &File) -> Result<Sample> {
        let status = pgdata.join("pg_wal").join("archive_status");
        settle(&self.corpus);
        let started = Instant::now();
        let mut done = 0;
        loop {
            let oldest = fs::read_dir(&status)?
                .filter_map(|e| {
                    e.ok()?
                        .file_name()
                        .to_str()?
                        .strip_suffix(".ready")
                        .map(str::to_string)
                })
                .min();
            let Some(seg) = oldest else { break };
            self.exec(
                self.command(&tool.push(&self.walg, &seg), pgdata),
                log,
                &format!("archive {seg}"),
            )?;
            fs::rename(
                status.join(format!("{seg}.ready")),
                status.join(format!("{seg}.done")),
            )
            .with_context(|| format!("mark {seg} done"))?;
            done += 1;
        }
        let elapsed = started.elapsed();
        ensure!(
            done == self.corpus.segments.len(),
            "archived {done} of {} segments",
            self.corpus.segments.len()
        );
        Ok(Sample {
            total: elapsed,
            by_kind: None,
        })
    }

    /// PostgreSQL's restore loop: each segment into `pg_wal/RECOVERYXLOG`,
    /// checked for size, then removed.
    pub(super) fn fetch_each(&self, tool: &Tool, pgdata: &Path, log: &File) -> Result<Sample> {
        let dest = pgdata.join("pg_wal").join("RECOVERYXLOG");
        settle(&self.corpus);
        let mut kinds = [Duration::ZERO; 2];
        for s in &self.corpus.segments {
            let cmd = self.command(&tool.fetch(&self.walg, &s.name)?, pgdata);
            let t = Instant::now();
            self.exec(cmd, log, &format!("fetch {}", s.name))?;
            kinds[s.workload.index()] += t.elapsed();
            let len = fs::metadata(&dest)
                .with_context(|| format!("stat the fetched {}", s.name))?
                .len();
            ensure!(
                len == self.corpus.segment_size,
                "fetched {} has {len} bytes, not {}",
                s.name,
                self.corpus.segment_size
            );
            fs::remove_file(&dest).with_context(|| format!("remove the fetched {}", s.name))?;
        }
        Ok(Sample {
            total: kinds[0] + kinds[1],
            by_kind: Some(kinds),
        })
    }

    /// On file storage, checks that every corpus segment reached the archive
    /// (a success exit is not proof enough, upload-ahead markers included).
    pub(super) fn verify(&self, storage: Storage, peer: Peer, dir: &Path) -> Result<()> {
        if storage != Storage::File {
            return Ok(());
        }
        let stored = stored_sizes(&dir.join("repo"), &self.corpus);
        let missing: Vec<&str> = self
            .corpus
            .segments
            .iter()
            .filter(|s| stored[self.index(&s.name)].is_none())
            .map(|s| s.name.as_str())
            .collect();
        ensure!(
            missing.is_empty(),
            "{} reported success but {} segments are not in its archive, e.g. {}",
            peer.slug(),
            missing.len(),
            missing[0]
        );
        Ok(())
    }

    pub(super) fn index(&self, name: &str) -> usize {
        self.corpus
            .segments
            .iter()
            .position(|s| s.name == name)
            .unwrap_or(usize::MAX)
    }

    /// Waits until no process started for this run is left (pgBackRest's
    /// async workers outlive the call that forked them), so it cannot steal
    /// CPU from the next peer; kills stragglers after 30 s.
    pub(super) fn wait_quiet(&self, dir: &Path) {
        let needle = dir.to_string_lossy().into_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pids = processes_mentioning(&needle);
            if pids.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                for pid in pids {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .stderr(Stdio::null())
                        .status();
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(super) fn compression(&self, r: usize) -> Compression {
        let mut c = Compression::default();
        for s in &self.corpus.segments {
            c.raw[s.workload.index()] += self.corpus.segment_size;
        }
        let per_kind = |dir: PathBuf| -> Option<[u64; 2]> {
            let sizes = stored_sizes(&dir.join("repo"), &self.corpus);
            let mut out = [0; 2];
            for (s, size) in self.corpus.segments.iter().zip(sizes) {
                out[s.workload.index()] += size?;
            }
            Some(out)
        };
        c.walg = per_kind(self.run_dir(r, Storage::File, Scenario::Push, Peer::Walg));
        c.pgbr = per_kind(self.run_dir(r, Storage::File, Scenario::Push, Peer::Pgbr));
        c
    }

    pub(super) fn cleanup(&self, r: usize, storage: Storage) {
        let prefix = format!("r{r}-{}-", storage.name());
        for entry in fs::read_dir(&self.runs_dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        if storage != Storage::File {
            if let Some(s3) = self.s3 {
                if let Err(e) = s3.reset() {
                    println!("bench: {e:#}");
                }
            }
        }
    }

    /// Peak RSS of one push and one fetch of a full high-entropy segment.
    pub(super) fn memory(&self, r: usize, rows: &mut [MemoryRow]) {
        let seg = self
            .corpus
            .segments
            .iter()
            .find(|s| s.workload == Workload::Entropy)
            .unwrap_or(&self.corpus.segments[0])
            .name
            .clone();
        for (i, walg) in [(0usize, true), (2, false)] {
            if rows[i].failed.is_some() && rows[i + 1].failed.is_some() {
                continue;
            }
            let peer = if walg { Peer::Walg } else { Peer::Pgbr };
            let dir = self.runs_dir.join(format!("r{r}-mem-{}", peer.slug()));
            let result = (|| -> Result<(u64, u64)> {
                fresh_dir(&dir)?;
                let log = File::create(dir.join("commands.log"))?;
                let pgdata = self.pgdata(&dir.join("pgdata"), true, false)?;
                let tool = self.tool(&dir, Storage::File, Scenario::Push, peer, &dir, &pgdata)?;
                let push =
                    self.peak_kib(&tool.push(&self.walg, &seg), &pgdata, &dir, &log, "push")?;
                let fetch =
                    self.peak_kib(&tool.fetch(&self.walg, &seg)?, &pgdata, &dir, &log, "fetch")?;
                Ok((push, fetch))
            })();
            self.wait_quiet(&dir);
            let _ = fs::remove_dir_all(&dir);
            match result {
                Ok((push, fetch)) => {
                    rows[i].kib.push(push);
                    rows[i + 1].kib.push(fetch);
                }
                Err(e) => {
                    rows[i].failed = Some(format!("{e:#}"));
                    rows[i + 1].failed = Some(format!("{e:#}"));
                }
            }
        }
    }

    /// Peak RSS of one walg push and fetch of a sparse 1 GiB segment
    /// (compression `none`, so every byte crosses the storage path), on
    /// file storage and on S3.
    pub(super) fn large_memory(&self, built: &Path) -> LargeMemory {
        let mut out = Vec::new();
        let dir = self.runs_dir.join("mem-1gib");
        let file = (|| {
            fresh_dir(&dir)?;
            let settings = crate::e2e::fixture::file_settings(&dir.join("repo"));
            crate::e2e::memory::large_segment_memory(
                built,
                "bench-1gib-file",
                &settings,
                &["none"],
                1024,
            )
        })();
        let _ = fs::remove_dir_all(&dir);
        out.push(("file".to_string(), file.map_err(|e| format!("{e:#}"))));
        let s3 = match self.s3 {
            None => Err("S3 is not running".to_string()),
            Some(s3) => {
                let settings = s3
                    .walg_settings(Storage::S3, "mem-1gib")
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect();
                let r = crate::e2e::memory::large_segment_memory(
                    built,
                    "bench-1gib-s3",
                    &settings,
                    &["none"],
                    1024,
                )
                .map_err(|e| format!("{e:#}"));
                let _ = s3.reset();
                r
            }
        };
        out.push(("s3".to_string(), s3));
        out
    }

    pub(super) fn peak_kib(
        &self,
        argv: &[OsString],
        pgdata: &Path,
        dir: &Path,
        log: &File,
        what: &str,
    ) -> Result<u64> {
        let out = dir.join(format!("{what}.rss"));
        let mut wrapped: Vec<OsString> = vec![
            "/usr/bin/time".into(),
            "-f".into(),
            "%M".into(),
            "-o".into(),
            out.clone().into(),
        ];
        wrapped.extend(argv.iter().cloned());
        self.exec(
            self.command(&wrapped, pgdata),
            log,
            &format!("{what} under /usr/bin/time"),
        )?;
        let text = fs::read_to_string(&out).with_context(|| format!("read {}", out.display()))?;
        text.lines()
            .last()
            .unwrap_or_default()
            .trim()
            .parse()
            .with_context(|| format!("parse peak RSS from {text:?}"))
    }
}

/// Before a timed run: writes back every dirty page, so no peer's fsyncs
/// pay for what the one before it wrote, and reads the corpus into the page
/// cache, as PostgreSQL's archiver finds WAL it has just written (pgBackRest
/// drops the files it read from the cache, so whichever peer ran after it
/// read cold files: 13 against 39 ms per segment for the same `cp`).
pub(super) fn settle(corpus: &Corpus) {
    let _ = Command::new("sync").status();
    for s in &corpus.segments {
        if let Ok(mut f) = File::open(&s.path) {
            let _ = std::io::copy(&mut f, &mut std::io::sink());
        }
    }
}

pub(super) fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    pg::chown_postgres(dir)
}

/// The stored size of each corpus segment under `repo` (any layout: walg's
/// `wal_005/<seg>.lz4`, pgBackRest's `archive/<stanza>/<ver>/<dir>/<seg>-<sha1>.lz4`,
/// a plain copy), by corpus index.
pub(super) fn stored_sizes(repo: &Path, corpus: &Corpus) -> Vec<Option<u64>> {
    let mut out = vec![None; corpus.segments.len()];
    let mut stack = vec![repo.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(base) = name.get(..24) else { continue };
            // Temp files of an interrupted write are not stored segments.
            if name.contains("tmp") || name.ends_with(".partial") {
                continue;
            }
            if let Ok(i) = corpus
                .segments
                .binary_search_by(|s| s.name.as_str().cmp(base))
            {
                out[i] = Some(meta.len());
            }
        }
    }
    out
}

pub(super) fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(e.path().join("cmdline")).ok()?;
            (pid != me && String::from_utf8_lossy(&cmdline).contains(needle)).then_some(pid)
        })
        .collect()
}

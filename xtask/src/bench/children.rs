//! How the bench runs its children: as the server's OS user, each with a
//! deadline ([`Watchdog`]), and helper processes killed with their process
//! group ([`Group`]).
//!
//! It knows no peer and no storage.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::CMD_TIMEOUT;
use crate::infra::pg;

/// The OS user children run as: `postgres` when we are root (as the server
/// would run them), else ourselves.
#[derive(Debug)]
pub(super) struct Identity {
    pub(super) ids: Option<(u32, u32)>,
    pub(super) home: PathBuf,
}

impl Identity {
    pub(super) fn new(home: PathBuf) -> Result<Identity> {
        if !pg::is_root() {
            return Ok(Identity { ids: None, home });
        }
        let id = |flag: &str| -> Result<u32> {
            let out = pg::run(Command::new("id").args([flag, "postgres"]))?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .context("parse the postgres user's id")
        };
        Ok(Identity {
            ids: Some((id("-u")?, id("-g")?)),
            home,
        })
    }
}

/// Kills the one child being waited for if it outlives [`CMD_TIMEOUT`]:
/// `Child::wait` has no timeout, and polling `try_wait` would add latency to
/// every timed call.
#[derive(Debug, Clone, Default)]
pub(super) struct Watchdog(pub(super) Arc<Mutex<Option<(u32, Instant)>>>);

impl Watchdog {
    pub(super) fn start() -> Watchdog {
        let w = Watchdog::default();
        let slot = w.0.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(250));
            let due = match *slot.lock().unwrap_or_else(PoisonError::into_inner) {
                Some((pid, deadline)) if Instant::now() > deadline => Some(pid),
                _ => None,
            };
            if let Some(pid) = due {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        });
        w
    }

    pub(super) fn arm(&self, pid: u32) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((pid, Instant::now() + CMD_TIMEOUT));
    }

    pub(super) fn disarm(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// A child process killed (with its process group) when dropped.
#[derive(Debug)]
pub(super) struct Group(pub(super) Child);

impl Drop for Group {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

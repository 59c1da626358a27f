//! `walg dist-assets DIR` (hidden): writes the man pages and shell
//! completions generated from the clap definitions, for `cargo xtask dist`
//! to put into the Debian package. Generated from the binary itself so they
//! can never describe other flags than the ones it has.
//!
//! Layout under DIR: `man/walg.1`, `man/walg-<command>.1` (one per visible
//! subcommand), `completions/walg.bash`, `completions/_walg` (zsh),
//! `completions/walg.fish`.

use std::path::Path;

use anyhow::{Context, Result};
use clap_complete::Shell;

/// Writes the pages and completions of `cmd` (walg's clap definition, handed
/// over by `main`) into `dir`.
pub fn run(dir: &Path, mut cmd: clap::Command) -> Result<()> {
    cmd.build();
    let man = dir.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("create {}", man.display()))?;
    write_man(&cmd, "walg", &man)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("walg-{}", sub.get_name());
        write_man(sub, &name, &man)?;
    }
    let comp = dir.join("completions");
    std::fs::create_dir_all(&comp).with_context(|| format!("create {}", comp.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "walg", &comp)
            .with_context(|| format!("write {shell} completions into {}", comp.display()))?;
    }
    Ok(())
}

fn write_man(cmd: &clap::Command, name: &str, dir: &Path) -> Result<()> {
    // clap takes a static name (without its `string` feature); this
    // one-shot command writes a handful of pages.
    let cmd = cmd
        .clone()
        .name(&*Box::leak(name.to_string().into_boxed_str()));
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .with_context(|| format!("render the man page {name}"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, out).with_context(|| format!("write {}", path.display()))
}

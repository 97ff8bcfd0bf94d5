//! How evcxr links each cell's shared object, chosen so that a long session stays small.
//!
//! Every cell becomes a tiny shared object that its runtime (the kernel's evcxr child, or an
//! engine) loads and can never unload: values in the store may point into it. With the default
//! layout a cell object has four segments (headers, code, RELRO data, data), so each loaded cell
//! costs about 24 kB of resident memory, mostly two private dirty pages written by relocation.
//! Linking without RELRO and without a separate read-only segment leaves two segments, and
//! page-aligning them in the file keeps the small writable one inside a single page: one
//! executable page and one writable page per cell (see the README's soak figures). RELRO protects a long-lived program's GOT against memory corruption; a notebook
//! cell object gains nothing from it.
//!
//! The flags depend on the linker (lld knows `--no-rosegment` and `-z separate-loadable-segments`, GNU ld `-z noseparate-code`), so
//! they are probed once with the toolchain's `rustc`; if neither links, evcxr's default stays.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// evcxr's own flag, which replacing RUSTFLAGS must keep: cells link std dynamically.
const PREFER_DYNAMIC: &str = "-Cprefer-dynamic";

/// Candidate layouts, best first.
const LAYOUTS: [&[&str]; 2] = [
    &[
        "-Clink-arg=-Wl,-z,norelro",
        "-Clink-arg=-Wl,--no-rosegment",
        "-Clink-arg=-Wl,-z,separate-loadable-segments",
    ],
    &[
        "-Clink-arg=-Wl,-z,norelro",
        "-Clink-arg=-Wl,-z,noseparate-code",
    ],
];

/// The RUSTFLAGS for compact cell objects, probed once per process. A context takes them with
/// `state.set_build_env("RUSTFLAGS", flags)` (evcxr's `ContextState` cannot be named here).
pub fn compact_rustflags() -> Option<&'static str> {
    static FLAGS: OnceLock<Option<String>> = OnceLock::new();
    FLAGS
        .get_or_init(|| {
            let probe_dir = tempfile::tempdir().ok()?;
            let chosen = LAYOUTS
                .iter()
                .find(|layout| links_with(probe_dir.path(), layout))
                .map(|layout| {
                    std::iter::once(PREFER_DYNAMIC)
                        .chain(layout.iter().copied())
                        .collect::<Vec<_>>()
                        .join(" ")
                });
            match &chosen {
                Some(flags) => tracing::info!("cell objects link with {flags}"),
                None => tracing::info!("cell objects keep the toolchain's default layout"),
            }
            chosen
        })
        .as_deref()
}

/// Whether an empty dylib links with `layout` (the probe takes about 0.1 s).
fn links_with(dir: &Path, layout: &[&str]) -> bool {
    let source = dir.join("probe.rs");
    if std::fs::write(&source, "pub fn probe() {}\n").is_err() {
        return false;
    }
    Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .args([
            "--crate-type",
            "dylib",
            "--crate-name",
            "probe",
            PREFER_DYNAMIC,
        ])
        .args(layout)
        .arg("--out-dir")
        .arg(dir)
        .arg(&source)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The toolchain CI uses (rustc's bundled lld) takes the best layout; if a toolchain update
    /// broke the probe, cells would silently grow back to four segments.
    #[test]
    fn this_toolchain_links_compact_cell_objects() {
        let flags = compact_rustflags().expect("no compact layout links here");
        assert!(flags.starts_with(PREFER_DYNAMIC), "{flags}");
        assert!(flags.contains("norelro"), "{flags}");
    }

    #[test]
    fn a_bad_layout_is_refused_by_the_probe() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!links_with(
            dir.path(),
            &["-Clink-arg=-Wl,--no-such-linker-flag"]
        ));
    }
}

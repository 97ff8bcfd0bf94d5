//! How evcxr links each cell's shared object, chosen so that a long session stays small.
//!
//! Every cell becomes a tiny shared object that its runtime (the kernel's evcxr child, or an
//! engine) loads and can never unload: values in the store may point into it. With the default
//! layout a cell object has four page-aligned segments (headers, code, RELRO data, data), so each
//! loaded cell costs about 24 kB of resident memory, mostly private pages dirtied by relocation.
//!
//! The best layout here is one unaligned read-write-execute segment (`-N`, lld's `--omagic`,
//! without RELRO): an object of 4 to 8 kB then occupies one or two pages instead of three or
//! four. Measured with `tests/soak.py` (README): about 9 kB per cell including the loader's own
//! bookkeeping, against 13 kB for the next layout (two page-aligned segments, code and data).
//! One codegen unit also halves a cell's read-only data, because evcxr's 16 units each carry
//! their own copy of std's inlined precondition-check messages.
//!
//! Write-protected code and RELRO defend a long-lived program against memory corruption turned
//! into code injection. A notebook cell's object holds code the user asked to run in that very
//! process, and it can never be unloaded anyway, so that defence buys nothing here; the memory is
//! what a long session pays for.
//!
//! The flags depend on the linker (lld knows `--no-rosegment`, `-N` and
//! `-z separate-loadable-segments`, GNU ld `-z noseparate-code`), so they are probed once with the
//! toolchain's `rustc`; if none links, evcxr's default stays. `$RUSTPX_CELL_RUSTFLAGS` replaces
//! the probe.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// evcxr's own flag, which replacing RUSTFLAGS must keep: cells link std dynamically.
const PREFER_DYNAMIC: &str = "-Cprefer-dynamic";

/// Whatever the linker: one codegen unit, so std's inlined helpers are not copied 16 times.
const ONE_CODEGEN_UNIT: &str = "-Ccodegen-units=1";

/// Candidate layouts, best first.
const LAYOUTS: [&[&str]; 3] = [
    &[
        "-Clink-arg=-Wl,-z,norelro",
        "-Clink-arg=-Wl,--no-rosegment",
        "-Clink-arg=-Wl,-N",
        "-Clink-arg=-Wl,--build-id=none",
    ],
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

/// Replaces the probed layout flags (kept after `-Cprefer-dynamic`): for a toolchain whose
/// linker the probe does not know, or to measure another layout without rebuilding.
pub const CELL_RUSTFLAGS_ENV: &str = "RUSTPX_CELL_RUSTFLAGS";

/// The RUSTFLAGS for compact cell objects, probed once per process. A context takes them with
/// `state.set_build_env("RUSTFLAGS", flags)` (evcxr's `ContextState` cannot be named here).
pub fn compact_rustflags() -> Option<&'static str> {
    static FLAGS: OnceLock<Option<String>> = OnceLock::new();
    FLAGS
        .get_or_init(|| {
            if let Ok(custom) = std::env::var(CELL_RUSTFLAGS_ENV) {
                tracing::info!("cell objects link with ${CELL_RUSTFLAGS_ENV}: {custom}");
                return Some(format!("{PREFER_DYNAMIC} {custom}"));
            }
            let probe_dir = tempfile::tempdir().ok()?;
            let chosen = LAYOUTS
                .iter()
                .find(|layout| links_with(probe_dir.path(), layout))
                .map(|layout| {
                    [PREFER_DYNAMIC, ONE_CODEGEN_UNIT]
                        .into_iter()
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
        assert!(flags.contains(ONE_CODEGEN_UNIT), "{flags}");
        assert!(flags.ends_with(&LAYOUTS[0].join(" ")), "{flags}");
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

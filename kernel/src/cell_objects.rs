//! How evcxr links each cell's shared object, chosen so that a long session stays small.
//!
//! Every cell becomes a tiny shared object that its runtime (the kernel's evcxr child, or an
//! engine) loads and can never unload: values in the store may point into it. With the default
//! layout a cell object has four page-aligned segments (headers, code, RELRO data, data), so each
//! loaded cell costs about 24 kB of resident memory, mostly private pages dirtied by relocation.
//!
//! The best layout here is one unaligned read-write-execute segment (`-N`, lld's `--omagic`,
//! without RELRO): an object of 4 to 8 kB then occupies one or two pages instead of three or
//! four; without a build-id note the headers shrink too, which keeps a typical 3.7 kB cell in
//! one page. Measured from an engine's smaps over 60 cells: about 9 kB per cell including the
//! loader's own bookkeeping, against 13 kB for the next layout (two page-aligned segments).
//! (One codegen unit instead of evcxr's 16 saved nothing more, and made every cell with a
//! variable in scope about 200 ms slower to compile.)
//!
//! Write-protected code and RELRO defend a long-lived program against memory corruption turned
//! into code injection. A notebook cell's object holds code the user asked to run in that very
//! process, and it can never be unloaded anyway, so that defence buys nothing here; the memory is
//! what a long session pays for. Where the system forbids writable executable mappings
//! (systemd's `MemoryDenyWriteExecute`, SELinux `execmem`), that layout is skipped.
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

/// The first layout maps its one segment writable and executable.
const WRITABLE_CODE_LAYOUT: usize = 0;

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

/// The RUSTFLAGS for compact cell objects (the layout is probed once per process). A context
/// takes them with `state.set_build_env("RUSTFLAGS", flags)` (evcxr's `ContextState` cannot be
/// named here).
pub fn compact_rustflags() -> Option<String> {
    probed_layout().map(|layout| format!("{PREFER_DYNAMIC} {layout}"))
}

/// The link flags of the best layout this toolchain and system take, or `$RUSTPX_CELL_RUSTFLAGS`.
fn probed_layout() -> Option<&'static str> {
    static LAYOUT: OnceLock<Option<String>> = OnceLock::new();
    LAYOUT
        .get_or_init(|| {
            if let Ok(custom) = std::env::var(CELL_RUSTFLAGS_ENV) {
                tracing::info!("cell objects link with ${CELL_RUSTFLAGS_ENV}: {custom}");
                return Some(custom);
            }
            let probe_dir = tempfile::tempdir().ok()?;
            let writable_code = writable_code_allowed();
            let chosen = LAYOUTS
                .iter()
                .enumerate()
                .filter(|(index, _)| *index != WRITABLE_CODE_LAYOUT || writable_code)
                .find(|(_, layout)| links_with(probe_dir.path(), layout))
                .map(|(_, layout)| layout.join(" "));
            match &chosen {
                Some(flags) => tracing::info!("cell objects link with {flags}"),
                None => tracing::info!("cell objects keep the toolchain's default layout"),
            }
            chosen
        })
        .as_deref()
}

/// Whether this process may map memory writable and executable at once, as loading a
/// one-segment cell object does.
fn writable_code_allowed() -> bool {
    const PAGE: usize = 4096;
    // SAFETY: an anonymous private mapping, unmapped at once; no memory is shared or read.
    unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if page == libc::MAP_FAILED {
            tracing::info!("writable executable mappings are forbidden here");
            return false;
        }
        libc::munmap(page, PAGE);
    }
    true
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

//! std's sources (rustup's `rust-src` component), which evcxr's type inference needs.
//!
//! evcxr asks its embedded rust-analyzer for the type of every variable a cell defines. That
//! analyser reads std from source: `$RUST_SRC_PATH` (when it holds `core/`), else
//! `<sysroot>/lib/rustlib/src/rust/library`, the sysroot being what `rustc --print sysroot`
//! prints. Without them it cannot name any type that comes from std, and a cell such as
//! `let v = vec![1, 2, 3];` fails with "Couldn't automatically determine type of variable `v`"
//! (only explicitly typed `let`s and primitives still work).
//!
//! When they are missing, rust-analyzer runs `rustup component add rust-src` itself, once per
//! analyser. The kernel has two (the plain context and the `%px` compiler) starting together, so
//! on a machine without rust-src both try at once: one installs it and the other fails, and the
//! context whose attempt failed has no std for the rest of the session (logging `can't load
//! standard library`). So the kernel looks first, once, before either context starts, and
//! installs the component itself when it is missing; if that is impossible it says what is lost
//! and how to fix it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long `rustup component add rust-src` may take (a download of a few MB).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Makes sure std's sources are where rust-analyzer looks, installing them if needed. Runs once
/// per process; a second caller waits for the first.
pub fn ensure() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(check_and_install);
}

fn check_and_install() {
    let rust_src_path = std::env::var_os("RUST_SRC_PATH").map(PathBuf::from);
    let sysroot = match sysroot() {
        Ok(sysroot) => sysroot,
        Err(why) => {
            // evcxr cannot compile anything either: its own error says so at the first cell.
            tracing::debug!("cannot look for std's sources: {why}");
            return;
        }
    };
    if let Some(found) = find(&sysroot, rust_src_path.as_deref()) {
        tracing::debug!("std's sources: {}", found.display());
        return;
    }
    tracing::info!(
        "std's sources (the rust-src component) are not in {}: installing them with \
         `rustup component add rust-src` (evcxr needs them to infer variable types)",
        sysroot.display()
    );
    let started = Instant::now();
    let outcome = install();
    match outcome {
        Ok(()) if find(&sysroot, rust_src_path.as_deref()).is_some() => tracing::info!(
            "installed rust-src in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
        Ok(()) => tracing::warn!(
            "{}",
            missing(
                &sysroot,
                "rustup installed rust-src, but not into this sysroot"
            )
        ),
        Err(why) => tracing::warn!("{}", missing(&sysroot, &why.to_string())),
    }
}

/// What the user loses without std's sources, and the fix.
fn missing(sysroot: &Path, why: &str) -> String {
    format!(
        "std's sources are missing from {} ({why}): evcxr cannot infer types that come from std, \
         so `let v = vec![1, 2, 3];` fails unless written `let v: Vec<i32> = vec![1, 2, 3];`. \
         Fix: `rustup component add rust-src` (or install rust-src the way you installed rustc, \
         or set RUST_SRC_PATH to its `library` directory), then restart the kernel.",
        sysroot.display()
    )
}

/// Where rust-analyzer finds std's sources, if it does: `$RUST_SRC_PATH` when it holds `core`,
/// else the sysroot's `lib/rustlib/src/rust/library`.
fn find(sysroot: &Path, rust_src_path: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = rust_src_path.filter(|p| p.is_absolute() && p.join("core").exists()) {
        return Some(path.to_path_buf());
    }
    let library = sysroot.join("lib/rustlib/src/rust/library");
    library.exists().then_some(library)
}

/// Why std's sources could not be looked for or installed (logged; the kernel carries on).
#[derive(Debug, thiserror::Error)]
enum StdSourcesError {
    #[error("cannot run {rustc}: {source}")]
    RunRustc {
        rustc: String,
        source: std::io::Error,
    },
    #[error("`rustc --print sysroot` failed: {0}")]
    SysrootFailed(String),
    #[error("`rustc --print sysroot` printed nothing")]
    SysrootEmpty,
    #[error("cannot run rustup: {0}")]
    RunRustup(std::io::Error),
    /// rustup ran and failed; its last line of stderr, if it wrote one, says why.
    #[error("`rustup component add rust-src` failed ({status}){}", last_line.as_deref().map(|l| format!(": {l}")).unwrap_or_default())]
    RustupFailed {
        status: std::process::ExitStatus,
        last_line: Option<String>,
    },
    #[error("`rustup component add rust-src` took more than {} s", INSTALL_TIMEOUT.as_secs())]
    RustupTimedOut,
    #[error("cannot wait for rustup: {0}")]
    WaitRustup(std::io::Error),
}

/// `rustc --print sysroot` as rust-analyzer runs it: `$RUSTC` or `rustc`, from a directory
/// without a `rust-toolchain` file of the kernel's working directory (evcxr's crate lives in
/// the temporary directory).
fn sysroot() -> Result<PathBuf, StdSourcesError> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .map_err(|source| StdSourcesError::RunRustc {
            rustc: rustc.to_string_lossy().into_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(StdSourcesError::SysrootFailed(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if path.is_empty() {
        return Err(StdSourcesError::SysrootEmpty);
    }
    Ok(PathBuf::from(path))
}

/// `rustup component add rust-src` for the toolchain `rustc` resolves to from the temporary
/// directory, with a time limit.
fn install() -> Result<(), StdSourcesError> {
    let mut child = Command::new("rustup")
        .args(["component", "add", "rust-src"])
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(StdSourcesError::RunRustup)?;
    // Read on the side, so that a chatty rustup never blocks on a full pipe.
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            text
        })
    });
    let deadline = Instant::now() + INSTALL_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let stderr = stderr
                    .and_then(|reader| reader.join().ok())
                    .unwrap_or_default();
                let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
                return Err(StdSourcesError::RustupFailed {
                    status,
                    last_line: last.map(|l| l.trim().to_owned()),
                });
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StdSourcesError::RustupTimedOut);
            }
            Err(error) => return Err(StdSourcesError::WaitRustup(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_sources_are_found_where_rust_analyzer_looks() {
        let dir = std::env::temp_dir().join(format!("rustpx-std-sources-{}", std::process::id()));
        let sysroot = dir.join("sysroot");
        std::fs::create_dir_all(&sysroot).unwrap();
        assert_eq!(find(&sysroot, None), None);

        let override_dir = dir.join("override");
        std::fs::create_dir_all(override_dir.join("core")).unwrap();
        assert_eq!(
            find(&sysroot, Some(&override_dir)),
            Some(override_dir.clone())
        );
        // A RUST_SRC_PATH without `core` is ignored, as rust-analyzer ignores it.
        assert_eq!(find(&sysroot, Some(&sysroot)), None);

        let library = sysroot.join("lib/rustlib/src/rust/library");
        std::fs::create_dir_all(&library).unwrap();
        assert_eq!(find(&sysroot, None), Some(library));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

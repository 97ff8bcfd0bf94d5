//! `rustpx install` / `rustpx uninstall`: the kernelspec that makes "Rust (parallel)" appear in
//! Jupyter's kernel picker.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// The kernelspec's directory name, which is also the name clients use (`--kernel rustpx`).
pub const KERNEL_NAME: &str = "rustpx";

const KERNEL_JSON: &str = include_str!("../../kernelspec/kernel.json");
const LOGO_32: &[u8] = include_bytes!("../../kernelspec/logo-32x32.png");
const LOGO_64: &[u8] = include_bytes!("../../kernelspec/logo-64x64.png");

/// Where the kernelspec goes, as `jupyter kernelspec install` understands it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The user's Jupyter data directory (`$JUPYTER_DATA_DIR`, else `~/.local/share/jupyter`).
    User,
    /// The active Python environment (`$VIRTUAL_ENV`, else `sys.prefix` of `python3`).
    SysPrefix,
    /// `DIR/share/jupyter`.
    Prefix(PathBuf),
}

#[derive(Debug, Error)]
pub enum InstallError {
    #[error("cannot find the Jupyter data directory: neither JUPYTER_DATA_DIR, XDG_DATA_HOME nor HOME is set; use --prefix DIR")]
    NoDataDir,
    #[error("cannot find the Python prefix for --sys-prefix (no VIRTUAL_ENV, and `python3 -c 'import sys; print(sys.prefix)'` failed: {0}); activate the environment or use --prefix DIR")]
    NoSysPrefix(String),
    #[error("cannot write the kernelspec to {path}: {source}. Choose a directory you can write with --user or --prefix DIR")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no rustpx kernelspec at {0}")]
    NotInstalled(PathBuf),
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The `kernels` directory of `scope`.
pub fn kernels_dir(scope: &Scope) -> Result<PathBuf, InstallError> {
    let data_dir = match scope {
        Scope::User => user_data_dir()?,
        Scope::SysPrefix => sys_prefix()?.join("share").join("jupyter"),
        Scope::Prefix(dir) => dir.join("share").join("jupyter"),
    };
    Ok(data_dir.join("kernels"))
}

fn user_data_dir() -> Result<PathBuf, InstallError> {
    if let Some(dir) = std::env::var_os("JUPYTER_DATA_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(dir).join("jupyter"));
    }
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".local/share/jupyter"))
        .ok_or(InstallError::NoDataDir)
}

fn sys_prefix() -> Result<PathBuf, InstallError> {
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        return Ok(PathBuf::from(venv));
    }
    let output = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.prefix)"])
        .output()
        .map_err(|e| InstallError::NoSysPrefix(e.to_string()))?;
    if !output.status.success() {
        return Err(InstallError::NoSysPrefix(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    ))
}

/// The text of `kernel.json` for the binary at `binary`.
pub fn kernel_json(binary: &Path) -> String {
    // The path goes into a JSON string: escape it as JSON.
    let quoted = serde_json::to_string(&binary.display().to_string()).unwrap_or_default();
    KERNEL_JSON.replace("\"@RUSTPX_BINARY@\"", &quoted)
}

/// Writes the kernelspec for `binary` into `scope`; returns its directory.
pub fn install(scope: &Scope, binary: &Path) -> Result<PathBuf, InstallError> {
    let dir = kernels_dir(scope)?.join(KERNEL_NAME);
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).map_err(|source| InstallError::Write {
            path: dir.join(name),
            source,
        })
    };
    std::fs::create_dir_all(&dir).map_err(|source| InstallError::Write {
        path: dir.clone(),
        source,
    })?;
    write("kernel.json", kernel_json(binary).as_bytes())?;
    write("logo-32x32.png", LOGO_32)?;
    write("logo-64x64.png", LOGO_64)?;
    Ok(dir)
}

/// Removes the kernelspec from `scope`; returns the directory removed.
pub fn uninstall(scope: &Scope) -> Result<PathBuf, InstallError> {
    let dir = kernels_dir(scope)?.join(KERNEL_NAME);
    if !dir.join("kernel.json").exists() {
        return Err(InstallError::NotInstalled(dir));
    }
    std::fs::remove_dir_all(&dir).map_err(|source| InstallError::Remove {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_json_names_the_binary_and_the_display_name() {
        let text = kernel_json(Path::new("/opt/rust px/rustpx"));
        let spec: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(spec["argv"][0], "/opt/rust px/rustpx");
        assert_eq!(spec["argv"][3], "{connection_file}");
        assert_eq!(spec["display_name"], "Rust (parallel)");
        assert_eq!(spec["language"], "rust");
        assert_eq!(spec["interrupt_mode"], "message");
    }

    #[test]
    fn install_then_uninstall_under_a_prefix() {
        let prefix = std::env::temp_dir().join(format!("rustpx-install-{}", std::process::id()));
        let scope = Scope::Prefix(prefix.clone());
        let dir = install(&scope, Path::new("/bin/rustpx")).unwrap();
        assert_eq!(dir, prefix.join("share/jupyter/kernels/rustpx"));
        assert!(dir.join("logo-64x64.png").exists());
        uninstall(&scope).unwrap();
        assert!(!dir.exists());
        assert!(matches!(
            uninstall(&scope),
            Err(InstallError::NotInstalled(_))
        ));
        let _ = std::fs::remove_dir_all(prefix);
    }

    #[test]
    fn an_unwritable_prefix_says_so() {
        let scope = Scope::Prefix(PathBuf::from("/proc/rustpx-cannot-write-here"));
        let error = install(&scope, Path::new("/bin/rustpx")).unwrap_err();
        assert!(error.to_string().contains("cannot write the kernelspec"));
    }
}

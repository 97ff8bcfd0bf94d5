//! What rustc sees when it builds a cell, reduced to one hash.
//!
//! The key covers the toolchain (`rustc -vV`, which names the exact compiler and so its libstd),
//! every argument cargo and evcxr give rustc, the content of the cell's source, the content of
//! every crate it links (`--extern`, and the shared object evcxr swaps in for an rlib when it
//! exists), and the environment that changes what evcxr's wrapper or the linker do. Two things
//! are only known once rustc has run: the other files the cell read (`include_str!`, `#[path]`
//! modules) and the environment variables it read (`env!`); rustc lists both in its dep-info,
//! and an entry records them with their content hashes and values, checked again before a hit.
//!
//! The context's temporary directory (a fresh random name per context) appears in the
//! arguments; it is replaced by a placeholder so that a later kernel's identical cell finds the
//! entry. The directory's parent stays in the key: rustc writes the path from the cell's object
//! to the toolchain's libraries as `$ORIGIN/../..`, whose depth depends on it.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The placeholder for the context's directory in what an entry stores.
pub const PLACEHOLDER: &str = "{RUSTPX_CELL_DIR}";

/// Changes when the key's recipe or the entry's layout changes: old entries are never matched.
const RECIPE: &str = "rustpx cell cache 1";

/// Environment variables rustc, evcxr's wrapper or the linker take as input besides the
/// arguments (the values are part of the key).
const ENV_INPUTS: [&str; 7] = [
    "EVCXR_FORCE_DYLIB",
    "RUSTC_BOOTSTRAP",
    "PATH",
    "LD_LIBRARY_PATH",
    "LIBRARY_PATH",
    "SOURCE_DATE_EPOCH",
    "RUSTC_LOG",
];

/// evcxr's variable naming the runtime crate every cell links (`name=path`).
const CORE_EXTERN_ENV: &str = "EVCXR_CORE_EXTERN";

/// Why a build's key could not be computed (the build then simply runs, uncached).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot run {0} -vV: {1}")]
    Toolchain(String, std::io::Error),
    #[error("{0} -vV failed")]
    ToolchainFailed(String),
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("an argument is not UTF-8")]
    NotUtf8,
    #[error("no --out-dir among rustc's arguments")]
    NoOutDir,
}

/// One rustc run of the cell crate, as the wrapper received it.
#[derive(Debug)]
pub struct CellBuild {
    /// rustc's path (the wrapper's first argument).
    pub rustc: String,
    /// The arguments after it.
    pub args: Vec<String>,
    /// The context's directory (cargo runs rustc there).
    pub dir: PathBuf,
    pub out_dir: PathBuf,
}

/// The crate evcxr compiles each cell into.
const CELL_CRATE: &str = "ctx";

impl CellBuild {
    /// The build described by the wrapper's arguments (`wrapper rustc ARGS...`), if it is a
    /// cell's final build: the `ctx` crate, emitting a linked object (not `cargo check`).
    pub fn from_args(argv: &[OsString], dir: &Path) -> Result<Option<CellBuild>, KeyError> {
        let Some((rustc, rest)) = argv.get(1..).and_then(<[OsString]>::split_first) else {
            return Ok(None);
        };
        let text = |s: &OsString| s.to_str().map(str::to_owned).ok_or(KeyError::NotUtf8);
        let args = rest.iter().map(text).collect::<Result<Vec<_>, _>>()?;
        let after = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
        };
        let is_cell = after("--crate-name").is_some_and(|name| name == CELL_CRATE);
        let links = args
            .iter()
            .filter_map(|a| a.strip_prefix("--emit="))
            .any(|kinds| kinds.split(',').any(|k| k == "link"));
        if !is_cell || !links {
            return Ok(None);
        }
        let out_dir = after("--out-dir").ok_or(KeyError::NoOutDir)?;
        Ok(Some(CellBuild {
            rustc: text(rustc)?,
            out_dir: dir.join(out_dir),
            args,
            dir: dir.to_owned(),
        }))
    }

    /// The crate's root source file, as the arguments name it (evcxr's `src/lib.rs`).
    pub fn source_arg(&self) -> Option<&str> {
        self.args
            .iter()
            .find(|a| a.ends_with(".rs") && !a.starts_with('-'))
            .map(String::as_str)
    }

    /// `text` with the context's directory replaced by [`PLACEHOLDER`].
    pub fn normalize(&self, text: &str) -> String {
        text.replace(&*self.dir.to_string_lossy(), PLACEHOLDER)
    }

    /// `text` with [`PLACEHOLDER`] replaced by this context's directory.
    pub fn localize(&self, text: &str) -> String {
        text.replace(PLACEHOLDER, &self.dir.to_string_lossy())
    }

    /// Where rustc writes the cell's object and its dep-info.
    pub fn object_path(&self) -> PathBuf {
        self.out_dir.join(format!("lib{CELL_CRATE}.so"))
    }

    pub fn dep_info_path(&self) -> PathBuf {
        self.out_dir.join(format!("{CELL_CRATE}.d"))
    }

    /// The hash of everything rustc sees before it runs (see the module's documentation).
    pub fn key(&self) -> Result<String, KeyError> {
        let mut hash = Sha256::new();
        let mut field = |name: &str, value: &[u8]| {
            hash.update((name.len() as u64).to_le_bytes());
            hash.update(name.as_bytes());
            hash.update((value.len() as u64).to_le_bytes());
            hash.update(value);
        };
        field("recipe", RECIPE.as_bytes());
        field("toolchain", &toolchain_version(&self.rustc)?);
        let parent = self.dir.parent().unwrap_or(Path::new("/"));
        field("parent", parent.as_os_str().as_encoded_bytes());
        let mut args = self.args.iter().peekable();
        while let Some(arg) = args.next() {
            field("arg", self.normalize(arg).as_bytes());
            if arg.ends_with(".rs") && !arg.starts_with('-') {
                field("source", file_hash(&self.dir.join(arg))?.as_bytes());
            }
            if arg == "--extern" {
                if let Some(value) = args.peek() {
                    for (name, digest) in self.extern_hashes(value)? {
                        field(&name, digest.as_bytes());
                    }
                }
            }
        }
        // Cargo puts the context's own directories on LD_LIBRARY_PATH: normalized like the
        // arguments.
        for name in ENV_INPUTS {
            let value = std::env::var_os(name).map(|v| self.normalize(&v.to_string_lossy()));
            field(name, value.as_deref().unwrap_or("\0unset").as_bytes());
        }
        if let Ok(core) = std::env::var(CORE_EXTERN_ENV) {
            field(CORE_EXTERN_ENV, self.normalize(&core).as_bytes());
            for (name, digest) in self.extern_hashes(&core)? {
                field(&name, digest.as_bytes());
            }
        }
        Ok(format!("{:x}", hash.finalize()))
    }

    /// The content hashes of an `--extern name=path` crate and of the shared object evcxr's
    /// wrapper links instead when it exists (`libNAME.so` beside `libNAME.rlib`).
    fn extern_hashes(&self, value: &str) -> Result<Vec<(String, String)>, KeyError> {
        let Some((_, path)) = value.split_once('=') else {
            return Ok(Vec::new()); // `--extern name`: a crate of the sysroot, in the toolchain
        };
        let path = self.dir.join(path);
        let mut hashes = vec![("extern".to_owned(), file_hash(&path)?)];
        let shared = path.with_extension("so");
        if shared != path && shared.is_file() {
            hashes.push(("extern-so".to_owned(), file_hash(&shared)?));
        }
        Ok(hashes)
    }
}

/// `rustc -vV`: the compiler's version, commit and host.
fn toolchain_version(rustc: &str) -> Result<Vec<u8>, KeyError> {
    let output = std::process::Command::new(rustc)
        .arg("-vV")
        .output()
        .map_err(|e| KeyError::Toolchain(rustc.to_owned(), e))?;
    if !output.status.success() {
        return Err(KeyError::ToolchainFailed(rustc.to_owned()));
    }
    Ok(output.stdout)
}

/// The SHA-256 of a file's content, read in pieces.
pub fn file_hash(path: &Path) -> Result<String, KeyError> {
    let read = |e| KeyError::Read(path.to_owned(), e);
    let mut file = std::fs::File::open(path).map_err(read)?;
    let mut hash = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buffer).map_err(read)?;
        if n == 0 {
            break;
        }
        hash.update(&buffer[..n]);
    }
    Ok(format!("{:x}", hash.finalize()))
}

/// What a cell read besides its arguments, from rustc's dep-info: files and environment
/// variables (`None`: read while unset).
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadInputs {
    pub files: Vec<String>,
    pub env: Vec<(String, Option<String>)>,
}

/// Parses a makefile-style dep-info: the first rule's prerequisites, and `# env-dep:` lines.
pub fn parse_dep_info(text: &str) -> ReadInputs {
    let mut inputs = ReadInputs::default();
    let mut first_rule = true;
    for line in text.lines() {
        if let Some(env) = line.strip_prefix("# env-dep:") {
            let (name, value) = match env.split_once('=') {
                Some((name, value)) => (name, Some(unescape(value))),
                None => (env, None),
            };
            inputs.env.push((name.to_owned(), value));
        } else if first_rule && !line.starts_with('#') {
            if let Some((_, prerequisites)) = split_rule(line) {
                inputs.files.extend(split_paths(prerequisites));
                first_rule = false;
            }
        }
    }
    inputs
}

/// `target: prerequisites`, where a `:` in a path is written `\:`.
fn split_rule(line: &str) -> Option<(&str, &str)> {
    let bytes = line.as_bytes();
    (0..bytes.len())
        .find(|&i| bytes[i] == b':' && (i == 0 || bytes[i - 1] != b'\\'))
        .map(|i| (&line[..i], &line[i + 1..]))
}

/// Space-separated paths, a space inside one written `\ `.
fn split_paths(text: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut current = String::new();
    let mut chars = text.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ' ' => {
                if !current.is_empty() {
                    paths.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        paths.push(current);
    }
    paths
}

/// rustc escapes `\` and newlines in env-dep values.
fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn only_the_linked_cell_crate_is_a_cell_build() {
        let dir = Path::new("/tmp/.tmpAB");
        let check = argv(&[
            "wrapper",
            "rustc",
            "--crate-name",
            "ctx",
            "--emit=dep-info,metadata",
            "--out-dir",
            "/x",
        ]);
        assert!(CellBuild::from_args(&check, dir).unwrap().is_none());
        let dep = argv(&["w", "rustc", "--crate-name", "itoa", "--emit=dep-info,link"]);
        assert!(CellBuild::from_args(&dep, dir).unwrap().is_none());
        let cell = argv(&[
            "w",
            "rustc",
            "--crate-name",
            "ctx",
            "--emit=dep-info,link",
            "--out-dir",
            "/tmp/.tmpAB/target/deps",
        ]);
        let build = CellBuild::from_args(&cell, dir).unwrap().unwrap();
        assert_eq!(
            build.object_path(),
            Path::new("/tmp/.tmpAB/target/deps/libctx.so")
        );
        assert_eq!(
            build.normalize("-L dependency=/tmp/.tmpAB/target"),
            format!("-L dependency={PLACEHOLDER}/target")
        );
        assert_eq!(build.localize(&format!("{PLACEHOLDER}/x")), "/tmp/.tmpAB/x");
    }

    #[test]
    fn dep_info_lists_files_and_environment() {
        let text = "/t/ctx.d: src/lib.rs /data/my\\ file.txt\n\n/t/libctx.so: src/lib.rs\n\nsrc/lib.rs:\n\n# env-dep:HOME=/root\n# env-dep:NOPE\n# env-dep:TWO=a\\nb\n";
        let inputs = parse_dep_info(text);
        assert_eq!(inputs.files, vec!["src/lib.rs", "/data/my file.txt"]);
        assert_eq!(
            inputs.env,
            vec![
                ("HOME".to_owned(), Some("/root".to_owned())),
                ("NOPE".to_owned(), None),
                ("TWO".to_owned(), Some("a\nb".to_owned())),
            ]
        );
    }
}

//! Compiled cells kept on disk, keyed by everything rustc sees, so that a restarted kernel
//! running the same notebook loads each cell's object instead of compiling it again.
//!
//! Where: evcxr builds each cell by running cargo, and cargo runs rustc through evcxr's wrapper,
//! which is this binary re-executed (whenever the dependency cache is on, which it is by
//! default). So this binary sees every rustc run of both contexts, the plain one and the px
//! compiler, and serves the cell crate's runs from `$XDG_CACHE_HOME/rustpx/cells` before
//! evcxr's wrapper takes over. A hit writes the object, its dep-info and rustc's output where
//! rustc would have, and rustc does not run; a miss runs evcxr's wrapper as a child (this binary
//! again, told to pass the build on) and stores what it produced.
//!
//! Why this is sound although each cell depends on the cells before it: evcxr keeps no compiled
//! state between cells. Each cell's crate is generated whole, with every earlier item, every
//! variable's type and every `use` written into its source, and its dependencies passed to rustc
//! as `--extern` files; the variables' values live in the runtime, which the object reads by
//! name and type exactly as a freshly compiled one would. So the object is a function of rustc's
//! inputs, and the key ([`key`]) covers those inputs: the toolchain, the arguments, the
//! source's content, the linked crates' content and the environment, plus the files and
//! variables the cell read (checked after the key matches). One byte of difference in any of
//! them is another key, or a failed check, and a compile.
//!
//! What is kept is loaded into the user's processes, so nothing in the directory is trusted for
//! its name: see [`store`] for the checks (owner, modes, content hashes).

pub mod canonical;
pub mod key;
pub mod store;

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use key::{parse_dep_info, CellBuild};
use store::{Entry, Store};

/// The size bound in MiB (fractions allowed; 0 turns the cell cache off).
pub const SIZE_ENV: &str = "RUSTPX_CELL_CACHE_MB";
/// The bound when [`SIZE_ENV`] is unset: a cell's object is 4 to 40 kB, so thousands of cells.
pub const DEFAULT_MIB: f64 = 256.0;

/// Set for the child that passes a missed build on to evcxr's wrapper.
const INNER_ENV: &str = "RUSTPX_CELL_CACHE_INNER";
/// evcxr's variables: this binary runs as its rustc wrapper; where to report the cell's object.
const WRAPPER_ENV: &str = "EVCXR_RUSTC_WRAPPER";
const SO_PATH_ENV: &str = "EVCXR_EXECUTION_SO_PATH";

/// `$XDG_CACHE_HOME/rustpx/cells`, else `~/.cache/rustpx/cells`.
pub fn dir() -> Option<PathBuf> {
    rustpx_protocol::user_dirs::cache_home().map(|base| base.join("rustpx").join("cells"))
}

/// [`SIZE_ENV`] in bytes, else [`DEFAULT_MIB`]; a value that is not a number is logged and the
/// default used.
pub fn bound_bytes() -> u64 {
    let mib = match std::env::var(SIZE_ENV) {
        Ok(text) => match text.trim().parse::<f64>() {
            Ok(mib) if mib.is_finite() && mib >= 0.0 => mib,
            _ => {
                log(&format!(
                    "WARN {SIZE_ENV}={text:?} is not a number of MiB; using {DEFAULT_MIB} (0 turns the cell cache off)"
                ));
                DEFAULT_MIB
            }
        },
        Err(_) => DEFAULT_MIB,
    };
    (mib * 1024.0 * 1024.0) as u64
}

/// Appends a line to the kernel's log file (the wrapper has no logger of its own): the file
/// the kernel named in `$RUSTPX_LOG_FILE`, appended to only if it already exists.
fn log(message: &str) {
    let Some(path) = std::env::var_os(crate::paths::LOG_FILE_ENV) else {
        return;
    };
    let file = std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    if let Ok(mut file) = file {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ");
        let _ = writeln!(file, "{now} rustpx_kernel::cell_cache: {message}");
    }
}

/// Runs first in `main`, after the dependency cache's preparation: when cargo started this
/// binary as evcxr's rustc wrapper for a cell's build, serves it from the cache or compiles and
/// stores it, and exits. Returns for every other process and build.
pub fn serve_if_cell_build() {
    if std::env::var_os(WRAPPER_ENV).is_none() || std::env::var_os(INNER_ENV).is_some() {
        return;
    }
    let argv: Vec<OsString> = std::env::args_os().collect();
    let Ok(cwd) = std::env::current_dir() else {
        return;
    };
    let build = match CellBuild::from_args(&argv, &cwd) {
        Ok(Some(build)) => build,
        Ok(None) => return,
        Err(error) => return log(&format!("WARN not cached: {error}")),
    };
    let bound = bound_bytes();
    let Some(dir) = dir().filter(|_| bound > 0) else {
        return;
    };
    if let Err(error) = store::make_private(&dir) {
        return log(&format!("WARN the cell cache is off: {error}"));
    }
    let store = Store {
        dir,
        bound_bytes: bound,
    };
    let order = match put_in_canonical_order(&build) {
        Ok(order) => order,
        Err(error) => return log(&format!("WARN not cached: {error}")),
    };
    let key = match build.key() {
        Ok(key) => key,
        Err(error) => {
            // rustc runs on evcxr's own text then, and its messages reach evcxr as they are.
            if let Err(undo) = order.undo(&build) {
                log(&format!(
                    "WARN cannot put the source back in evcxr's order: {undo}"
                ));
            }
            return log(&format!("WARN not cached: {error}"));
        }
    };
    let short = &key[..12];
    match store.load(&key) {
        Ok(Some(entry)) => match unchanged_reads(&build, &entry) {
            Ok(()) => match restore(&build, &entry, &order) {
                Ok(code) => {
                    log(&format!(
                        "INFO cell {short}: loaded from the cell cache, rustc not run{}",
                        if code == 0 { "" } else { " (a failed build)" }
                    ));
                    std::process::exit(code);
                }
                Err(error) => log(&format!("WARN cell {short}: cannot restore: {error}")),
            },
            Err(changed) => {
                log(&format!("INFO cell {short}: {changed} changed; compiling"));
                store.remove(&key);
            }
        },
        Ok(None) => {}
        Err(refused) => {
            log(&format!(
                "WARN cell {short}: refused the cached entry ({refused}); removing it and compiling"
            ));
            store.remove(&key);
        }
    }
    std::process::exit(compile_and_store(&build, &argv, &store, &key, &order));
}

/// The cell's source as rustc will read it, and how its lines map back to evcxr's.
struct Order {
    canonical: canonical::Canonical,
    /// The source's path as rustc names it in diagnostics.
    file: String,
    /// evcxr's text, when the file was rewritten.
    original: Option<String>,
}

impl Order {
    /// Writes evcxr's text back, for a build that is not served by the cache.
    fn undo(&self, build: &CellBuild) -> std::io::Result<()> {
        match &self.original {
            Some(text) => replace_file(&build.dir.join(&self.file), text),
            None => Ok(()),
        }
    }

    /// rustc's output, numbered as evcxr wrote the source.
    fn for_evcxr(&self, stderr: &str) -> String {
        self.canonical.restore_lines(stderr, &self.file)
    }
}

/// Rewrites the cell's source in canonical order (see [`canonical`]) before rustc or the key
/// reads it; the file is replaced whole, by a rename.
fn put_in_canonical_order(build: &CellBuild) -> std::io::Result<Order> {
    let file = build
        .source_arg()
        .ok_or_else(|| std::io::Error::other("no source file among rustc's arguments"))?
        .to_owned();
    let path = build.dir.join(&file);
    let source = std::fs::read_to_string(&path)?;
    let canonical = canonical::canonical(&source);
    let original = if canonical.unchanged() {
        None
    } else {
        replace_file(&path, &canonical.text)?;
        Some(source)
    };
    Ok(Order {
        canonical,
        file,
        original,
    })
}

/// Replaces `path` whole (written beside it, then renamed).
fn replace_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let partial = path.with_extension(format!("rs.{}", std::process::id()));
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}

/// Whether the files and variables the cell read are as they were; else which one changed.
fn unchanged_reads(build: &CellBuild, entry: &Entry) -> Result<(), String> {
    for (path, hash) in &entry.manifest.read_files {
        let now = key::file_hash(&build.dir.join(build.localize(path))).ok();
        if now.as_ref() != Some(hash) {
            return Err(format!("the file {path} it read"));
        }
    }
    for (name, value) in &entry.manifest.read_env {
        if std::env::var(name).ok() != *value {
            return Err(format!("the variable {name} it read"));
        }
    }
    Ok(())
}

/// Writes what rustc would have: the object (beside its place, then renamed), the dep-info,
/// rustc's output, and evcxr's note of where the object is. Returns rustc's exit code.
fn restore(build: &CellBuild, entry: &Entry, order: &Order) -> std::io::Result<i32> {
    let [object, dep_info, stdout, stderr] = &entry.contents[..] else {
        return Err(std::io::Error::other("an entry of the wrong shape"));
    };
    let text = |bytes: &[u8]| build.localize(&String::from_utf8_lossy(bytes));
    std::fs::create_dir_all(&build.out_dir)?;
    std::fs::write(build.dep_info_path(), text(dep_info))?;
    std::io::stdout().write_all(text(stdout).as_bytes())?;
    std::io::stderr().write_all(order.for_evcxr(&text(stderr)).as_bytes())?;
    let code = entry.manifest.exit_code;
    if code != 0 {
        return Ok(code);
    }
    let target = build.object_path();
    let partial = build
        .out_dir
        .join(format!(".libctx.so.{}", std::process::id()));
    std::fs::write(&partial, object)?;
    std::fs::rename(&partial, &target)?;
    if let Some(note) = std::env::var_os(SO_PATH_ENV) {
        std::fs::write(note, target.to_string_lossy().as_bytes())?;
    }
    Ok(0)
}

/// Runs evcxr's wrapper (this binary again) for the build, passes its output on, and stores
/// what the build produced: a failed build only when rustc wrote its dep-info (then the files and
/// variables it read are known). Returns rustc's exit code.
fn compile_and_store(
    build: &CellBuild,
    argv: &[OsString],
    store: &Store,
    key: &str,
    order: &Order,
) -> i32 {
    let short = &key[..12];
    let started = std::time::SystemTime::now();
    let output = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .args(&argv[1..])
            .env(INNER_ENV, "1")
            .output()
    });
    let output = match output {
        Ok(output) => output,
        Err(error) => {
            eprintln!("rustpx: cannot run the rustc wrapper: {error}");
            return 101;
        }
    };
    let _ = std::io::stdout().write_all(&output.stdout);
    let _ = std::io::stderr().write_all(
        order
            .for_evcxr(&String::from_utf8_lossy(&output.stderr))
            .as_bytes(),
    );
    let code = output.status.code().unwrap_or(101);
    let fresh_dep_info = std::fs::metadata(build.dep_info_path())
        .and_then(|m| m.modified())
        .is_ok_and(|modified| modified >= started);
    if code != 0 && !fresh_dep_info {
        return code;
    }
    let stored = (|| -> std::io::Result<()> {
        let object = match code {
            0 => std::fs::read(build.object_path())?,
            _ => Vec::new(),
        };
        let dep_info = String::from_utf8_lossy(&std::fs::read(build.dep_info_path())?).into_owned();
        let mut read = parse_dep_info(&dep_info);
        read.files = read.files.iter().map(|f| build.normalize(f)).collect();
        let text = |bytes: &[u8]| {
            build
                .normalize(&String::from_utf8_lossy(bytes))
                .into_bytes()
        };
        let contents = [
            object,
            build.normalize(&dep_info).into_bytes(),
            text(&output.stdout),
            text(&output.stderr),
        ];
        store.save(key, &contents, read, code, |path| {
            build.dir.join(build.localize(path))
        })
    })();
    match stored {
        Ok(()) => {
            let trimmed = store.trim();
            log(&format!(
                "INFO cell {short}: compiled by rustc and stored in the cell cache{}",
                if trimmed > 0 {
                    format!(" ({trimmed} older entries removed to stay within the bound)")
                } else {
                    String::new()
                }
            ));
        }
        Err(error) => log(&format!(
            "WARN cell {short}: compiled but not stored: {error}"
        )),
    }
    code
}

//! What a compiled cell needs on a host that does not share the kernel's files.
//!
//! evcxr links each cell dynamically against the toolchain's libstd (`-Cprefer-dynamic`) and
//! finds it through the object's RUNPATH, which points into the kernel host's toolchain. An
//! engine host has no toolchain, so every library a cell needs from those RUNPATH directories
//! travels with it; libraries found elsewhere (libc, libgcc_s) are the host system's own. Each
//! object is named by the SHA-256 of its content: a host fetches libstd once and keeps it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use object::elf::{FileHeader64, DT_NEEDED, DT_RPATH, DT_RUNPATH};
use object::read::elf::FileHeader;
use object::Endianness;
use rustpx_protocol::{sha256_hex, ObjectRef};

/// Why a cell's objects could not be described for shipping.
#[derive(Debug, thiserror::Error)]
pub enum ShippingError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not an ELF object this kernel can read: {source}", path.display())]
    NotElf {
        path: PathBuf,
        source: object::read::Error,
    },
    #[error("{} has no file name", .0.display())]
    NoFileName(PathBuf),
}

/// The `Read` error for `path`.
fn unreadable(path: &Path) -> impl Fn(std::io::Error) -> ShippingError + '_ {
    move |source| ShippingError::Read {
        path: path.to_owned(),
        source,
    }
}

/// Every object the kernel has described, by hash (to answer engines' requests), and the
/// description of each library by path (libstd is hashed once per kernel).
#[derive(Default)]
pub struct ObjectCatalog {
    by_hash: HashMap<String, PathBuf>,
    libraries: HashMap<PathBuf, (SystemTime, Vec<ObjectRef>)>,
}

impl ObjectCatalog {
    /// The objects a run of `so_path` needs, libraries first in load order, the cell last.
    /// Described once per file and modification time, so a cell sent to many engines is read
    /// and hashed once.
    pub fn objects_for(&mut self, so_path: &Path) -> Result<Vec<ObjectRef>, ShippingError> {
        self.library(so_path)
    }

    /// Where the object with this hash is, if the kernel described it.
    pub fn path(&self, sha256: &str) -> Option<&Path> {
        self.by_hash.get(sha256).map(PathBuf::as_path)
    }

    /// An object and the libraries it needs in turn, dependencies first; cached by
    /// modification time.
    fn library(&mut self, path: &Path) -> Result<Vec<ObjectRef>, ShippingError> {
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(unreadable(path))?;
        if let Some((seen, objects)) = self.libraries.get(path) {
            if *seen == modified {
                return Ok(objects.clone());
            }
        }
        let mut objects: Vec<ObjectRef> = Vec::new();
        for dependency in shipped_libraries(path)? {
            if dependency != path {
                for object in self.library(&dependency)? {
                    if !objects.contains(&object) {
                        objects.push(object);
                    }
                }
            }
        }
        objects.push(self.describe(path)?);
        self.libraries
            .insert(path.to_owned(), (modified, objects.clone()));
        Ok(objects)
    }

    fn describe(&mut self, path: &Path) -> Result<ObjectRef, ShippingError> {
        let bytes = std::fs::read(path).map_err(unreadable(path))?;
        let sha256 = sha256_hex(&bytes);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| ShippingError::NoFileName(path.to_owned()))?;
        self.by_hash.insert(sha256.clone(), path.to_owned());
        Ok(ObjectRef {
            name,
            sha256,
            size: bytes.len() as u64,
        })
    }
}

/// The libraries `path` needs that live in its RUNPATH (or RPATH) directories: the toolchain's,
/// not the system's.
fn shipped_libraries(path: &Path) -> Result<Vec<PathBuf>, ShippingError> {
    let data = std::fs::read(path).map_err(unreadable(path))?;
    let (needed, search) = dynamic_entries(&data).map_err(|source| ShippingError::NotElf {
        path: path.to_owned(),
        source,
    })?;
    let origin = path.parent().unwrap_or(Path::new("/"));
    let dirs: Vec<PathBuf> = search
        .iter()
        .flat_map(|list| list.split(':'))
        .filter(|dir| !dir.is_empty())
        .map(|dir| PathBuf::from(dir.replace("$ORIGIN", &origin.to_string_lossy())))
        .collect();
    Ok(needed
        .iter()
        .filter_map(|name| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()))
        .filter_map(|p| p.canonicalize().ok())
        .collect())
}

/// The DT_NEEDED names and the DT_RUNPATH / DT_RPATH lists of a 64-bit ELF object.
fn dynamic_entries(data: &[u8]) -> Result<(Vec<String>, Vec<String>), object::read::Error> {
    let header = FileHeader64::<Endianness>::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    let table = sections.dynamic_table(endian, data)?;
    let (mut needed, mut search) = (Vec::new(), Vec::new());
    for entry in &table {
        let wanted = if entry.tag == DT_NEEDED {
            &mut needed
        } else if entry.tag == DT_RUNPATH || entry.tag == DT_RPATH {
            &mut search
        } else {
            continue;
        };
        wanted.push(String::from_utf8_lossy(table.string(entry)?).into_owned());
    }
    Ok((needed, search))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_binary_has_no_toolchain_libraries_to_ship() {
        // A Rust binary links std statically: its needs are all system libraries.
        let exe = std::env::current_exe().unwrap();
        let (needed, _) = dynamic_entries(&std::fs::read(&exe).unwrap()).unwrap();
        assert!(needed.iter().any(|n| n.starts_with("libc.so")));
        assert!(shipped_libraries(&exe).unwrap().is_empty());
    }

    #[test]
    fn a_library_found_through_runpath_is_shipped_before_the_object() {
        // Build a tiny dylib against the toolchain's libstd, as evcxr builds a cell.
        let dir = std::env::temp_dir().join(format!("rustpx-ship-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("cell.rs");
        std::fs::write(
            &source,
            "#[no_mangle] pub extern \"C\" fn f() { println!(\"hi\"); }",
        )
        .unwrap();
        let sysroot = String::from_utf8(
            std::process::Command::new("rustc")
                .args(["--print", "sysroot"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let host = String::from_utf8(
            std::process::Command::new("rustc")
                .arg("-vV")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let target = host
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .unwrap()
            .to_owned();
        let libdir = format!("{}/lib/rustlib/{target}/lib", sysroot.trim());
        let status = std::process::Command::new("rustc")
            .args(["--crate-type=cdylib", "-Cprefer-dynamic", "-o"])
            .arg(dir.join("libcell.so"))
            .arg(format!("-Clink-arg=-Wl,-rpath,{libdir}"))
            .arg(&source)
            .status()
            .unwrap();
        assert!(status.success());
        let mut catalog = ObjectCatalog::default();
        let objects = catalog.objects_for(&dir.join("libcell.so")).unwrap();
        assert_eq!(objects.last().unwrap().name, "libcell.so");
        assert!(objects[0].name.starts_with("libstd-"), "{objects:?}");
        assert!(catalog.path(&objects[0].sha256).is_some());
        let _ = std::fs::remove_dir_all(dir);
    }
}

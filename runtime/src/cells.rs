//! Loads compiled cells and runs them against one process's variables.
//!
//! This is evcxr's runtime contract: a cell is an `extern "C"` function that takes the variable
//! store pointer (null before the first cell) and returns it. The store is created and
//! understood only by the compiled code; the runtime just keeps the pointer. Objects are never
//! unloaded, because values in the store may point into them (destructors, vtables, TLS
//! destructors).

use std::collections::{HashMap, HashSet};
use std::ffi::c_void;
use std::path::{Path, PathBuf};

use libloading::Library;

/// The signature evcxr gives every generated cell function.
type CellFn = extern "C" fn(*mut c_void) -> *mut c_void;

/// Why a cell could not be run; the cell's code did not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The dynamic loader refused the object or a library it needs.
    #[error("cannot load {}: {source}", path.display())]
    Load {
        path: PathBuf,
        source: libloading::Error,
    },
    /// The object does not export the function evcxr named.
    #[error("no function {function} in {}: {source}", path.display())]
    NoFunction {
        function: String,
        path: PathBuf,
        source: libloading::Error,
    },
}

/// One process's variables (behind evcxr's opaque pointer) and every object loaded for them.
pub struct Cells {
    store: *mut c_void,
    loaded: Vec<Library>,
    preloaded: HashSet<PathBuf>,
    /// The cell functions found so far, by object and name. A re-run of a compiled cell calls
    /// the function again without asking the dynamic loader: `dlopen` of a loaded path would
    /// hand back the same object anyway (it matches loaded objects by name), after walking
    /// every loaded object's name, which a long session makes many.
    functions: HashMap<(PathBuf, String), CellFn>,
}

impl Default for Cells {
    fn default() -> Self {
        Cells::new()
    }
}

impl Cells {
    /// No variables yet, nothing loaded.
    pub fn new() -> Cells {
        Cells {
            store: std::ptr::null_mut(),
            loaded: Vec::new(),
            preloaded: HashSet::new(),
            functions: HashMap::new(),
        }
    }

    /// Loads `libraries` by path, once each, so that later objects naming them by file name
    /// find them among the loaded objects (an engine on another host has them in its cache,
    /// not where the object's RUNPATH points).
    pub fn preload(&mut self, libraries: &[PathBuf]) -> Result<(), LoadError> {
        for library in libraries {
            if self.preloaded.contains(library) {
                continue;
            }
            // SAFETY: these are the libraries the kernel's cells link (libstd, dependencies),
            // loaded exactly as the dynamic linker would load them for the cell.
            let loaded = unsafe { Library::new(library) }.map_err(|source| LoadError::Load {
                path: library.clone(),
                source,
            })?;
            self.loaded.push(loaded);
            self.preloaded.insert(library.clone());
        }
        Ok(())
    }

    /// Loads the object at `so_path` (once) and runs its cell function `fn_name` against the
    /// store.
    pub fn run(&mut self, so_path: &Path, fn_name: &str) -> Result<(), LoadError> {
        let key = (so_path.to_owned(), fn_name.to_owned());
        let cell = match self.functions.get(&key) {
            Some(cell) => *cell,
            None => {
                let cell = self.load(so_path, fn_name)?;
                self.functions.insert(key, cell);
                cell
            }
        };
        self.store = cell(self.store);
        Ok(())
    }

    /// Loads `so_path` and finds `fn_name` in it; the object stays loaded for good (values in
    /// the store may point into it), so the function pointer stays valid.
    fn load(&mut self, so_path: &Path, fn_name: &str) -> Result<CellFn, LoadError> {
        // SAFETY: evcxr compiled the object for this process's variables; loading it runs no
        // code beyond its initialisers, which evcxr's generated crates do not define.
        let library = unsafe { Library::new(so_path) }.map_err(|source| LoadError::Load {
            path: so_path.to_owned(),
            source,
        })?;
        // SAFETY: evcxr declares every cell function with exactly this signature.
        let cell = unsafe { library.get::<CellFn>(fn_name.as_bytes()) }
            .map(|symbol| *symbol)
            .map_err(|source| LoadError::NoFunction {
                function: fn_name.to_owned(),
                path: so_path.to_owned(),
                source,
            })?;
        self.loaded.push(library);
        Ok(cell)
    }
}

impl Drop for Cells {
    fn drop(&mut self) {
        // Unloading could free code that values in the store still point to: keep everything
        // mapped until the process ends.
        for library in self.loaded.drain(..) {
            std::mem::forget(library);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_object_is_a_load_error_naming_it() {
        let mut cells = Cells::new();
        let error = cells
            .run(Path::new("/nonexistent/rustpx-cell.so"), "run_user_code_0")
            .unwrap_err();
        assert!(matches!(error, LoadError::Load { .. }));
        assert!(error
            .to_string()
            .starts_with("cannot load /nonexistent/rustpx-cell.so: "));
    }

    #[test]
    fn a_missing_function_is_named() {
        // Any loadable object without the symbol will do: the C library is always there.
        let mut cells = Cells::new();
        let libc = Path::new("libc.so.6");
        let error = cells.run(libc, "run_user_code_rustpx_none").unwrap_err();
        assert!(matches!(error, LoadError::NoFunction { .. }));
        assert!(error
            .to_string()
            .starts_with("no function run_user_code_rustpx_none in libc.so.6: "));
    }
}

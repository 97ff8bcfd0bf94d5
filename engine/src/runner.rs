//! Loads a compiled cell and runs it against this engine's variables.
//!
//! This is the same contract evcxr's own runtime implements: the cell is an `extern "C"`
//! function that takes the variable store pointer (null before the first cell) and returns it.
//! The store is created and understood only by the compiled code; the engine just keeps the
//! pointer. Shared objects are never unloaded, because values in the store may point into them.

use std::ffi::c_void;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use libloading::{Library, Symbol};

type CellFn = extern "C" fn(*mut c_void) -> *mut c_void;

/// The engine's variables (behind an opaque pointer) and every object loaded so far.
pub struct Runner {
    store: *mut c_void,
    loaded: Vec<Library>,
    preloaded: HashSet<PathBuf>,
}

impl Runner {
    pub fn new() -> Runner {
        Runner {
            store: std::ptr::null_mut(),
            loaded: Vec::new(),
            preloaded: HashSet::new(),
        }
    }

    /// Loads `libraries` (by path, once each: later objects that name them by their file name
    /// find them among the loaded objects), then runs `fn_name` from the object at `so_path`.
    pub fn run(
        &mut self,
        libraries: &[PathBuf],
        so_path: &Path,
        fn_name: &str,
    ) -> Result<(), String> {
        for library in libraries {
            if self.preloaded.contains(library) {
                continue;
            }
            // SAFETY: these are the libraries the kernel's cells link (libstd, dependencies),
            // loaded exactly as the dynamic linker would load them for the cell.
            let loaded = unsafe { Library::new(library) }
                .map_err(|e| format!("cannot load {}: {e}", library.display()))?;
            self.loaded.push(loaded);
            self.preloaded.insert(library.clone());
        }
        let shown = so_path.display();
        // SAFETY: the object was compiled by the kernel's evcxr for this engine's state; loading
        // it runs no code beyond its initialisers, which evcxr's generated crates do not define.
        let library =
            unsafe { Library::new(so_path) }.map_err(|e| format!("cannot load {shown}: {e}"))?;
        {
            // SAFETY: evcxr declares every cell function with exactly this signature.
            let cell: Symbol<CellFn> = unsafe { library.get(fn_name.as_bytes()) }
                .map_err(|e| format!("no function {fn_name} in {shown}: {e}"))?;
            self.store = cell(self.store);
        }
        self.loaded.push(library);
        Ok(())
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // Unloading could free code that values in the store still point to (destructors,
        // vtables, TLS destructors): keep everything mapped until the process ends.
        for library in self.loaded.drain(..) {
            std::mem::forget(library);
        }
    }
}

//! The `rustpx` client crate (`client/` in this repository), embedded in the kernel binary and
//! written out on first use so that both evcxr contexts can take it as a path dependency: an
//! installed kernel needs no checkout and no network access for it (serde and bincode still come
//! from the registry, like any `:dep`).

use std::path::PathBuf;

const CARGO_TOML: &str = include_str!("../../../client/Cargo.toml");
/// Every source file of the crate, by its path under `src/` (a test checks none is missing).
const SOURCES: [(&str, &str); 12] = [
    ("lib.rs", include_str!("../../../client/src/lib.rs")),
    ("numbers.rs", include_str!("../../../client/src/numbers.rs")),
    (
        "map_worker.rs",
        include_str!("../../../client/src/map_worker.rs"),
    ),
    (
        "task_output.rs",
        include_str!("../../../client/src/task_output.rs"),
    ),
    ("values.rs", include_str!("../../../client/src/values.rs")),
    ("api.rs", include_str!("../../../client/src/api.rs")),
    (
        "api_wire.rs",
        include_str!("../../../client/src/api_wire.rs"),
    ),
    (
        "api_results.rs",
        include_str!("../../../client/src/api_results.rs"),
    ),
    (
        "api_tasks.rs",
        include_str!("../../../client/src/api_tasks.rs"),
    ),
    (
        "api_direct.rs",
        include_str!("../../../client/src/api_direct.rs"),
    ),
    (
        "api_payload.rs",
        include_str!("../../../client/src/api_payload.rs"),
    ),
    (
        "type_names.rs",
        include_str!("../../../client/src/type_names.rs"),
    ),
];

/// Writes the crate under the user's cache directory (once per version of its source) and
/// returns evcxr's `:dep` line for it.
pub fn dep_line() -> std::io::Result<String> {
    let dir = base_dir()?.join(format!("client-{:016x}", fingerprint()));
    if !dir.join("src/lib.rs").is_file() {
        let partial = dir.with_extension(format!("partial-{}", std::process::id()));
        std::fs::create_dir_all(partial.join("src"))?;
        std::fs::write(partial.join("Cargo.toml"), CARGO_TOML)?;
        for (name, text) in SOURCES {
            std::fs::write(partial.join("src").join(name), text)?;
        }
        if let Err(error) = std::fs::rename(&partial, &dir) {
            // Another kernel wrote the same version first; its copy is identical.
            let _ = std::fs::remove_dir_all(&partial);
            if !dir.join("src/lib.rs").is_file() {
                return Err(error);
            }
        }
    }
    Ok(format!(
        ":dep rustpx = {{ path = {:?} }}",
        dir.to_string_lossy()
    ))
}

/// `$XDG_CACHE_HOME/rustpx`, else `~/.cache/rustpx` (home from the password database when
/// `HOME` is unset), else this kernel's private directory: never a shared name under /tmp, where
/// another user could plant a crate (and its build script) first.
fn base_dir() -> std::io::Result<PathBuf> {
    match rustpx_protocol::user_dirs::cache_home() {
        Some(dir) => Ok(dir.join("rustpx")),
        None => Ok(crate::private_dir::dir()?.join("rustpx")),
    }
}

/// FNV-1a over the embedded source: a new kernel with a changed client gets a new directory.
fn fingerprint() -> u64 {
    let sources = SOURCES
        .iter()
        .flat_map(|(name, text)| name.bytes().chain(text.bytes()));
    CARGO_TOML
        .bytes()
        .chain(sources)
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crate_is_written_once_and_named_in_the_dep_line() {
        let line = dep_line().expect("write the client crate");
        let path = line
            .split('"')
            .nth(1)
            .expect("a quoted path in the dep line");
        for (name, text) in SOURCES {
            let written = PathBuf::from(path).join("src").join(name);
            assert_eq!(std::fs::read_to_string(written).unwrap(), text);
        }
        assert_eq!(dep_line().unwrap(), line);
    }

    #[test]
    fn every_source_file_of_the_client_is_embedded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../client/src");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = SOURCES.iter().map(|(n, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }
}

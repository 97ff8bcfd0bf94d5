//! The engine connection file: what `rustpx-engine --connect FILE` reads to join this kernel's
//! pool. It holds the pool's key, so it is created with mode 0600 and removed at shutdown.

use std::path::PathBuf;

use rustpx_protocol::EngineConnection;

/// Writes the file for this kernel process; returns its path.
pub fn write(connection: &EngineConnection) -> std::io::Result<PathBuf> {
    let dir = crate::paths::runtime_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("rustpx-engines-{}.json", std::process::id()));
    write_new_private(&path, serde_json::to_string_pretty(connection)?.as_bytes())?;
    Ok(path)
}

/// A new private file (see [`rustpx_protocol::user_dirs::write_new_private`]): the link key and
/// a job's connection are secrets.
pub(super) use rustpx_protocol::user_dirs::write_new_private;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_file_is_private_to_its_owner() {
        let dir = std::env::temp_dir().join(format!("rustpx-conn-{}", std::process::id()));
        std::env::set_var("JUPYTER_RUNTIME_DIR", &dir);
        let connection = EngineConnection {
            url: "tcp://127.0.0.1:1".into(),
            key: "k".into(),
            signature_scheme: "hmac-sha256".into(),
            kernel_file: None,
            local_url: None,
        };
        let path = write(&connection).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back: EngineConnection =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, connection);
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! Files a kernel killed with SIGKILL could not remove: its engine connection file (it holds the
//! pool's key) in Jupyter's runtime directory, and its transfer directory (copies of the user's
//! values) in shared memory, and its private directory of sockets. Each name carries the kernel's pid; a starting kernel removes those
//! whose kernel is no longer running. Logs stay: they are what explains a crash.

use std::path::Path;

/// Removes what dead kernels left in `runtime_dir`, `transfer_base` and `sockets_base` (the
/// system's temporary directory); returns how many.
pub fn sweep(runtime_dir: &Path, transfer_base: &Path, sockets_base: &Path) -> usize {
    let mut removed = 0;
    for (dir, prefix) in [
        (runtime_dir, "rustpx-engines-"),
        (transfer_base, "rustpx-transfer-"),
        (sockets_base, crate::private_dir::PREFIX),
    ] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = owner_pid(&name.to_string_lossy(), prefix) else {
                continue;
            };
            if pid == std::process::id() || is_running(pid) {
                continue;
            }
            let path = entry.path();
            let gone = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match gone {
                Ok(()) => {
                    tracing::info!("removed {} left by kernel {pid}", path.display());
                    removed += 1;
                }
                Err(error) => tracing::debug!("cannot remove {}: {error}", path.display()),
            }
        }
    }
    removed
}

/// The pid in `rustpx-engines-PID.json` or `rustpx-transfer-PID-xxxx`.
fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let after = &rest[digits.len()..];
    if after != ".json" && !after.starts_with('-') {
        return None;
    }
    digits.parse().ok()
}

fn is_running(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // Signal 0 checks existence; EPERM means it exists but is someone else's.
    // SAFETY: kill with signal 0 sends nothing; it only asks whether `pid` exists.
    let answered = unsafe { libc::kill(pid, 0) };
    let exists =
        answered == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !is_zombie(pid)
}

/// A killed kernel its parent has not reaped yet still has a pid, but it is gone.
fn is_zombie(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after_name = stat.rsplit_once(')')?.1;
            after_name
                .split_whitespace()
                .next()
                .map(|state| state == "Z")
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_their_kernel_pid() {
        assert_eq!(
            owner_pid("rustpx-engines-42.json", "rustpx-engines-"),
            Some(42)
        );
        assert_eq!(
            owner_pid("rustpx-transfer-7-ab12cd34", "rustpx-transfer-"),
            Some(7)
        );
        assert_eq!(
            owner_pid("rustpx-engines-42.json.bak", "rustpx-engines-"),
            None
        );
        assert_eq!(owner_pid("rustpx-kernel-42.log", "rustpx-engines-"), None);
        assert_eq!(owner_pid("rustpx-engines-.json", "rustpx-engines-"), None);
    }

    #[test]
    fn an_unreaped_child_counts_as_gone() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while is_running(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!is_running(pid), "a zombie counted as a running kernel");
        assert!(is_running(std::process::id()));
        let _ = child.wait();
    }

    #[test]
    fn files_of_dead_kernels_go_and_the_living_stay() {
        let base = std::env::temp_dir().join(format!("rustpx-sweep-{}", std::process::id()));
        let runtime = base.join("runtime");
        let shm = base.join("shm");
        std::fs::create_dir_all(&runtime).unwrap();
        std::fs::create_dir_all(shm.join("rustpx-transfer-999999999-dead").join("x")).unwrap();
        let sockets = base.join("tmp");
        let dead_sockets = sockets.join("rustpx-sockets-999999999-abc");
        std::fs::create_dir_all(&dead_sockets).unwrap();
        let dead = runtime.join("rustpx-engines-999999999.json");
        let alive = runtime.join(format!("rustpx-engines-{}.json", std::process::id()));
        let parent = runtime.join(format!(
            "rustpx-engines-{}.json",
            std::os::unix::process::parent_id()
        ));
        let log = runtime.join("rustpx-kernel-999999999.log");
        for file in [&dead, &alive, &parent, &log] {
            std::fs::write(file, "{}").unwrap();
        }
        assert_eq!(sweep(&runtime, &shm, &sockets), 3);
        assert!(!dead.exists() && !shm.join("rustpx-transfer-999999999-dead").exists());
        assert!(!dead_sockets.exists());
        assert!(alive.exists() && parent.exists() && log.exists());
        let _ = std::fs::remove_dir_all(base);
    }
}

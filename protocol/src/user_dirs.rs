//! The user's directories, found the same way by the kernel and the engine.
//!
//! Jupyter finds home from `$HOME`, else the password database, so a kernel started by a service
//! without `HOME` uses the same files as the user's shell. Nothing here falls back to a shared
//! name under /tmp: the callers decide what to use when there is no home at all.

use std::path::PathBuf;

/// `$HOME` when set, else this user's entry in the password database. A relative home is no
/// home.
pub fn home_dir() -> Option<PathBuf> {
    std::env::home_dir().filter(|home| home.is_absolute())
}

/// `$XDG_CACHE_HOME` when set and absolute (the XDG spec says to ignore a relative one), else
/// `~/.cache`.
pub fn cache_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| home_dir().map(|home| home.join(".cache")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_users_home_is_known_and_absolute() {
        assert!(home_dir().is_some_and(|home| home.is_absolute()));
    }
}

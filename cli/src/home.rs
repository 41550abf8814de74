//! `$STRATUS_HOME` (default `~/.stratus`): the user's catalogs, state and logs.

use std::path::PathBuf;

pub fn stratus_home() -> PathBuf {
    if let Some(dir) = std::env::var_os("STRATUS_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    std::env::var_os("HOME")
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
        .join(".stratus")
}

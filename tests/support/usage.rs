//! What a running daemon uses: resident memory and bytes on disk, for the
//! soak and storage tests.

use std::path::Path;

/// The resident set size of process `pid` in bytes (`VmRSS` of
/// `/proc/<pid>/status`); `None` once the process is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes in all regular files under `dir`, counted by their length.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut total = 0;
    for entry in entries.flatten() {
        let Ok(metadata) = entry.metadata() else { continue };
        total += if metadata.is_dir() { dir_size(&entry.path()) } else { metadata.len() };
    }
    total
}

/// Bytes in MiB, for summaries.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

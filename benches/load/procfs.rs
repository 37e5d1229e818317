//! What the daemon costs the machine: CPU time and memory from `/proc`,
//! and the bytes its data dir takes on disk.
//!
//! Everything here reads the kernel's view of a process or a directory
//! tree at one moment; taking the readings at the right moments and
//! dividing them by the right counts is the workloads' job.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

/// The daemon's resident memory at one moment, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss: u64,
    /// `VmHWM`: the most it was ever resident.
    pub hwm: u64,
}

/// Bytes under a directory, two ways.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskUsage {
    /// Blocks actually allocated (`st_blocks * 512`), as `du` counts.
    pub allocated: u64,
    /// The files' lengths, as `du --apparent-size` counts; sparse or
    /// preallocated files make it differ from `allocated`.
    pub apparent: u64,
}

/// User plus system CPU time that process `pid` has used so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;

    // The command name (field 2) may hold spaces and parentheses, so the
    // fields are counted from the last ')'. After it come field 3 (state)
    // onwards; utime and stime are fields 14 and 15.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).context("odd /proc stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |field: usize| -> anyhow::Result<u64> {
        let text = fields.get(field - 3).with_context(|| format!("{path} has no field {field}"))?;
        text.parse().with_context(|| format!("{path} field {field} is {text:?}"))
    };
    let total_ticks = ticks(14)? + ticks(15)?;

    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if per_second <= 0 {
        bail!("sysconf(_SC_CLK_TCK) failed");
    }
    Ok(Duration::from_secs_f64(total_ticks as f64 / per_second as f64))
}

/// `VmRSS` and `VmHWM` of process `pid`.
pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let kib = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .with_context(|| format!("{path} has no {name}"))?;
        let value = line.split_whitespace().nth(1).with_context(|| format!("odd line {line:?}"))?;
        value.parse::<u64>().with_context(|| format!("odd line {line:?}"))
    };
    Ok(Memory { rss: kib("VmRSS:")? * 1024, hwm: kib("VmHWM:")? * 1024 })
}

/// Bytes in all files under `dir`, recursively; symlinks are not followed.
pub fn disk_usage(dir: &Path) -> anyhow::Result<DiskUsage> {
    let mut usage = DiskUsage::default();
    let entries = std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("list {}", dir.display()))?;
        let metadata = entry.path().symlink_metadata();
        let metadata = metadata.with_context(|| format!("stat {}", entry.path().display()))?;
        if metadata.is_dir() {
            let inner = disk_usage(&entry.path())?;
            usage.allocated += inner.allocated;
            usage.apparent += inner.apparent;
        } else {
            usage.allocated += metadata.blocks() * 512;
            usage.apparent += metadata.len();
        }
    }
    Ok(usage)
}

/// Bytes as MiB, for figures.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

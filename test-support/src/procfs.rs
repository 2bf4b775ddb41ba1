//! What Linux reports of a process in `/proc`: CPU time and resident memory, for benchmarks.

use anyhow::{Context as _, bail};

/// One reading of a process's resources.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessUsage {
    /// User plus system CPU time so far, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory now (`VmRSS`), in bytes.
    pub resident_bytes: u64,
    /// The most resident memory so far (`VmHWM`), in bytes.
    pub peak_resident_bytes: u64,
}

impl ProcessUsage {
    /// Reads `/proc/{pid}/stat` and `/proc/{pid}/status`.
    ///
    /// # Errors
    ///
    /// Fails when the process is gone or the files do not read as Linux writes them.
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let close = stat.rfind(')').with_context(|| format!("/proc/{pid}/stat: no comm"))?;
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |index: usize| -> anyhow::Result<f64> {
            fields
                .get(index)
                .and_then(|field| field.parse::<f64>().ok())
                .with_context(|| format!("/proc/{pid}/stat: field {}", index + 3))
        };
        // utime and stime (fields 14 and 15) count clock ticks of 1/100 s on Linux.
        let cpu_seconds = (ticks(11)? + ticks(12)?) / 100.0;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let kib = |key: &str| -> anyhow::Result<u64> {
            let Some(line) = status.lines().find_map(|line| line.strip_prefix(key)) else {
                bail!("/proc/{pid}/status has no {key}");
            };
            let value = line.trim().trim_end_matches("kB").trim();
            Ok(value.parse::<u64>().with_context(|| format!("/proc/{pid}/status: {key}"))? * 1024)
        };
        Ok(Self {
            cpu_seconds,
            resident_bytes: kib("VmRSS:")?,
            peak_resident_bytes: kib("VmHWM:")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() -> anyhow::Result<()> {
        let before = ProcessUsage::of(std::process::id())?;
        let mut spin = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(300) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let after = ProcessUsage::of(std::process::id())?;
        assert!(after.cpu_seconds - before.cpu_seconds >= 0.2, "{before:?} then {after:?}");
        assert!(
            after.resident_bytes > 1 << 20 && after.peak_resident_bytes >= after.resident_bytes
        );
        Ok(())
    }
}

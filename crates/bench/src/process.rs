//! What the kernel says about a process: resident memory from `/proc/<pid>/status` and CPU time
//! from `/proc/<pid>/stat`. Linux only; readers return `None` when a field is missing.

use std::fmt;
use std::io;

/// Resident memory of a process, in KiB as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MemoryStatus {
    /// `VmRSS`: resident set size now.
    pub rss_kib: u64,
    /// `VmHWM`: the highest resident set size since the process started.
    pub hwm_kib: u64,
}

/// Parses the `VmRSS` and `VmHWM` lines of a `/proc/<pid>/status` text.
pub fn parse_status(text: &str) -> Option<MemoryStatus> {
    let mut rss = None;
    let mut hwm = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            rss = parse_kib(rest);
        } else if let Some(rest) = line.strip_prefix("VmHWM:") {
            hwm = parse_kib(rest);
        }
    }
    Some(MemoryStatus {
        rss_kib: rss?,
        hwm_kib: hwm?,
    })
}

fn parse_kib(field: &str) -> Option<u64> {
    let mut parts = field.split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

/// Reads the memory of process `pid`.
pub fn read_memory(pid: u32) -> io::Result<MemoryStatus> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/status has no VmRSS/VmHWM lines"),
        )
    })
}

/// Parses user + system CPU time, in clock ticks, from a `/proc/<pid>/stat` line.
///
/// The second field (the command name) is in parentheses and may itself hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = stat.get(stat.rfind(')')? + 1..)?;
    // After the name come field 3 (state) onwards; utime and stime are fields 14 and 15.
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// CPU time (user + system) consumed so far by process `pid`, or by this process with `None`.
pub fn read_cpu_seconds(pid: Option<u32>) -> io::Result<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let text = std::fs::read_to_string(&path)?;
    let ticks = parse_cpu_ticks(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path} has no CPU time fields"),
        )
    })?;
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Ok(ticks as f64 / per_second as f64)
}

/// A size in KiB written for people: `512 KiB`, `12.3 MiB`, `1.20 GiB`.
pub struct Kib(pub f64);

impl fmt::Display for Kib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kib = self.0;
        let sign = if kib < 0.0 { "-" } else { "" };
        let abs = kib.abs();
        if abs < 1024.0 {
            write!(f, "{sign}{abs:.1} KiB")
        } else if abs < 1024.0 * 1024.0 {
            write!(f, "{sign}{:.1} MiB", abs / 1024.0)
        } else {
            write!(f, "{sign}{:.2} GiB", abs / (1024.0 * 1024.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str =
        "Name:\tentente\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t  812345 kB\n\
VmSize:\t  800000 kB\nVmHWM:\t   45678 kB\nVmRSS:\t   40960 kB\nThreads:\t3\n";

    #[test]
    fn status_fields_are_read() {
        assert_eq!(
            parse_status(STATUS),
            Some(MemoryStatus {
                rss_kib: 40960,
                hwm_kib: 45678
            })
        );
    }

    #[test]
    fn status_without_fields_or_with_garbage_is_none() {
        assert_eq!(parse_status(""), None);
        assert_eq!(parse_status("VmRSS:\t12 kB\n"), None);
        assert_eq!(parse_status("VmRSS:\tlots kB\nVmHWM:\t1 kB\n"), None);
        assert_eq!(parse_status("VmRSS:\t1 MB\nVmHWM:\t1 kB\n"), None);
        assert_eq!(parse_status("VmRSS:\nVmHWM:\n"), None);
        assert_eq!(
            parse_status("VmRSS:\t99999999999999999999999 kB\nVmHWM:\t1 kB\n"),
            None
        );
    }

    #[test]
    fn own_process_memory_is_readable() {
        let me = read_memory(std::process::id()).expect("own /proc status");
        assert!(me.rss_kib > 0);
        assert!(me.hwm_kib >= me.rss_kib);
    }

    #[test]
    fn cpu_ticks_count_from_the_last_parenthesis() {
        // A command name holding spaces and a closing parenthesis.
        let stat = "1234 (a b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn cpu_ticks_reject_short_or_garbage_lines() {
        assert_eq!(parse_cpu_ticks(""), None);
        assert_eq!(parse_cpu_ticks("1 (x) S 1 2 3"), None);
        assert_eq!(parse_cpu_ticks("1 x S 1 2 3 4 5 6 7 8 9 10 11 12"), None);
        assert_eq!(
            parse_cpu_ticks("1 (x) S 1 1 1 0 -1 0 0 0 0 0 nope 5 0 0"),
            None
        );
        let max = u64::MAX;
        assert_eq!(
            parse_cpu_ticks(&format!("1 (x) S 1 1 1 0 -1 0 0 0 0 0 {max} 1")),
            None
        );
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(read_cpu_seconds(None).expect("own stat") >= 0.0);
    }

    #[test]
    fn sizes_are_written_for_people() {
        assert_eq!(Kib(512.0).to_string(), "512.0 KiB");
        assert_eq!(Kib(12.5 * 1024.0).to_string(), "12.5 MiB");
        assert_eq!(Kib(1.2 * 1024.0 * 1024.0).to_string(), "1.20 GiB");
        assert_eq!(Kib(-2048.0).to_string(), "-2.0 MiB");
    }
}

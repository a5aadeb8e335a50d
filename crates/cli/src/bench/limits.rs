//! File descriptor limits and machine facts.

// ---------------------------------------------------------------------------------------------
// File descriptors.

/// `(soft, hard)` limit on open files from /proc/self/limits (`None` = unlimited).
pub(super) fn fd_limits() -> Option<(Option<u64>, Option<u64>)> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    let mut it = line["Max open files".len()..].split_whitespace();
    let parse = |v: Option<&str>| -> Option<Option<u64>> {
        match v? {
            "unlimited" => Some(None),
            n => n.parse().ok().map(Some),
        }
    };
    Some((parse(it.next())?, parse(it.next())?))
}

/// Raises the soft limit on open files to the hard limit with the util-linux `prlimit` tool,
/// when the soft limit is below what is needed (the binary has no libc binding and no unsafe
/// code). Returns the limits in force afterwards.
pub(super) fn raise_fd_limit(needed: u64) -> Option<(Option<u64>, Option<u64>)> {
    let (soft, hard) = fd_limits()?;
    if soft.is_none_or(|s| s >= needed) || soft == hard {
        return Some((soft, hard));
    }
    let target = hard.map_or_else(|| "unlimited".to_owned(), |h| h.to_string());
    let status = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={target}:{target}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => progress!("raised the open-files soft limit to {target}"),
        _ => progress!("could not raise the open-files soft limit (run `ulimit -n {target}`)"),
    }
    fd_limits()
}

/// Online CPUs of the machine, whatever this process's affinity (from /proc/cpuinfo).
pub(super) fn machine_cores() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let n = s.lines().filter(|l| l.starts_with("processor")).count();
    (n > 0).then_some(n)
}

pub(super) fn show_limit(v: Option<u64>) -> String {
    v.map_or_else(|| "unlimited".into(), |v| v.to_string())
}

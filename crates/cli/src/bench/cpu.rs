//! The server's side of the accounting, read from `/proc` (Linux): on-CPU time of all its
//! threads and its resident memory. The load tool shares the machine with the server, so
//! frames/s alone mostly measures the client; CPU time per delivered frame is the server's cost.

use std::path::Path;

/// Nanoseconds on CPU of every thread of process `pid` so far: the sum of the first field of
/// `/proc/<pid>/task/*/schedstat` (nanosecond resolution, unlike the clock ticks of
/// `/proc/<pid>/stat`). `None` when the process is gone or the kernel keeps no such figures.
pub(crate) fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    let mut any = false;
    for t in tasks.flatten() {
        // A thread that ended between the listing and the read took its time with it; that
        // is the time of a thread not doing the work measured here (the server's threads live
        // as long as it does).
        if let Some(ns) = thread_ns(&t.path()) {
            total += ns;
            any = true;
        }
    }
    any.then_some(total)
}

fn thread_ns(task: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(task.join("schedstat")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// User and kernel time of process `pid` (all threads), in clock ticks: fields 14 and 15 of
/// `/proc/<pid>/stat`. Coarse (ticks), but their ratio over a run of seconds shows where the
/// time went.
pub(crate) fn user_sys_ticks(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let mut rest = s.get(s.rfind(')')? + 1..)?.split_whitespace();
    let utime = rest.nth(11)?.parse().ok()?;
    let stime = rest.next()?.parse().ok()?;
    Some((utime, stime))
}

/// The kernel's share of the time between two [`user_sys_ticks`] readings, percent.
pub(crate) fn kernel_share(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((u0, s0), (u1, s1)) = (before?, after?);
    let (u, s) = (u1.saturating_sub(u0), s1.saturating_sub(s0));
    (u + s > 0).then(|| s as f64 * 100.0 / (u + s) as f64)
}

/// Resident memory of process `pid`, bytes (`VmRSS` of `/proc/<pid>/status`).
pub(crate) fn rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time between two readings, when both were taken.
pub(crate) fn spent(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    Some(after?.saturating_sub(before?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_accounted_and_its_time_grows() {
        let me = std::process::id();
        let a = cpu_ns(me).expect("schedstat is readable for this process");
        // Spin until the kernel has charged some time (the figures move in scheduler ticks
        // on some kernels; bounded so that a broken reading fails rather than hangs).
        let mut b = a;
        for _ in 0..10_000_000u64 {
            b = cpu_ns(me).unwrap_or(a);
            if b > a {
                break;
            }
            std::hint::black_box(b);
        }
        assert!(b > a, "on-CPU time did not grow: {a} → {b}");
        assert!(rss(me).is_some_and(|r| r > 0));
        let (u, _) = user_sys_ticks(me).expect("/proc/self/stat is readable");
        assert!(u < u64::MAX);
        assert_eq!(kernel_share(Some((10, 0)), Some((13, 1))), Some(25.0));
        assert_eq!(kernel_share(Some((1, 1)), Some((1, 1))), None);
        assert_eq!(cpu_ns(u32::MAX), None);
    }
}

//! What a process costs, read from `/proc`: resident memory now and at its peak, and CPU time spent. The harness
//! reads these for callback-gate, the ceiling server, the mock provider and itself.

use std::time::Duration;

/// Resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the peak resident size since the process started.
    pub peak_kib: u64,
}

pub fn memory(pid: u32) -> Memory {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Memory::default();
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Memory { rss_kib: field("VmRSS:"), peak_kib: field("VmHWM:") }
}

/// User plus system CPU time of every thread of a process so far.
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The command name may hold spaces and parentheses; the fields after its closing parenthesis do not.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    // After the name come state (field 3), ..., utime (field 14) and stime (field 15).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let total = ticks(11) + ticks(12);
    Duration::from_secs_f64(total as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// CPU time of a process over a measurement window.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    pid: u32,
    start: Duration,
}

impl CpuMeter {
    pub fn start(pid: u32) -> Self {
        Self { pid, start: cpu_time(pid) }
    }

    pub fn spent(&self) -> Duration {
        cpu_time(self.pid).saturating_sub(self.start)
    }
}

/// The 1-, 5- and 15-minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The machine, in one line: CPU model, cores, memory and kernel.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0.0, |kib| kib as f64 / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cores} cores, {mem_gib:.0} GiB RAM, Linux {}", kernel.trim())
}

/// Raises this process's open-file limit to its hard limit: a thousand browsers and a thousand provider
/// connections need more descriptors than a default soft limit of 1,024. Children inherit it.
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let memory = memory(me);
        assert!(memory.rss_kib > 0 && memory.peak_kib >= memory.rss_kib, "{memory:?}");
        // The kernel's own count of this process's CPU time, against which `/proc`'s is checked: spin until it
        // has grown by 300 ms, then `cpu_time` must have grown by as much, within its 10 ms ticks and the reads'
        // skew (other tests' threads count in both).
        let process_clock = || {
            let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: clock_gettime only writes the struct passed by pointer.
            let read = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
            assert_eq!(read, 0, "clock_gettime");
            Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
        };
        let (proc_before, clock_before) = (cpu_time(me), process_clock());
        let mut spin = 0u64;
        while process_clock() - clock_before < Duration::from_millis(300) {
            for i in 0..10_000u64 {
                spin = spin.wrapping_add(std::hint::black_box(i) * i);
            }
        }
        std::hint::black_box(spin);
        let (proc_spent, clock_spent) = (cpu_time(me) - proc_before, process_clock() - clock_before);
        let gap = proc_spent.abs_diff(clock_spent);
        assert!(gap < Duration::from_millis(60), "/proc says {proc_spent:?}, the clock {clock_spent:?}");
    }
}

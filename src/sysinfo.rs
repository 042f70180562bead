//! Facts about this process read from /proc, for `bench` and `stats`.

/// A `Vm*` line of /proc/self/status in kB (e.g. `VmHWM` = peak RSS, `VmRSS` = current RSS).
pub fn proc_status_kb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_rss_is_read_on_linux() {
        let hwm = super::proc_status_kb("VmHWM").expect("VmHWM in /proc/self/status");
        assert!(hwm > 100, "{hwm} kB");
    }
}

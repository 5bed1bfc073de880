//! What a benchmark report says about the machine: CPU, cores, OS, and the process's peak memory.

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Device {
    /// CPU model as the OS names it (`/proc/cpuinfo`), else the architecture.
    pub cpu: String,
    /// Logical CPUs this process may use.
    pub cores: usize,
    /// OS name, kernel release and architecture.
    pub os: String,
}

impl Device {
    pub fn this() -> Device {
        Device {
            cpu: cpu_model().unwrap_or_else(|| std::env::consts::ARCH.to_string()),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: format!(
                "{} {} ({})",
                std::env::consts::OS,
                kernel_release().unwrap_or_default(),
                std::env::consts::ARCH
            ),
        }
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    // x86 says "model name"; many ARM kernels say "Hardware" or "Model" instead.
    ["model name", "Hardware", "Model", "cpu model"]
        .iter()
        .find_map(|key| cpuinfo_field(&info, key).filter(|v| !v.is_empty()).map(str::to_string))
}

/// The value of the first `key : value` line of `/proc/cpuinfo` text.
pub(crate) fn cpuinfo_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().filter_map(|l| l.split_once(':')).find(|(k, _)| k.trim() == key).map(|(_, v)| v.trim())
}

#[cfg(unix)]
fn kernel_release() -> Option<String> {
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = u.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8(bytes).ok()
}

#[cfg(not(unix))]
fn kernel_release() -> Option<String> {
    None
}

/// The most resident memory this process has held so far, in bytes.
#[cfg(unix)]
pub fn peak_rss_bytes() -> Option<u64> {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let max = usage.ru_maxrss as u64;
    // Linux and Android report kilobytes, Apple platforms bytes.
    Some(if cfg!(target_vendor = "apple") { max } else { max * 1024 })
}

#[cfg(not(unix))]
pub fn peak_rss_bytes() -> Option<u64> {
    None
}

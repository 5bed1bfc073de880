//! What a benchmark report says about the machine: CPU, cores, OS, and the process's peak memory
//! (total, and the anonymous part that counts against a phone app's limit).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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

/// This process's anonymous (private) resident memory now, in bytes: what counts against an app's
/// memory limit on a phone. File-backed pages (a memory-mapped model's weights) are left out, since
/// the system can drop and re-read them. Linux and Android (`RssAnon` of /proc/self/status).
pub fn anon_rss_bytes() -> Option<u64> {
    status_bytes("RssAnon:")
}

/// This process's resident memory now, in bytes (Linux and Android).
pub fn rss_bytes() -> Option<u64> {
    status_bytes("VmRSS:")
}

/// Hands memory the allocator keeps after `free` back to the system: glibc holds on to freed
/// heap memory below its top, which after a part of a model is dropped can be hundreds of
/// megabytes that the next part cannot use any better than the system could.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of glibc's own heaps to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A kilobyte field of /proc/self/status, in bytes.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status.lines().find_map(|l| l.strip_prefix(field))?.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb * 1024)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn status_bytes(_: &str) -> Option<u64> {
    None
}

/// The most anonymous memory ([`anon_rss_bytes`]) the process held while this watch ran. The
/// kernel keeps a peak of the total (`peak_rss_bytes`) but not of the anonymous part, so a thread
/// samples it every [`AnonPeak::INTERVAL`]; a spike shorter than that can be missed.
pub struct AnonPeak {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Option<u64>>>,
}

impl AnonPeak {
    pub const INTERVAL: Duration = Duration::from_millis(2);

    /// Starts watching; `None` where the platform does not report anonymous memory.
    pub fn start() -> Option<AnonPeak> {
        anon_rss_bytes()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("drt-anon-peak".into())
            .spawn(move || {
                let mut peak = anon_rss_bytes();
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Self::INTERVAL);
                    peak = peak.max(anon_rss_bytes());
                }
                peak.max(anon_rss_bytes())
            })
            .ok()?;
        Some(AnonPeak { stop, thread: Some(thread) })
    }

    /// Stops watching and returns the peak in bytes.
    pub fn finish(mut self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take()?.join().ok().flatten()
    }
}

impl Drop for AnonPeak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory the process writes to is anonymous, and the watch sees it.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn the_anonymous_peak_sees_a_large_allocation() {
        let watch = AnonPeak::start().expect("Linux reports RssAnon");
        let before = anon_rss_bytes().expect("RssAnon");
        let mut big = vec![0u8; 64 << 20];
        for (i, b) in big.iter_mut().enumerate().step_by(4096) {
            *b = i as u8;
        }
        std::thread::sleep(AnonPeak::INTERVAL * 10);
        std::hint::black_box(&big);
        drop(big);
        let peak = watch.finish().expect("a peak");
        assert!(peak >= before + (60 << 20), "peak {peak} vs {before} before a 64 MiB allocation");
    }
}

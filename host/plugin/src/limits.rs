//! Per-agent resource limits: a memory cap summed over all of a plugin's
//! memories, and a compute clock that only runs while plugin code runs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Caps the sum of all linear memories of one plugin instance.
/// (`StoreLimits` caps each memory separately; Python/JS components have several.)
#[derive(Debug)]
pub struct MemoryCap {
    cap_bytes: usize,
    total_bytes: usize,
    /// Set once a growth was refused, so the failure can be named even when the
    /// guest turns it into its own abort.
    pub exceeded: bool,
}

impl MemoryCap {
    /// A cap of `cap_bytes` over all memories.
    pub fn new(cap_bytes: usize) -> MemoryCap {
        MemoryCap {
            cap_bytes,
            total_bytes: 0,
            exceeded: false,
        }
    }

    /// The configured cap.
    pub fn cap_bytes(&self) -> usize {
        self.cap_bytes
    }
}

/// Tables may hold this many elements (function references); generous, but bounded.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .total_bytes
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.cap_bytes {
            self.exceeded = true;
            return Err(wasmtime::Error::msg(format!(
                "plugin memory cap of {} MiB exceeded (growth to {} MiB refused)",
                self.cap_bytes >> 20,
                total >> 20
            )));
        }
        self.total_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Where the clock last started counting: the thread running plugin code and that thread's
/// CPU time then (plus wall time, used only if the plugin resumed on another thread).
#[derive(Debug, Clone, Copy)]
struct Mark {
    thread: std::thread::ThreadId,
    thread_cpu: Duration,
    wall: Instant,
}

impl Mark {
    fn now() -> Mark {
        Mark {
            thread: std::thread::current().id(),
            thread_cpu: thread_cpu_time(),
            wall: Instant::now(),
        }
    }

    /// CPU time the current thread spent since the mark. Plugin code between two host calls
    /// runs on one thread, so this is the plugin's own CPU use, not time it waited for a core.
    fn elapsed(&self) -> Duration {
        if self.thread == std::thread::current().id() {
            thread_cpu_time().saturating_sub(self.thread_cpu)
        } else {
            self.wall.elapsed()
        }
    }
}

/// CPU time consumed by the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

#[derive(Debug, Default)]
struct ClockState {
    used: Duration,
    running_since: Option<Mark>,
}

/// Counts CPU time spent in plugin code: paused during every host call (waiting on an LLM or
/// a long command never counts) and while the plugin is parked at a yield; CPU contention
/// (other agents, other processes) is not charged to the plugin.
#[derive(Debug, Default, Clone)]
pub struct ComputeClock {
    state: Arc<Mutex<ClockState>>,
}

/// Resumes the clock when dropped (at the end of a host call).
pub struct Paused {
    clock: ComputeClock,
}

impl Drop for Paused {
    fn drop(&mut self) {
        self.clock.start();
    }
}

impl ComputeClock {
    fn with<R>(&self, f: impl FnOnce(&mut ClockState) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Starts counting (plugin code begins or resumes running on this thread).
    pub fn start(&self) {
        self.with(|s| s.running_since = Some(Mark::now()));
    }

    /// Stops counting until the returned guard drops.
    pub fn pause(&self) -> Paused {
        self.stop();
        Paused {
            clock: self.clone(),
        }
    }

    /// Stops counting (until the next `start`).
    pub fn stop(&self) {
        self.with(|s| {
            if let Some(mark) = s.running_since.take() {
                s.used += mark.elapsed();
            }
        });
    }

    /// Plugin compute time so far.
    pub fn spent(&self) -> Duration {
        self.with(|s| s.used + s.running_since.map(|m| m.elapsed()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paused_time_does_not_count() {
        let clock = ComputeClock::default();
        clock.start();
        {
            let _p = clock.pause();
            std::thread::sleep(Duration::from_millis(50));
        }
        clock.stop();
        assert!(
            clock.spent() < Duration::from_millis(40),
            "{:?}",
            clock.spent()
        );
    }

    #[test]
    fn time_without_cpu_use_does_not_count() {
        // A thread that is descheduled (here: sleeping) uses no CPU; only burning counts.
        let clock = ComputeClock::default();
        clock.start();
        std::thread::sleep(Duration::from_millis(60));
        let idle = clock.spent();
        // Burn 60 ms of this thread's CPU, however long a loaded machine takes to give it.
        let until = thread_cpu_time() + Duration::from_millis(60);
        let mut spins = 0u64;
        while thread_cpu_time() < until {
            spins = std::hint::black_box(spins + 1);
        }
        clock.stop();
        assert!(idle < Duration::from_millis(20), "idle charged {idle:?}");
        assert!(
            clock.spent() >= Duration::from_millis(30),
            "busy loop charged only {:?}",
            clock.spent()
        );
    }

    #[test]
    fn memory_cap_sums_all_memories() {
        use wasmtime::ResourceLimiter;
        let mut cap = MemoryCap::new(10 << 20);
        assert!(cap.memory_growing(0, 6 << 20, None).unwrap());
        assert!(cap.memory_growing(0, 4 << 20, None).unwrap());
        assert!(cap.memory_growing(4 << 20, 5 << 20, None).is_err());
        assert!(cap.exceeded);
    }
}

//! Handing freed memory back to the system after a burst, for `serve` on glibc.
//!
//! glibc keeps what a burst of clients freed inside its heaps: after twenty clients that
//! left behind 100 MB of output each, the runtime held 22 MiB above its idle size for good.
//! `malloc_trim` returns those pages; a thread checks once a second how much the heaps hold
//! free and trims when it is more than [`THRESHOLD`]. Measured on the memory bench
//! (`cargo bench -p runtimeuse-cli --bench memory`): 0.9 MiB above idle 10 s after the
//! clients left, against 22.5 MiB without trimming and 124 MiB with mimalloc as the global
//! allocator. Elsewhere than glibc, nothing is done.

/// Free bytes the heaps may hold before they are trimmed: well under the 8 MiB above idle
/// that the backpressure test allows after a burst (at 8 MiB, a residual just under the
/// threshold was never trimmed and the test failed under load, 8.1 MiB above idle).
pub(crate) const THRESHOLD: usize = 2 << 20;

/// Starts the trimming thread (glibc only).
pub(crate) fn start() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    if glibc::free_in_heaps() > THRESHOLD {
                        glibc::trim();
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::debug!(error = %e, "no memory-trimming thread");
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    /// Bytes free inside the heaps (`mallinfo2().fordblks`), which the process still holds.
    pub(super) fn free_in_heaps() -> usize {
        // SAFETY: mallinfo2 takes no arguments and only reads the allocator's statistics
        // under its own locks; glibc 2.33 and later provide it.
        let info = unsafe { libc::mallinfo2() };
        info.fordblks
    }

    /// Returns the free pages of every heap to the system.
    pub(super) fn trim() {
        // SAFETY: malloc_trim has no preconditions; it takes the allocator's locks itself.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

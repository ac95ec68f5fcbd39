//! How fleetd's allocator (mimalloc, see `main.rs`) is set up: without transparent huge pages,
//! and giving freed memory back to the kernel at once.
//!
//! Huge pages: mimalloc asks the kernel for huge pages on the memory it maps (`MADV_HUGEPAGE`),
//! and each first touch of one makes the kernel zero 2 MiB. In `perf` of the scale bench's demand
//! change (`benches/scale.rs`: 1,250 launches, 10,000 runner records) that zeroing was 29% of the
//! machine, and the change took 487–716 ms with 301–318 MiB resident; with huge pages off,
//! 359–364 ms with 253 MiB.
//!
//! Purge delay: mimalloc keeps freed pages for 10 ms before giving them back, and a thread gives
//! them back only when it next calls the allocator, so pages freed by threads that then go quiet
//! (a pass's workers, the blocking pool) stay resident. In the scale bench (12,500 nodes, 100,000
//! runners; the same build, runs alternating): 169–175 MiB resident with the delay against
//! 165–168 MiB without on a quiet machine, and 202–204 against 165–182 MiB while a build ran
//! beside it. The demand change was no slower for it (5 runs each, alternating: median 146 ms,
//! 142–177, against 155 ms, 136–169 with the delay); memory given back is faulted in again when
//! it is next needed, which is the cost of holding less (see the README's scale bench).
//!
//! mimalloc reads its options from the environment when the process starts, before `main`, so
//! fleetd starts itself again with them set (same pid, safe code). An operator who sets one of
//! them keeps their choice.

/// The variable for huge pages; `0`: none.
pub const ALLOW_THP: &str = "MIMALLOC_ALLOW_THP";
/// The variable for how long freed memory is kept before it goes back (ms); `0`: at once.
pub const PURGE_DELAY: &str = "MIMALLOC_PURGE_DELAY";

/// The options fleetd runs with, each unless the operator set it.
const OPTIONS: [(&str, &str); 2] = [(ALLOW_THP, "0"), (PURGE_DELAY, "0")];

/// Replaces this process with itself, same arguments, with each of `OPTIONS` the environment does
/// not set already (nothing to do if it sets them all). Call first thing in `main`, before any
/// thread starts. If the restart fails, says so and goes on as is.
pub fn restart_with_options() {
    use std::os::unix::process::CommandExt;
    let missing: Vec<(&str, &str)> = OPTIONS.into_iter().filter(|(k, _)| std::env::var_os(k).is_none()).collect();
    if missing.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let err = std::process::Command::new(exe).args(std::env::args_os().skip(1)).envs(missing.iter().copied()).exec();
    eprintln!("could not restart with the allocator's options {missing:?} ({err}); going on with its defaults");
}

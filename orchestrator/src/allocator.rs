//! How fleetd's allocator (mimalloc, see `main.rs`) is set up: without transparent huge pages.
//!
//! Why: mimalloc asks the kernel for huge pages on the memory it maps (`MADV_HUGEPAGE`), and each
//! first touch of one makes the kernel zero 2 MiB. In `perf` of the scale bench's demand change
//! (`benches/scale.rs`: 1,250 launches, 10,000 runner records) that zeroing was 29% of the
//! machine, and the change took 487–716 ms with 301–318 MiB resident; with huge pages off,
//! 359–364 ms with 253 MiB. mimalloc reads its options from the environment when the process
//! starts, before `main`, so fleetd starts itself again with the option set (same pid, safe
//! code). An operator who sets `MIMALLOC_ALLOW_THP` keeps their choice.

/// The variable mimalloc reads; `0`: no transparent huge pages.
pub const ALLOW_THP: &str = "MIMALLOC_ALLOW_THP";

/// Replaces this process with itself, same arguments, with [`ALLOW_THP`]`=0`, unless the variable
/// is set already. Call first thing in `main`, before any thread starts. If the restart fails,
/// says so and goes on as is.
pub fn restart_without_huge_pages() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(ALLOW_THP).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let err = std::process::Command::new(exe).args(std::env::args_os().skip(1)).env(ALLOW_THP, "0").exec();
    eprintln!("could not restart with {ALLOW_THP}=0 ({err}); going on with huge pages");
}

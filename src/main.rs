//! The `flywheel` binary: see [`flywheel::cli`].

/// mimalloc keeps freed pages for reuse: query execution allocates and frees large Arrow buffers
/// at a high rate, and with the system allocator every one was a fresh mapping faulted in page by
/// page (a fifth of the CPU time of the point-in-time join benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    flywheel::cli::main()
}

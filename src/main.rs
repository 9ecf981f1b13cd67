use galaxy_pipe::stages::Registry;

/// mimalloc instead of the system allocator: training allocates and frees large tensors every
/// step, and glibc's malloc hands freed pages back and faults them in again (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (index 15 of `mi_option_e` in its `mimalloc.h`, v2 and v3;
/// `libmimalloc-sys` names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep freed memory mapped instead of handing it back to the kernel: a training step frees
/// and reallocates the same ~40 MB tensors every step, and each purge made the next step fault
/// them in and zero them again (6.5 % of training time in the profile; BENCHMARKS.md). The
/// process's memory stays at its peak until it exits.
fn keep_freed_memory() {
    // SAFETY: sets one integer option; mimalloc reads it when it next considers purging.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

fn main() {
    // A file-size limit (`ulimit -f`) must turn into a clear "File too large" error naming the
    // stage and file, not a silent kill by SIGXFSZ.
    // SAFETY: installing SIG_IGN for one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    keep_freed_memory();
    let code = galaxy_pipe::cli::main_with(std::env::args_os().collect(), &Registry::standard());
    std::process::exit(code);
}

use galaxy_pipe::stages::Registry;

/// mimalloc instead of the system allocator: training allocates and frees large tensors every
/// step, and glibc's malloc hands freed pages back and faults them in again (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // A file-size limit (`ulimit -f`) must turn into a clear "File too large" error naming the
    // stage and file, not a silent kill by SIGXFSZ.
    // SAFETY: installing SIG_IGN for one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let code = galaxy_pipe::cli::main_with(std::env::args_os().collect(), &Registry::standard());
    std::process::exit(code);
}

//! The `callback-gate` binary: everything lives in the library; this only hands over to the command line.

/// jemalloc instead of the C library's allocator: a failure page allocates and frees a few dozen small buffers
/// across the tokio workers and the database thread, where glibc's `malloc`/`free` were a fifth of its CPU;
/// jemalloc's thread caches serve a page for about 15% less CPU, and hold less memory with many connections open
/// (docs/performance.md, Finding 14). mimalloc was measured too and kept more memory per idle connection.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    callback_gate::cli::main()
}

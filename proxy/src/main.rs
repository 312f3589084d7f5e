//! `sluice`: the gateway binary. Everything lives in the library; start at
//! its [`sluice::app`] module.

/// mimalloc instead of glibc malloc: the request path allocates and frees
/// many small objects across threads, where glibc's arenas spent 13% of the
/// gateway's CPU (load-tests/PROFILE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}

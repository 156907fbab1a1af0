//! The `quorumkv` binary: see `quorumkv --help` and `src/cli/`.

/// The request path allocates many small short-lived buffers; glibc's malloc took ~15% of the
/// CPU under load (perf), mimalloc a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    quorumkv::cli::main()
}

//! The `quorumkv` binary: see `quorumkv --help` and `src/cli/`.

/// The request path allocates many small short-lived buffers; glibc's malloc took ~15% of the
/// CPU under load (perf), mimalloc a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    use std::io::IsTerminal;
    // Colour codes only for a person at a terminal, never into log files or pipes (`dev`
    // relays its nodes' logs through a pipe and colours nothing itself). NO_COLOR is honoured.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_ansi(colour)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    quorumkv::cli::main()
}

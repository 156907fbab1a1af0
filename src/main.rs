//! The `quorumkv` binary: see `quorumkv --help` and `src/cli/`.

/// The request path allocates many small short-lived buffers; glibc's malloc took ~15% of the
/// CPU under load (perf), mimalloc a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // Colour codes only for a person at a terminal, never into log files or pipes (`dev`
    // relays its nodes' logs through a pipe and colours nothing itself). NO_COLOR is honoured.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // `RUST_LOG` as targets and levels (`info`, `quorumkv=debug,warn`); the regex-based
    // EnvFilter would cost a fifth of a clean build for span filters nobody here uses.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| {
            // openraft narrates every election and append at info.
            Targets::new()
                .with_default(tracing::Level::INFO)
                .with_target("openraft", tracing::Level::WARN)
        });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(colour)
                .with_writer(std::io::stderr),
        )
        .with(filter)
        .init();
    quorumkv::cli::main()
}

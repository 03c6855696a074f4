use clap::Parser;

// searches allocate and free large per-request buffers (match keys, facet
// counts); glibc hands them back to the kernel and faults them in again on
// every request, mimalloc keeps them
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = crmsearch::cli::Cli::parse();
    match crmsearch::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! `clearinghouse`: parses the command line, runs the subcommand, and turns its outcome into the
//! documented exit code (see `clearinghouse --help`).

use std::process::ExitCode;

use clap::Parser;
use clearinghouse::cli::{self, Cli};

// Every request allocates and frees many small buffers across threads (see BENCHMARKS.md):
// mimalloc's thread-local free lists cost much less per message than glibc malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // clap prints help and version itself and exits 2 on a usage error.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::report::one_line(e.as_ref()));
            ExitCode::from(cli::exit_code(&e))
        }
    }
}

//! The `mastfetch` binary: parse the command line, run it, print an error chain once, exit.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = mastfetch::cli::Cli::parse();
    // Blocking work (name lookups of new connections, a file's final check and rename) is
    // short; tokio's default of up to 512 threads grew to ~50 of them and +25 MiB of peak RSS
    // when 512 small files were in flight, with no gain in speed.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mastfetch: error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(mastfetch::app::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // The chain may quote inputs or a server's words: shown escaped, never raw.
            eprintln!(
                "mastfetch: error: {}",
                mastfetch::text::escape(&format!("{e:#}"))
            );
            ExitCode::from(2)
        }
    }
}

//! The `mastfetch` binary: parse the command line, run it, print an error chain once, exit.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = mastfetch::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
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

//! The commands: `plan`, `get` (`get_cmd`) and `verify` (`verify_cmd`, whose `--repair`
//! returns the `get` run here), dispatched from the parsed command line.
//!
//! Owns the exit code of each command: 0 all done, 1 some files failed, were excluded or did
//! not verify, 2 usage or fatal errors (returned as `Err`). A `get` run's code is its engine
//! summary's (`outcome::Summary::exit_code`); [`get`] is the library's entry point for a whole
//! `get` watched through a caller's own `progress::Reporter`.

use anyhow::Result;

use crate::cli::{Cli, Command, PlanArgs};
use crate::config::{Config, VerifyConfig};
pub use crate::get_cmd::get;
use crate::get_cmd::get_cmd;
use crate::note;
use crate::planning::show_plan;
use crate::verify_cmd::{verify_cmd, Repair, Verified};

pub async fn run(cli: Cli) -> Result<u8> {
    // Each request in flight holds a socket and often an open file: `--jobs auto`'s 384
    // requests need ~770 of them, most of the soft limit of 1,024 many systems start with. Raised to the hard limit, as Go programs (s5cmd, rclone) do at start;
    // where it cannot be raised, the run goes on and a refused open names its file.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    match cli.command {
        Command::Plan(args) => plan_cmd(args).await,
        Command::Get(args) => get_cmd(args).await,
        Command::Verify(args) => match verify_cmd(VerifyConfig::new(&args)).await? {
            Verified::Done(code) => Ok(code),
            Verified::Repair(repair) => {
                let Repair { get, plan } = *repair;
                let code = Box::pin(get_cmd(get)).await;
                let _ = std::fs::remove_file(&plan);
                code
            }
        },
    }
}

async fn plan_cmd(args: PlanArgs) -> Result<u8> {
    let mut cfg = Config::new(&args.selection, &args.sources, &args.run)?;
    let for_bucket = args
        .dest
        .as_ref()
        .is_some_and(|d| d.to_string_lossy().starts_with("s3://"));
    if for_bucket && args.run.layout.is_none() {
        // The plan `get --dest s3://...` would make: the archive's keys.
        cfg.layout = crate::plan::Layout::Mirror;
    }
    // stdout holds the plan: notes go to stderr only.
    note::set_wait_notes(note::Options {
        json: false,
        ..cfg.progress
    });
    show_plan(&cfg, args.format, args.dest.as_deref()).await
}

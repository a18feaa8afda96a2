//! Helpers shared by the integration tests: run the real binary with a clean environment,
//! make JWST-shaped data, read manifests.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// The built `mastfetch` binary, with nothing from the developer's environment that could
/// reach the internet or change behaviour (AWS settings, tokens, MAST URL).
pub fn mastfetch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mastfetch"));
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_")
            || k.starts_with("MAST")
            || k == "JOB_COMPLETION_INDEX"
            || k.starts_with("SLURM_")
        {
            c.env_remove(k);
        }
    }
    // Nothing may probe the instance-metadata address from a test.
    c.env("AWS_EC2_METADATA_DISABLED", "true");
    c
}

/// `mastfetch ARGS --endpoint-url ENDPOINT`, with MAST pointed at a dead loopback port unless
/// the test sets another.
pub fn run(endpoint: &str, args: &[&str]) -> Output {
    let out = mastfetch()
        .args(args)
        .args(["--endpoint-url", endpoint])
        .output()
        .expect("mastfetch runs");
    out
}

/// The exit code (-1 when killed by a signal).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Exit code, stdout and stderr, for an assertion's message.
pub fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    )
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Deterministic pseudo-random bytes.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

pub fn jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

pub fn manifest(dir: &Path) -> Vec<Value> {
    jsonl(&std::fs::read_to_string(dir.join("mastfetch-manifest.jsonl")).unwrap())
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Files under `dir`, relative, sorted, without mastfetch's own bookkeeping.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, p: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.push(
                    path.strip_prefix(base)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

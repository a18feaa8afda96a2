//! A whole `get` run in-process through the library entry point (`app::get`), with a reporter
//! that records what the engine tells, against the in-process S3 server: what it reports and
//! the summary it returns agree with what landed on disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use clap::Parser;
use mastfetch::cli::{Cli, Command};
use mastfetch::manifest::Status;
use mastfetch::net::Tally;
use mastfetch::outcome::Summary;
use mastfetch::progress::{FileEvent, Reporter};

use crate::s3server::{Fault, TestS3};
use crate::util::data;

const BUCKET: &str = "stpubdata";
const MIB: usize = 1 << 20;

/// Everything a run reported.
#[derive(Default)]
struct Recorder {
    started: Mutex<Vec<String>>,
    files: Mutex<Vec<(String, Status, u64)>>,
    received: AtomicU64,
    resumed: AtomicU64,
    gave_back: AtomicU64,
    notes: Mutex<Vec<String>>,
}

impl Reporter for Recorder {
    fn started(&self, path: &str, _bytes: Option<u64>) {
        self.started.lock().unwrap().push(path.to_string());
    }
    fn bytes(&self, tally: Tally) {
        let (counter, n) = match tally {
            Tally::Received(n) => (&self.received, n),
            Tally::Resumed(n) => (&self.resumed, n),
            Tally::GaveBack(n) => (&self.gave_back, n),
            Tally::Copied(n) => panic!("a download into a folder reported {n} bytes copied"),
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }
    fn file_done(&self, ev: &FileEvent<'_>) {
        let file = (ev.path.to_string(), ev.status, ev.bytes);
        self.files.lock().unwrap().push(file);
    }
    fn note(&self, msg: &str) {
        self.notes.lock().unwrap().push(msg.to_string());
    }
    fn error(&self, msg: &str) {
        self.notes.lock().unwrap().push(format!("error: {msg}"));
    }
}

impl Recorder {
    fn outcomes(&self) -> Vec<(String, Status, u64)> {
        let mut files = self.files.lock().unwrap().clone();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        files
    }
}

fn get(endpoint: &str, dest: &std::path::Path) -> (Summary, Arc<Recorder>) {
    let cli = Cli::try_parse_from([
        "mastfetch",
        "get",
        &format!("s3://{BUCKET}/inproc/"),
        "--dest",
        dest.to_str().unwrap(),
        "--layout",
        "flat",
        "--part-size",
        "1MiB",
        "--retries",
        "1",
        "--s3-only",
        "--quiet",
        "--endpoint-url",
        endpoint,
    ])
    .unwrap();
    let Command::Get(args) = cli.command else {
        panic!("parsed as get")
    };
    let recorder = Arc::new(Recorder::default());
    let report: Arc<dyn Reporter> = recorder.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let summary = rt
        .block_on(mastfetch::app::get(&args, Some(report)))
        .unwrap();
    (summary, recorder)
}

#[test]
fn a_get_run_in_process_reports_each_file_and_returns_its_summary() {
    let s3 = TestS3::start(&[BUCKET]);
    let (big, small, bad) = (data(61, 3 * MIB + 5), data(62, 70_000), data(63, 1234));
    s3.put(BUCKET, "inproc/big.fits", &big);
    s3.put(BUCKET, "inproc/small.fits", &small);
    s3.put(BUCKET, "inproc/bad.fits", &bad);
    // The small file's body breaks once (resumed from the last byte); the bad one fails both
    // attempts `--retries 1` allows.
    s3.inject("GET", "inproc/small.fits", 1, Fault::Truncate(1000));
    s3.inject("GET", "inproc/bad.fits", 50, Fault::InternalError);
    let dir = tempfile::tempdir().unwrap();

    let (summary, rec) = get(&s3.endpoint, dir.path());
    let fetched = (big.len() + small.len()) as u64;
    assert_eq!(
        (summary.ok, summary.failed, summary.skipped, summary.bytes),
        (2, 1, 0, fetched)
    );
    assert_eq!(summary.exit_code(), 1, "a failed file fails the run");
    assert_eq!(summary.disk_full, None);
    assert_eq!(
        rec.outcomes(),
        [
            ("bad.fits".to_string(), Status::Failed, 0),
            ("big.fits".to_string(), Status::Ok, big.len() as u64),
            ("small.fits".to_string(), Status::Ok, small.len() as u64),
        ]
    );
    // Largest first; every byte received once, none given back.
    assert_eq!(rec.started.lock().unwrap()[0], "big.fits");
    assert_eq!(rec.started.lock().unwrap().len(), 3);
    assert_eq!(rec.received.load(Ordering::Relaxed), fetched);
    assert_eq!(rec.gave_back.load(Ordering::Relaxed), 0);
    assert_eq!(std::fs::read(dir.path().join("big.fits")).unwrap(), big);
    assert!(!dir.path().join("bad.fits").exists());

    // A rerun with the server healed: the two complete files are skipped (reported with their
    // bytes, none received), the failed one is fetched.
    s3.clear_faults();
    let (summary, rec) = get(&s3.endpoint, dir.path());
    assert_eq!(
        (summary.ok, summary.failed, summary.skipped, summary.bytes),
        (1, 0, 2, bad.len() as u64)
    );
    assert_eq!(summary.exit_code(), 0);
    assert_eq!(
        rec.outcomes(),
        [
            ("bad.fits".to_string(), Status::Ok, bad.len() as u64),
            ("big.fits".to_string(), Status::Skipped, big.len() as u64),
            (
                "small.fits".to_string(),
                Status::Skipped,
                small.len() as u64
            ),
        ]
    );
    assert_eq!(rec.received.load(Ordering::Relaxed), bad.len() as u64);
    assert_eq!(std::fs::read(dir.path().join("bad.fits")).unwrap(), bad);
}

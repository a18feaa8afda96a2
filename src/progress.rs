//! What a run tells people and machines while it works.
//!
//! Owns the indicatif bar (bytes, rate, ETA, files) on a terminal, a plain status line every few
//! seconds when stderr is not one (batch logs), the JSON-lines events of `--json` on stdout, the
//! per-file error lines and the end summary; notes about waits (`note`) are printed above its
//! bar. The only module that knows indicatif. Owns [`Reporter`], what the engine tells about a
//! run as it goes, which the display implements (and [`NoReport`], which shows nothing); the
//! engine knows only the trait, so a test can drive a run in-process and watch what it says.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::manifest::Status;
use crate::net::Tally;
use crate::note::{self, emit, Options};

/// Batch log systems keep a line every few seconds readable; more would drown the errors.
const LINE_INTERVAL: Duration = Duration::from_secs(5);
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub ok: u64,
    pub skipped: u64,
    pub failed: u64,
    pub excluded: u64,
    pub duplicate: u64,
    pub adopted: u64,
}

/// What a run tells as it goes: the engine reports through this, never to a terminal itself.
pub trait Reporter: Send + Sync {
    /// A file's first request is on its way (`bytes`: its size, when known).
    fn started(&self, _path: &str, _bytes: Option<u64>) {}
    /// Bytes received, kept from an earlier run, or given back by a file that starts again.
    fn bytes(&self, tally: Tally);
    /// A file reached its final state in this run, with its outcome.
    fn file_done(&self, ev: &FileEvent<'_>);
    /// A note for people (a restart, a proof weaker than usual).
    fn note(&self, msg: &str);
    /// An error that is not one file's outcome (the manifest cannot be written).
    fn error(&self, msg: &str);
}

/// Shows nothing: for runs nobody watches.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoReport;

impl Reporter for NoReport {
    fn bytes(&self, _tally: Tally) {}
    fn file_done(&self, _ev: &FileEvent<'_>) {}
    fn note(&self, _msg: &str) {}
    fn error(&self, _msg: &str) {}
}

pub(crate) struct Progress {
    opts: Options,
    bar: Option<ProgressBar>,
    start: Instant,
    total_files: u64,
    total_bytes: u64,
    /// Bytes of the plan now on disk (transferred, resumed or skipped).
    done_bytes: AtomicU64,
    /// Bytes received from the network in this run.
    transferred: AtomicU64,
    counts: Mutex<Counts>,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// One finished file, for the event stream and the error line.
#[derive(Debug)]
pub struct FileEvent<'a> {
    pub status: Status,
    pub path: &'a str,
    pub uri: &'a str,
    pub source: &'a str,
    pub bytes: u64,
    pub seconds: f64,
    pub message: Option<&'a str>,
    /// Said in a summary line instead of one error line a file (files a full disk stopped).
    pub quiet: bool,
}

fn human_bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

fn rate(bytes: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".into();
    }
    format!("{:.1} MB/s", bytes as f64 / secs / 1e6)
}

impl Progress {
    pub(crate) fn start(opts: Options, total_files: u64, total_bytes: u64) -> Arc<Progress> {
        let tty = std::io::stderr().is_terminal();
        let bar = (tty && !opts.quiet && !opts.no_progress).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} \
                     {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        note::print_above(bar.clone().map(|bar| {
            Box::new(move |line: String| bar.println(line)) as Box<dyn Fn(String) + Send>
        }));
        let p = Arc::new(Progress {
            opts,
            bar,
            start: Instant::now(),
            total_files,
            total_bytes,
            done_bytes: AtomicU64::new(0),
            transferred: AtomicU64::new(0),
            counts: Mutex::new(Counts::default()),
            ticker: Mutex::new(None),
        });
        p.update_message();
        let lines = !tty && !opts.quiet && !opts.no_progress;
        if lines || opts.json {
            let weak = Arc::downgrade(&p);
            let handle = tokio::spawn(async move {
                let mut tick = tokio::time::interval(LINE_INTERVAL);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(p) = weak.upgrade() else { return };
                    p.periodic(lines);
                }
            });
            *p.ticker.lock().unwrap() = Some(handle);
        }
        p
    }

    fn files_done(&self) -> u64 {
        let c = self.counts.lock().unwrap();
        c.ok + c.skipped + c.failed + c.excluded + c.duplicate + c.adopted
    }

    fn update_message(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{}/{} files", self.files_done(), self.total_files));
        }
    }

    fn periodic(&self, lines: bool) {
        let elapsed = self.start.elapsed().as_secs_f64();
        let done = self.done_bytes.load(Ordering::Relaxed);
        let transferred = self.transferred.load(Ordering::Relaxed);
        let files = self.files_done();
        if lines {
            eprintln!(
                "mastfetch: {files}/{} files, {}/{}, {}",
                self.total_files,
                human_bytes(done),
                human_bytes(self.total_bytes),
                rate(transferred, elapsed)
            );
        }
        if self.opts.json {
            emit(&json!({
                "event": "progress",
                "files_done": files,
                "files_total": self.total_files,
                "bytes_done": done,
                "bytes_total": self.total_bytes,
                "bytes_transferred": transferred,
                "seconds": elapsed,
            }));
        }
    }

    /// Bytes received from the network and written at their place.
    pub(crate) fn transferred(&self, n: u64) {
        self.transferred.fetch_add(n, Ordering::Relaxed);
        self.done(n);
    }

    /// Bytes that count as done without a transfer (resumed parts), or that no longer do
    /// (a restarted file gives back what it had).
    pub(crate) fn done(&self, n: u64) {
        self.done_bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    pub(crate) fn undone(&self, n: u64) {
        self.done_bytes.fetch_sub(n, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_position(bar.position().saturating_sub(n));
        }
    }

    /// A file reached its final state in this run.
    pub(crate) fn file(&self, ev: &FileEvent<'_>) {
        {
            let mut c = self.counts.lock().unwrap();
            match ev.status {
                Status::Ok => c.ok += 1,
                Status::Skipped => c.skipped += 1,
                Status::Failed => c.failed += 1,
                Status::Excluded => c.excluded += 1,
                Status::Duplicate => c.duplicate += 1,
                Status::Adopted => c.adopted += 1,
            }
        }
        if matches!(ev.status, Status::Skipped | Status::Adopted) {
            self.done(ev.bytes);
        }
        if ev.status == Status::Failed && !ev.quiet {
            self.error(&format!("{}: {}", ev.path, ev.message.unwrap_or("failed")));
        }
        if self.opts.json {
            emit(&json!({
                "event": "file",
                "status": ev.status,
                "path": ev.path,
                "uri": ev.uri,
                "source": ev.source,
                "bytes": ev.bytes,
                "seconds": ev.seconds,
                "message": ev.message,
            }));
        }
        self.update_message();
    }

    /// An error line, printed once, above the bar when there is one.
    pub(crate) fn error(&self, msg: &str) {
        let line = format!("mastfetch: error: {}", crate::text::escape(msg));
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// A note for humans (not shown with --quiet).
    pub(crate) fn note(&self, msg: &str) {
        if self.opts.quiet {
            return;
        }
        let msg = crate::text::escape(msg);
        match &self.bar {
            Some(bar) => bar.println(format!("mastfetch: {msg}")),
            None => eprintln!("mastfetch: {msg}"),
        }
    }

    fn counts(&self) -> Counts {
        *self.counts.lock().unwrap()
    }

    /// Stop the bar and ticker and print the summary line; returns the counts shown. (A `get`
    /// into DIR takes its exit code from the engine's `Summary`; the bucket mirror, `mirror`,
    /// still from these.)
    pub(crate) fn finish(&self) -> Counts {
        if let Some(h) = self.ticker.lock().unwrap().take() {
            h.abort();
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        note::print_above(None);
        let c = self.counts();
        let secs = self.start.elapsed().as_secs_f64();
        let transferred = self.transferred.load(Ordering::Relaxed);
        if !self.opts.quiet {
            let mut parts = vec![format!(
                "{} files ok ({} transferred in {:.1} s, {})",
                c.ok,
                human_bytes(transferred),
                secs,
                rate(transferred, secs)
            )];
            if c.skipped > 0 {
                parts.push(format!("{} skipped (already complete)", c.skipped));
            }
            if c.adopted > 0 {
                parts.push(format!(
                    "{} adopted (already in DIR, proven against the archive)",
                    c.adopted
                ));
            }
            if c.duplicate > 0 {
                parts.push(format!("{} duplicate", c.duplicate));
            }
            if c.excluded > 0 {
                parts.push(format!("{} excluded", c.excluded));
            }
            if c.failed > 0 {
                parts.push(format!("{} failed", c.failed));
            }
            if c.ok == 0 && c.failed == 0 && c.skipped + c.adopted > 0 {
                parts.push("nothing to transfer".into());
            }
            eprintln!("mastfetch: {}", parts.join(", "));
        }
        if self.opts.json {
            emit(&json!({
                "event": "summary",
                "ok": c.ok,
                "skipped": c.skipped,
                "failed": c.failed,
                "excluded": c.excluded,
                "duplicate": c.duplicate,
                "adopted": c.adopted,
                "bytes_transferred": transferred,
                "seconds": secs,
                "bytes_per_second": if secs > 0.0 { transferred as f64 / secs } else { 0.0 },
            }));
        }
        c
    }
}

impl Reporter for Progress {
    fn bytes(&self, tally: Tally) {
        match tally {
            Tally::Resumed(n) | Tally::Copied(n) => self.done(n),
            Tally::Received(n) => self.transferred(n),
            Tally::GaveBack(n) => self.undone(n),
        }
    }

    fn file_done(&self, ev: &FileEvent<'_>) {
        self.file(ev)
    }

    fn note(&self, msg: &str) {
        Progress::note(self, msg)
    }

    fn error(&self, msg: &str) {
        Progress::error(self, msg)
    }
}

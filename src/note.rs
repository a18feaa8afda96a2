//! What any module may tell the user at any time, without a progress display at hand.
//!
//! Owns the output options of a run (`--quiet`, `--no-progress`, `--json`), the notes about waits
//! (a retry, a slow or busy server) that come from deep inside planning and transfers, rate
//! limited to one per [`NOTE_INTERVAL`], and the writing of one JSON line to stdout whole. It
//! knows no terminal widgets: a progress display that draws on stderr registers a printer
//! ([`print_above`]) so notes appear above it.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

/// Notes about waits come at most this often: often enough that a waiting run is never silent
/// for long, rarely enough that a thousand retrying requests do not flood the terminal.
pub(crate) const NOTE_INTERVAL: Duration = Duration::from_secs(30);

/// How a run talks: `--quiet`, `--no-progress`, `--json`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    pub quiet: bool,
    pub no_progress: bool,
    pub json: bool,
}

/// Prints one line above a progress display.
type Printer = Box<dyn Fn(String) + Send>;

/// Where notes about waits go. Global because they come from deep inside planning and
/// transfers (a retry loop, a MAST poll) where no progress display is at hand.
struct WaitNotes {
    opts: Option<Options>,
    last: Option<Instant>,
    above: Option<Printer>,
}

static WAIT_NOTES: Mutex<WaitNotes> = Mutex::new(WaitNotes {
    opts: None,
    last: None,
    above: None,
});

fn wait_notes() -> std::sync::MutexGuard<'static, WaitNotes> {
    WAIT_NOTES.lock().unwrap_or_else(|e| e.into_inner())
}

/// How notes about waits are shown in this run (`--quiet` hides them; `--json` also emits
/// `{"event": "note"}`).
pub(crate) fn set_wait_notes(opts: Options) {
    wait_notes().opts = Some(opts);
}

/// While a progress display is on stderr, notes are printed through it (`None`: plain stderr).
pub(crate) fn print_above(printer: Option<Printer>) {
    wait_notes().above = printer;
}

/// Say why the run is waiting (a retry, a slow or busy server), unless a note was given less
/// than [`NOTE_INTERVAL`] ago.
pub(crate) fn wait_note(msg: &str) {
    let mut w = wait_notes();
    if w.last.is_some_and(|t| t.elapsed() < NOTE_INTERVAL) {
        return;
    }
    w.last = Some(Instant::now());
    let opts = w.opts.unwrap_or(Options {
        quiet: false,
        no_progress: false,
        json: false,
    });
    let msg = crate::text::escape(msg);
    if !opts.quiet {
        let line = format!("mastfetch: note: {msg}");
        match &w.above {
            Some(print) => print(line),
            None => eprintln!("{line}"),
        }
    }
    if opts.json {
        emit(&json!({"event": "note", "message": msg}));
    }
}

/// Write one JSON line to stdout in a single call, so lines never interleave.
pub(crate) fn emit(value: &serde_json::Value) {
    let mut line = value.to_string();
    line.push('\n');
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
        // The reader of `get --json | head` has what it wanted: end quietly, as ripgrep does.
        // Files already complete are in the manifest; partial ones resume on the next run.
        if is_broken_pipe(&e) {
            std::process::exit(0);
        }
    }
}

/// A write to a reader that has gone away (`| head`): the end of the output, not an error.
pub(crate) fn is_broken_pipe(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

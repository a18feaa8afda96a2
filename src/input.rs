//! The SELECTION: what the user named, parsed into items the resolver understands.
//!
//! Owns where items come from (arguments, `@FILE`, `@-`), reading an `@FILE` within
//! [`Limits`] (a binary, oversized or endless file stops the run: [`ReadError`]), and cutting
//! the echo of a bad file short. What one item is, is `item`'s; the `@file` formats are
//! `item_file`'s. A bad item is a problem naming its input and line; the good ones proceed.

use std::io::Read;

use crate::item::parse_one;
pub(crate) use crate::item::{Item, Parsed, Wanted};
use crate::item_file::parse_file;
pub(crate) use crate::item_file::parse_jsonl_line;
use crate::plan::Problem;
use crate::text;

/// An `@FILE` that cannot be read as a file of items: the whole run stops (exit 2), since
/// whatever it was meant to select is unknown.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("cannot read {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{what}: not a text file (a NUL byte at byte {offset}); @FILE takes a list of items, a \
         MAST curl script, a CSV export, a plan or a manifest"
    )]
    NotText { what: String, offset: u64 },
    #[error("{what}: larger than {limit} bytes, the most an @FILE may hold")]
    TooLarge { what: String, limit: u64 },
    #[error("{what}:{line}: a line longer than {limit} bytes: not a file of items")]
    LineTooLong { what: String, line: u64, limit: u64 },
    #[error("{what}: more than {limit} lines, the most an @FILE may hold")]
    TooManyLines { what: String, limit: u64 },
}

/// How much an `@FILE` may hold. The defaults are far above any real list (a million products
/// is ~100 MB) and far below what would exhaust memory or drown a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub max_bytes: u64,
    pub max_line: u64,
    pub max_lines: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1 << 30,
            max_line: 64 << 10,
            max_lines: 10_000_000,
        }
    }
}

impl Limits {
    /// The defaults, lowered (never raised) by `MASTFETCH_INPUT_MAX_BYTES`,
    /// `MASTFETCH_INPUT_MAX_LINE` and `MASTFETCH_INPUT_MAX_LINES` (for tests and tight hosts).
    pub(crate) fn from_env() -> Limits {
        let d = Limits::default();
        let var = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(default, |v| v.clamp(1, default))
        };
        Limits {
            max_bytes: var("MASTFETCH_INPUT_MAX_BYTES", d.max_bytes),
            max_line: var("MASTFETCH_INPUT_MAX_LINE", d.max_line),
            max_lines: var("MASTFETCH_INPUT_MAX_LINES", d.max_lines),
        }
    }
}

/// Bad lines of one @FILE echoed one by one; the rest are counted in one line (a binary file
/// or a wrong file would otherwise print one error per line).
const ECHOED_BAD_LINES: usize = 5;

/// Read an @FILE as text within `limits`, stopping at the first byte past one: a NUL (binary),
/// too many bytes, lines or bytes in a line. Invalid UTF-8 is replaced (and then fails as a
/// name); a leading BOM is dropped.
pub(crate) fn read_text(
    mut r: impl Read,
    what: &str,
    limits: &Limits,
) -> Result<String, ReadError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let (mut line_len, mut lines) = (0u64, 0u64);
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ReadError::Io {
                    what: what.to_string(),
                    source,
                })
            }
        };
        if buf.len() as u64 + n as u64 > limits.max_bytes {
            return Err(ReadError::TooLarge {
                what: what.to_string(),
                limit: limits.max_bytes,
            });
        }
        for (i, &b) in chunk[..n].iter().enumerate() {
            match b {
                0 => {
                    return Err(ReadError::NotText {
                        what: what.to_string(),
                        offset: (buf.len() + i) as u64,
                    })
                }
                b'\n' => {
                    lines += 1;
                    line_len = 0;
                    if lines > limits.max_lines {
                        return Err(ReadError::TooManyLines {
                            what: what.to_string(),
                            limit: limits.max_lines,
                        });
                    }
                }
                _ => {
                    line_len += 1;
                    if line_len > limits.max_line {
                        return Err(ReadError::LineTooLong {
                            what: what.to_string(),
                            line: lines + 1,
                            limit: limits.max_line,
                        });
                    }
                }
            }
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(text.strip_prefix('\u{FEFF}').unwrap_or(&text).to_string())
}

/// Parse the positional items; `@PATH` and `@-` read files (stdin) of items.
pub(crate) fn parse_items(args: &[String], limits: &Limits) -> Result<Parsed, ReadError> {
    let mut out = Parsed::default();
    for (i, arg) in args.iter().enumerate() {
        let origin = format!("argument {}", i + 1);
        if let Some(path) = arg.strip_prefix('@') {
            let (text, name) = if path == "-" {
                let text = read_text(std::io::stdin().lock(), "standard input", limits)?;
                (text, "stdin".to_string())
            } else {
                let file = std::fs::File::open(path).map_err(|source| ReadError::Io {
                    what: path.to_string(),
                    source,
                })?;
                (read_text(file, path, limits)?, path.to_string())
            };
            let before = out.problems.len();
            parse_file(&text, &name, &mut out);
            let bad = out.problems.len() - before;
            if bad > ECHOED_BAD_LINES {
                out.problems.truncate(before + ECHOED_BAD_LINES);
                out.problems.push(Problem {
                    item: text::escape(&name).into_owned(),
                    message: format!(
                        "{} more bad lines not shown ({bad} in all; is it a file of items?)",
                        bad - ECHOED_BAD_LINES
                    ),
                    entry: None,
                });
            }
        } else {
            parse_one(arg, &origin, &mut out);
        }
    }
    Ok(out)
}

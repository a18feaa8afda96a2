//! mastfetch: bulk, resumable, verifiable downloads of MAST data products, cloud-first.
//!
//! The library holds everything; `main.rs` only parses, runs and maps the outcome to an exit
//! code. Modules, in layers; each uses only the layers below it (and, within a layer, never in
//! a cycle):
//! - commands: `app` (the commands dispatched, their exit codes), `get_cmd` and `verify_cmd`
//!   (those commands), `planning` (what `plan` and `get` share), `cli` (the raw flags), `config`
//!   (the validated configuration built from them);
//! - planning and the engine: `resolve` (selection -> plan), `adopt` (mirrors other tools made),
//!   `complete` (what DIR already holds: `get`'s skip pass), `verify`, `transfer` (the engine:
//!   scheduling, restarts, MAST downloads) and the part protocol it drives (`parts`,
//!   `part_get`, `proof`, `resume`, `outcome`: the manifest lines, the report, the summary),
//!   `progress` (what a run shows; the `Reporter` the engine tells), `shard` (plan files read
//!   as a stream, sharded), `mirror` (a run into the user's bucket), `copy` (its server-side
//!   copy engine) and `mast_stream` (MAST-only products streamed into it);
//! - clients: `s3` (its object GETs in `s3_get`, its failures classified in `s3_error`),
//!   `https` (MAST downloads), `mast` (catalog API; its JSON read and written in `mast_rows`,
//!   `path_lookup` in `mast_lookup`), `bucket` (the user's destination bucket, signed);
//! - core: `input` (where selection items come from, @files read), `item` (one item),
//!   `item_file` (the @file formats), `manifest` (the manifest lines, writer and compaction),
//!   `index` (every manifest record of a folder, 24 bytes each, read back on demand), `plan`
//!   (entries, layouts, partition), `formats` (how a plan is printed), `names` (product naming
//!   rules), `query` (filters), `dest` (DIR: safe destinations, temporary names, the placement
//!   policy), `checksum` (what a file is proven against), `hashing` (the serial digests, read
//!   back), `fits`, `net` (what the HTTP clients share: user agent, timeouts, Content-Range, the
//!   body-to-file loop), `retry`, `throttle` (the run's shared request rate under SlowDown),
//!   `hedge` (when a slow GET is sent once more), `note` (notes and JSON lines any module may give), `text`
//!   (showing outside text and error chains safely).

pub mod adopt;
pub mod app;
pub mod bucket;
pub mod checksum;
pub mod cli;
pub mod complete;
pub mod config;
pub mod copy;
pub mod dest;
pub mod fits;
pub mod formats;
pub mod get_cmd;
pub mod hashing;
pub mod hedge;
pub mod https;
pub mod index;
pub mod input;
pub mod item;
pub mod item_file;
pub mod manifest;
pub mod mast;
pub mod mast_lookup;
pub mod mast_rows;
pub mod mast_stream;
pub mod mirror;
pub mod names;
pub mod net;
pub mod note;
pub mod outcome;
pub mod part_get;
pub mod parts;
pub mod plan;
pub mod planning;
pub mod progress;
pub mod proof;
pub mod query;
pub mod resolve;
pub mod resume;
pub mod retry;
pub mod s3;
pub mod s3_error;
pub mod s3_get;
pub mod shard;
pub mod text;
pub mod throttle;
pub mod transfer;
pub mod verify;
pub mod verify_cmd;

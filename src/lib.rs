//! mastfetch: bulk, resumable, verifiable downloads of MAST data products, cloud-first.
//!
//! The library holds everything; `main.rs` only parses, runs and maps the outcome to an exit
//! code. Modules, in layers; each uses only the layers below it (and, within a layer, never in
//! a cycle):
//! - commands: `app` (the three commands, the exit code), `cli` (flags -> validated config);
//! - planning and the engine: `resolve` (selection -> plan), `adopt` (mirrors other tools made),
//!   `complete` (what DIR already holds: `get`'s skip pass),
//!   `verify`, `transfer` (the engine), `progress` (what a run shows), `shard` (plan files read
//!   as a stream, sharded), `mirror` (a run into the user's bucket), `copy` (its
//!   server-side copy engine) and `mast_stream` (MAST-only products streamed into it);
//! - clients: `s3`, `https` (MAST downloads), `mast` (catalog API), `bucket` (the user's
//!   destination bucket, signed);
//! - core: `input` (selection items and @files), `manifest`, `plan` (entries, layouts,
//!   partition, formats), `names` (product naming rules), `query` (filters), `dest`
//!   (mastfetch's own names under DIR), `checksum` (what a file is proven against), `hashing`
//!   (the serial digests, read back), `fits`, `retry`, `throttle` (the run's shared request rate
//!   under SlowDown), `hedge` (when a slow GET is sent once more), `note` (notes and JSON lines any module
//!   may give), `text` (showing outside text and error chains safely).

pub mod adopt;
pub mod app;
pub mod bucket;
pub mod checksum;
pub mod cli;
pub mod complete;
pub mod copy;
pub mod dest;
pub mod fits;
pub mod hashing;
pub mod hedge;
pub mod https;
pub mod input;
pub mod manifest;
pub mod mast;
pub mod mast_stream;
pub mod mirror;
pub mod names;
pub mod note;
pub mod plan;
pub mod progress;
pub mod query;
pub mod resolve;
pub mod retry;
pub mod s3;
pub mod shard;
pub mod text;
pub mod throttle;
pub mod transfer;
pub mod verify;

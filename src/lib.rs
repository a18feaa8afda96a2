//! mastfetch: bulk, resumable, verifiable downloads of MAST data products, cloud-first.
//!
//! The library holds everything; `main.rs` only parses, runs and maps the outcome to an exit
//! code. Modules, in the order data flows through them: `cli` (flags -> config), `input`
//! (selection items and @files), `names` (product naming rules), `query` (filters), `mast`
//! (catalog API), `resolve` (selection -> plan), `plan` (entries, layouts, shards, formats),
//! `s3` and `https` (the two sources), `dest` (mastfetch's own names under DIR), `transfer` (the
//! engine), `checksum` (what a file is proven against, digests on arrival), `hashing` (the
//! serial digests, read back), `adopt` (mirrors other tools made), `shard` (which files a shard
//! takes), `manifest`, `verify`, `fits`, `progress`, `retry`, `text` (showing outside text
//! safely), and `app` (the commands).

pub mod adopt;
pub mod app;
pub mod checksum;
pub mod cli;
pub mod dest;
pub mod fits;
pub mod hashing;
pub mod https;
pub mod input;
pub mod manifest;
pub mod mast;
pub mod names;
pub mod plan;
pub mod progress;
pub mod query;
pub mod resolve;
pub mod retry;
pub mod s3;
pub mod shard;
pub mod text;
pub mod transfer;
pub mod verify;

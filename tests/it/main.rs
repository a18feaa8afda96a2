//! Integration tests, one binary: the real `mastfetch` against real protocol servers on
//! 127.0.0.1 (an in-process S3 server, a MAST stand-in answering in MAST's formats); one
//! (`inprocess`) drives a run through the library entry point instead of the binary.

mod mast_server;
mod s3server;
mod util;

mod adopt;
mod bucket;
mod full;
mod get;
mod hostile;
mod inprocess;
mod live;
mod mast;
mod output;
mod proof;
mod scale;

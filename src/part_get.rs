//! One part's ranged GET (step 2 of the design note in `transfer`): pinned to the file's ETag,
//! its answer checked (`check_response`: the status, the ETag, the Content-Range), its body
//! written at its offset while the part's digests are taken (`stream_body`, through
//! `net::body_to_file`), and a broken body resumed from the last byte received, retried per
//! request (`retry::Backoff`), not per file.
//!
//! Owns only those three steps; the file they belong to is `parts`' [`FileCtx`].

use std::sync::atomic::Ordering;

use crate::checksum::{Expect, PartDigest, PartHasher};
use crate::net::{self, BodyFault, ReadFault, Tally};
use crate::parts::{Fetcher, FileCtx, PartError};
use crate::retry::Backoff;
use crate::s3::{ErrorKind, S3Error};

impl Fetcher {
    /// One ranged GET (or the whole object), retried from the last byte received; returns the
    /// digests of its bytes, taken as they arrived.
    pub(crate) async fn fetch_part(
        &self,
        ctx: &FileCtx,
        part: u64,
    ) -> Result<PartDigest, PartError> {
        let (start, len) = ctx.part_range(part);
        if len == 0 {
            let expect = ctx.expect.get_or_init(|| self.expect_from_plan(ctx));
            return Ok(PartHasher::new(expect).finish());
        }
        let end = start + len - 1;
        let mut pos = 0u64;
        let mut backoff = Backoff::new(&self.retry);
        // Made at the first answer: a single GET learns there what to hash.
        let mut hasher: Option<PartHasher> = None;
        loop {
            let from = start + pos;
            let range = (!ctx.whole || pos > 0).then_some((from, end));
            let err = match self
                .s3
                .get(
                    &ctx.bucket,
                    &ctx.key,
                    range,
                    ctx.etag.get().map(String::as_str),
                )
                .await
            {
                Ok(resp) => {
                    self.check_response(ctx, &resp, range)?;
                    let h = hasher.get_or_insert_with(|| {
                        let expect = ctx.expect.get_or_init(|| {
                            if !self.verify {
                                return Expect::Nothing;
                            }
                            let etag = resp.etag.as_deref().or(ctx.etag.get().map(String::as_str));
                            Expect::from_published(resp.checksum.as_ref(), etag)
                        });
                        PartHasher::new(expect)
                    });
                    let (n, end) = self.stream_body(ctx, resp.body, from, len - pos, h).await;
                    pos += n;
                    match end {
                        // Every byte arrived; an error after them (a client layer's own
                        // checksum check at the end of a body) leaves the file's check to
                        // decide, and a retry would ask for an empty range.
                        _ if pos == len => return Ok(h.finish()),
                        Ok(()) => ctx.make_error(
                            ErrorKind::Transient,
                            format!("body ended after {n} bytes"),
                        ),
                        Err(PartError::S3(e)) => e,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => e,
            };
            if !backoff.wait(&err).await {
                return Err(err.into());
            }
        }
    }

    /// Is this the object we planned, and the bytes we asked for?
    pub(crate) fn check_response(
        &self,
        ctx: &FileCtx,
        resp: &crate::s3::GetResponse,
        range: Option<(u64, u64)>,
    ) -> Result<(), S3Error> {
        if let Some(got) = &resp.etag {
            let pinned = ctx.etag.get_or_init(|| got.clone());
            if pinned != got {
                return Err(ctx.make_error(
                    ErrorKind::Changed,
                    format!("ETag {pinned} was planned, {got} answered"),
                ));
            }
            ctx.note_etag(got);
        }
        match (range, resp.content_range) {
            (Some((start, end)), Some((s, e, total))) => {
                if total != ctx.size {
                    return Err(ctx.make_error(
                        ErrorKind::Changed,
                        format!("size {} was planned, {total} answered", ctx.size),
                    ));
                }
                if (s, e) != (start, end) {
                    return Err(ctx.make_error(
                        ErrorKind::Other,
                        format!("asked for bytes {start}-{end}, got {s}-{e}"),
                    ));
                }
            }
            (Some((start, end)), None) => {
                // Only acceptable when the range was the whole object.
                if !(start == 0 && end + 1 == ctx.size && resp.content_length == Some(ctx.size)) {
                    return Err(ctx.make_error(
                        ErrorKind::Other,
                        format!("asked for bytes {start}-{end}, the server ignored the range"),
                    ));
                }
            }
            (None, _) => {
                if let Some(n) = resp.content_length {
                    if n != ctx.size {
                        return Err(ctx.make_error(
                            ErrorKind::Changed,
                            format!("size {} was planned, {n} answered", ctx.size),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Write a body at its offset as chunks arrive, hashing each chunk on the way (the bytes
    /// are in cache now; reading them back later would cost a second pass). Returns the bytes
    /// written, and why the body stopped short if it did.
    pub(crate) async fn stream_body(
        &self,
        ctx: &FileCtx,
        mut body: crate::s3::Body,
        offset: u64,
        want: u64,
        hasher: &mut PartHasher,
    ) -> (u64, Result<(), PartError>) {
        let (got, end) = net::body_to_file(
            &self.retry,
            &mut body,
            &ctx.file,
            offset,
            Some(want),
            |chunk| {
                hasher.update(chunk);
                let n = chunk.len() as u64;
                ctx.counted.fetch_add(n, Ordering::Relaxed);
                self.report.bytes(Tally::Received(n));
            },
        )
        .await;
        let fault = match end {
            Ok(()) => return (got, Ok(())),
            Err(fault) => fault,
        };
        // A stalled, dripping or broken connection is retried on a new one, resuming from `got`.
        let err = match fault {
            BodyFault::Read(ReadFault::TooSlow(slow)) => {
                let mut e = ctx.make_error(ErrorKind::Transient, "body".into());
                e.source = Some(Box::new(slow));
                e.into()
            }
            BodyFault::Read(ReadFault::Broken(cause)) => {
                let mut e = ctx.make_error(ErrorKind::Transient, "body interrupted".into());
                e.source = Some(cause);
                e.into()
            }
            BodyFault::TooLong { limit } => ctx
                .make_error(
                    ErrorKind::Other,
                    format!("server sent more than the {limit} bytes asked"),
                )
                .into(),
            BodyFault::Disk(e) => crate::dest::disk("cannot write", &ctx.place.tmp)(e).into(),
        };
        (got, Err(err))
    }
}

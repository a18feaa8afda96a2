//! GETs of the bucket's objects: the plain HTTP client of anonymous GETs (the SDK for signed
//! ones), each GET paced by the run's shared rate under SlowDown (`throttle`) and sent once more
//! when its answer is far later than its peers' (`hedge`).
//!
//! Owns the plain client's construction (its read buffers from one budget), a GET's request
//! (range, If-Match, checksum mode), and what a refused plain GET means. It does not write
//! files (`part_get` does) nor retry other failures (the caller resumes from what it has).

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumMode, ChecksumType};
use http_body_util::{BodyDataStream, BodyExt, Empty};
use std::sync::atomic::Ordering;

use crate::checksum::Published;
use crate::net::{self, parse_content_range, ANSWER_TIMEOUT};
use crate::s3::{normalize_etag, throttled, Body, GetResponse, LeanClient, S3};
use crate::s3_error::{classify_status, Answer, BoxError, Detail, ErrorKind, S3Error};

fn sdk_body(body: ByteStream) -> Body {
    Box::pin(futures::stream::unfold(body, |mut b| async move {
        let next = b.next().await?;
        Some((next.map_err(|e| Box::new(e) as BoxError), b))
    }))
}

impl S3 {
    /// Start a GET of `key`, optionally of `range` (inclusive end) and pinned to `if_match`.
    /// A whole-object GET asks for the full-object checksum (free in the answer's headers).
    /// Not retried here (but for throttles, which the run's shared rate answers): the caller
    /// resumes from the bytes it already has.
    pub(crate) async fn get(
        &self,
        bucket: &str,
        key: &str,
        range: Option<(u64, u64)>,
        if_match: Option<&str>,
    ) -> Result<GetResponse, S3Error> {
        let send = || self.get_hedged(bucket, key, range, if_match);
        self.throttle.run(send, throttled).await
    }

    /// One GET, sent once more if its answer is far later than its peers' (`hedge`); the first
    /// answer wins and the other request is dropped (its connection closed, its body unread).
    /// Not while the run is throttled: a second request would add to what S3 asked us to cut.
    async fn get_hedged(
        &self,
        bucket: &str,
        key: &str,
        range: Option<(u64, u64)>,
        if_match: Option<&str>,
    ) -> Result<GetResponse, S3Error> {
        let started = tokio::time::Instant::now();
        self.hedge.sent();
        let res = self.first_answer(bucket, key, range, if_match).await;
        self.hedge.answered(started.elapsed());
        res
    }

    /// The GET's answer, or, when it is late and the hedge budget allows, the first of it and
    /// one more request for the same bytes.
    async fn first_answer(
        &self,
        bucket: &str,
        key: &str,
        range: Option<(u64, u64)>,
        if_match: Option<&str>,
    ) -> Result<GetResponse, S3Error> {
        let mut first = std::pin::pin!(self.get_once(bucket, key, range, if_match));
        let Some(after) = self.hedge.threshold() else {
            return first.await;
        };
        if let Ok(res) = tokio::time::timeout(after, &mut first).await {
            return res;
        }
        if self.throttle.limited() || !self.hedge.take() {
            return first.await;
        }
        let second = std::pin::pin!(self.get_once(bucket, key, range, if_match));
        futures::future::select(first, second)
            .await
            .factor_first()
            .0
    }

    async fn get_once(
        &self,
        bucket: &str,
        key: &str,
        range: Option<(u64, u64)>,
        if_match: Option<&str>,
    ) -> Result<GetResponse, S3Error> {
        self.stats.gets.fetch_add(1, Ordering::Relaxed);
        if let Some(http) = &self.lean {
            return self.lean_get(http, bucket, key, range, if_match).await;
        }
        let mut req = self.client.get_object().bucket(bucket).key(key);
        match range {
            Some((start, end)) => req = req.range(format!("bytes={start}-{end}")),
            None => req = req.checksum_mode(ChecksumMode::Enabled),
        }
        if let Some(etag) = if_match {
            req = req.if_match(format!("\"{etag}\""));
        }
        let out = match tokio::time::timeout(ANSWER_TIMEOUT, req.send()).await {
            Err(_) => return Err(self.timeout("GET", bucket, key)),
            Ok(r) => r.map_err(|e| self.error("GET", bucket, key, e))?,
        };
        let composite = matches!(out.checksum_type(), Some(ChecksumType::Composite));
        // Some servers send the whole object's value on a ranged answer too: never take it there.
        let checksum = range.is_none().then(|| {
            Published::from_headers(|name| match name {
                "x-amz-checksum-type" => composite.then_some("COMPOSITE"),
                "x-amz-checksum-crc64nvme" => out.checksum_crc64_nvme(),
                "x-amz-checksum-crc32c" => out.checksum_crc32_c(),
                "x-amz-checksum-crc32" => out.checksum_crc32(),
                "x-amz-checksum-sha256" => out.checksum_sha256(),
                "x-amz-checksum-sha1" => out.checksum_sha1(),
                _ => None,
            })
        });
        Ok(GetResponse {
            content_length: out.content_length().map(|l| l.max(0) as u64),
            content_range: out.content_range().and_then(parse_content_range),
            etag: out.e_tag().map(normalize_etag),
            checksum: checksum.flatten(),
            body: sdk_body(out.body),
        })
    }

    /// An unsigned GET, with the same checks and error kinds as the SDK's.
    async fn lean_get(
        &self,
        http: &LeanClient,
        bucket: &str,
        key: &str,
        range: Option<(u64, u64)>,
        if_match: Option<&str>,
    ) -> Result<GetResponse, S3Error> {
        use http::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_MATCH, RANGE, USER_AGENT};
        let fail = |kind, detail: Detail, source: Option<BoxError>| {
            let mut err = S3::make_error("GET", bucket, key, kind, detail);
            err.source = source;
            err
        };
        let mut req = http::Request::get(self.url(bucket, key)).header(USER_AGENT, net::USER_AGENT);
        match range {
            Some((start, end)) => req = req.header(RANGE, format!("bytes={start}-{end}")),
            None => req = req.header("x-amz-checksum-mode", "ENABLED"),
        }
        if let Some(etag) = if_match {
            req = req.header(IF_MATCH, format!("\"{etag}\""));
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| fail(ErrorKind::Other, Detail::None, Some(Box::new(e))))?;
        let resp = match tokio::time::timeout(ANSWER_TIMEOUT, http.request(req)).await {
            Err(_) => return Err(self.timeout("GET", bucket, key)),
            Ok(Err(e)) => {
                let kind = self.transport_kind(&e);
                return Err(fail(kind, self.host_detail(kind), Some(Box::new(e))));
            }
            Ok(Ok(r)) => r,
        };
        let (head, body) = resp.into_parts();
        let status = head.status.as_u16();
        if !(200..300).contains(&status) {
            let (kind, answer) = refusal(status, body).await;
            return Err(fail(kind, answer, None));
        }
        let header = |name| head.headers.get(name).and_then(|v| v.to_str().ok());
        use futures::TryStreamExt;
        Ok(GetResponse {
            content_length: header(CONTENT_LENGTH).and_then(|v| v.parse().ok()),
            content_range: header(CONTENT_RANGE).and_then(parse_content_range),
            etag: header(ETAG).map(normalize_etag),
            checksum: range
                .is_none()
                .then(|| {
                    Published::from_headers(|name| {
                        head.headers.get(name).and_then(|v| v.to_str().ok())
                    })
                })
                .flatten(),
            body: Box::pin(BodyDataStream::new(body).map_err(|e| Box::new(e) as BoxError)),
        })
    }
}

/// What a refused plain GET means, from its status and the small XML body in which S3 says
/// what went wrong (`<Code>SlowDown</Code>`).
async fn refusal<B: BodyExt>(status: u16, body: B) -> (ErrorKind, Detail) {
    let text = match tokio::time::timeout(ANSWER_TIMEOUT, body.collect()).await {
        Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        _ => String::new(),
    };
    let code = text
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map_or("", |(code, _)| code);
    let answer = Detail::Answer(Box::new(Answer {
        status,
        code: code.to_string(),
        message: None,
    }));
    (classify_status(status, code), answer)
}

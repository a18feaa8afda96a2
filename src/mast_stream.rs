//! MAST-only products into the user's bucket (`get --dest s3://`): what the archive's bucket
//! does not hold (exclusive access, not yet copied there) cannot be copied server-side, so
//! MAST's answer is streamed into a multipart upload, part by part, never to disk.
//!
//! Owns reading MAST's body into parts ([`STREAM_PART_SIZE`], one in memory per stream), each
//! part's CRC-64/NVME sent with it (S3 checks it on arrival), the whole object's CRC-64/NVME
//! given to CompleteMultipartUpload (S3 refuses an object that differs) and compared with what
//! the destination then states, and the retry of a broken stream from its start (its upload
//! aborted first). The copy engine (`copy`) owns the budget, the uploads' bookkeeping and the
//! records.

use aws_sdk_s3::types::CompletedPart;

use crate::checksum::{self, CrcAlg};
use crate::copy::{dummy, part_size_for, Copier, CopyError, Proof};
use crate::https::{HttpsError, MastHttps};
use crate::net::Tally;
use crate::plan::PlanEntry;

/// Part size of a MAST stream into the bucket: each stream holds one part in memory.
const STREAM_PART_SIZE: u64 = 16 << 20;

impl Copier {
    pub(crate) async fn stream_from_mast(
        &self,
        f: &PlanEntry,
        key: &str,
    ) -> Result<Proof, CopyError> {
        let Some(mast) = self.mast.clone() else {
            return Err(CopyError::NoMast { uri: f.uri.clone() });
        };
        let _turn = self.streams.acquire().await.expect("semaphore open");
        self.retry.run(|| self.stream_once(&mast, f, key)).await
    }

    /// One attempt: MAST's answer read part by part into a multipart upload, each part with
    /// its CRC-64/NVME, the whole object's CRC given to CompleteMultipartUpload (S3 refuses a
    /// mismatch) and compared with what the destination then states.
    async fn stream_once(
        &self,
        mast: &MastHttps,
        f: &PlanEntry,
        key: &str,
    ) -> Result<Proof, CopyError> {
        let resp = {
            let _permit = self.jobs.acquire().await.expect("semaphore open");
            mast.open(&f.url).await?
        };
        let upload = self.start_upload(key).await?;
        let mut sent = 0u64;
        let res = self.send_parts(resp, f, key, &upload, &mut sent).await;
        let (parts, crc) = match res {
            Ok(v) => v,
            Err(e) => {
                self.report.bytes(Tally::GaveBack(sent));
                let _ = self
                    .finish_upload(key, &upload, Err(dummy(key)), None)
                    .await;
                return Err(e);
            }
        };
        let local = checksum::crc64_b64(crc);
        let done = self
            .finish_upload(key, &upload, Ok(parts), Some(&local))
            .await;
        let (copy_etag, stated) = match done {
            Ok(v) => v,
            Err(e) => {
                self.report.bytes(Tally::GaveBack(sent));
                return Err(e);
            }
        };
        let stated = match stated {
            Some(c) => c,
            None => self.stored(key).await?.crc64nvme.unwrap_or_default(),
        };
        if self.verify && stated != local {
            self.discard(key).await;
            self.report.bytes(Tally::GaveBack(sent));
            return Err(CopyError::Mismatch {
                what: format!("s3://{}/{key}", self.dest.name()),
                field: "CRC-64/NVME",
                got: stated,
                want: local,
            });
        }
        Ok(Proof {
            size: sent,
            etag: None,
            checksum: None,
            verified: if self.verify { "size" } else { "none" },
            crc64nvme: Some(local),
            copy_etag,
        })
    }

    /// Read MAST's body into parts and upload each; the parts and the whole CRC-64/NVME.
    async fn send_parts(
        &self,
        resp: reqwest::Response,
        f: &PlanEntry,
        key: &str,
        upload: &str,
        sent: &mut u64,
    ) -> Result<(Vec<CompletedPart>, u64), CopyError> {
        let part_size = part_size_for(f.size.unwrap_or(0), STREAM_PART_SIZE) as usize;
        let alg = CrcAlg::Crc64Nvme;
        let mut body = resp.bytes_stream();
        let mut dog = crate::retry::Watchdog::new(&self.retry);
        let mut buf = bytes::BytesMut::with_capacity(part_size);
        let (mut parts, mut crcs) = (Vec::new(), Vec::new());
        let body_err = |what, source| HttpsError::Request {
            url: f.url.clone(),
            what,
            source,
        };
        loop {
            let chunk = match dog.next(&mut body).await {
                Err(source) => {
                    let url = f.url.clone();
                    return Err(HttpsError::TooSlow { url, source }.into());
                }
                Ok(Some(Err(e))) => return Err(body_err("body interrupted", Some(e)).into()),
                Ok(Some(Ok(c))) => Some(c),
                Ok(None) => None,
            };
            let end = chunk.is_none();
            if let Some(c) = chunk {
                *sent += c.len() as u64;
                self.report.bytes(Tally::Received(c.len() as u64));
                buf.extend_from_slice(&c);
            }
            // The last part may be short (or empty, for an empty product: S3 takes one part).
            while buf.len() >= part_size || (end && (!buf.is_empty() || parts.is_empty())) {
                let take = buf.len().min(part_size);
                let part = buf.split_to(take).freeze();
                let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, &part);
                let n = parts.len() as i32 + 1;
                let _permit = self.jobs.acquire().await.expect("semaphore open");
                let b64 = alg.encode(crc);
                crcs.push((crc, part.len() as u64));
                parts.push(self.dest.upload_part(key, upload, n, part, &b64).await?);
                if buf.is_empty() {
                    break;
                }
            }
            if end {
                break;
            }
        }
        if let Some(want) = f.size.filter(|&w| w != *sent) {
            let url = f.url.clone();
            return Err(HttpsError::Size {
                url,
                got: *sent,
                want,
            }
            .into());
        }
        Ok((parts, alg.combine(crcs)))
    }
}

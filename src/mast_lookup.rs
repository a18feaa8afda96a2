//! MAST's `path_lookup`: the cloud keys of product URIs, asked 40 URIs a request
//! ([`PATH_LOOKUP_BATCH`]: longer URLs get HTTP 414), batches in parallel, a batch MAST still
//! finds too long split in two, and a failed batch leaving its URIs unknown rather than
//! failing the lookup. The client and its `invoke` protocol are `mast`'s; reading the answer
//! is `mast_rows`'.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use futures::stream::{self, StreamExt};
use serde_json::Value;

use crate::mast::{BoxFut, Mast, MastError, PATH_LOOKUP, PATH_LOOKUP_BATCH};
use crate::mast_rows::{parse_lookup, LookupMap};

impl Mast {
    /// Cloud keys of product URIs: `Some(key)` (no leading `/`) or `None` when not in the cloud
    /// (or when MAST's path is not a safe key). A URI whose batch failed after retries is left
    /// out of the map (unknown); the call fails only when every batch failed.
    pub(crate) async fn path_lookup(
        &self,
        uris: &[String],
    ) -> Result<HashMap<String, Option<String>>, MastError> {
        let mut seen = HashSet::new();
        let unique: Vec<String> = uris
            .iter()
            .filter(|u| seen.insert(u.as_str()))
            .cloned()
            .collect();
        if unique.is_empty() {
            return Ok(HashMap::new());
        }
        let results: Vec<Result<HashMap<String, Option<String>>, MastError>> =
            stream::iter(unique.chunks(PATH_LOOKUP_BATCH).map(<[String]>::to_vec))
                .map(|batch| self.lookup_batch(batch))
                .buffer_unordered(self.parallel)
                .collect()
                .await;
        let mut out = HashMap::with_capacity(unique.len());
        let mut last_err = None;
        let mut any_ok = false;
        for r in results {
            match r {
                Ok(m) => {
                    any_ok = true;
                    out.extend(m);
                }
                Err(e) => {
                    self.counters
                        .failed_path_lookups
                        .fetch_add(1, Ordering::Relaxed);
                    last_err = Some(e);
                }
            }
        }
        match last_err {
            Some(e) if !any_ok => Err(e),
            _ => Ok(out),
        }
    }

    /// One batch, retried; split in two when MAST finds the URL too long anyway.
    fn lookup_batch(&self, uris: Vec<String>) -> BoxFut<'_, Result<LookupMap, MastError>> {
        Box::pin(async move {
            match self.retry.run(|| self.lookup_once(&uris)).await {
                Err(MastError::Status { status: 414, .. }) if uris.len() > 1 => {
                    let (a, b) = uris.split_at(uris.len() / 2);
                    let (a, b) = futures::try_join!(
                        self.lookup_batch(a.to_vec()),
                        self.lookup_batch(b.to_vec())
                    )?;
                    let mut m = a;
                    m.extend(b);
                    Ok(m)
                }
                other => other,
            }
        })
    }

    async fn lookup_once(&self, uris: &[String]) -> Result<LookupMap, MastError> {
        let mut url = self
            .base
            .join("api/v0.1/path_lookup/")
            .expect("static path joins");
        {
            let mut q = url.query_pairs_mut();
            for u in uris {
                q.append_pair("uri", u);
            }
            q.append_pair("use_cloud_path", "True");
        }
        // Errors name the endpoint, not the 40 URIs of the query string.
        let shown = {
            let mut u = url.clone();
            u.set_query(None);
            u.to_string()
        };
        self.counters.path_lookups.fetch_add(1, Ordering::Relaxed);
        let what = format!("MAST {PATH_LOOKUP} ({shown})");
        let resp = crate::retry::noting(&what, self.client.get(url).send())
            .await
            .map_err(|source| MastError::Request {
                service: PATH_LOOKUP,
                url: shown.clone(),
                source: source.without_url(),
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(MastError::Status {
                service: PATH_LOOKUP,
                url: shown,
                status: status.as_u16(),
            });
        }
        let body = self.body(PATH_LOOKUP, &shown, resp).await?;
        let value: Value = serde_json::from_slice(&body).map_err(|source| MastError::Decode {
            service: PATH_LOOKUP,
            url: shown,
            source,
        })?;
        Ok(parse_lookup(&value, uris))
    }
}

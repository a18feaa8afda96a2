//! The MAST catalog API: observation and product queries, and the URI -> cloud key lookup.
//!
//! (Interface only for now; being implemented.)

use std::collections::HashMap;

use reqwest::Url;

use crate::query::{ProductRow, Query};
use crate::retry::RetryPolicy;

#[derive(Debug, thiserror::Error)]
pub enum MastError {
    #[error("MAST query support is not implemented yet")]
    NotImplemented,
}

/// Requests made, by kind, for the plan summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct MastStats {
    pub observation_requests: u64,
    pub product_requests: u64,
    pub path_lookups: u64,
}

pub struct Mast {
    pub base: Url,
}

impl Mast {
    pub fn new(base: Url, _retry: RetryPolicy, _parallel: usize) -> reqwest::Result<Mast> {
        Ok(Mast { base })
    }

    /// Cloud keys of product URIs: `Some(key)` (no leading `/`) or `None` when not in the cloud.
    pub async fn path_lookup(
        &self,
        _uris: &[String],
    ) -> Result<HashMap<String, Option<String>>, MastError> {
        Err(MastError::NotImplemented)
    }

    /// Products matching the query: observations, then their products, de-duplicated by
    /// dataURI, filtered by [`Query::accepts_row`].
    pub async fn products(&self, _q: &Query) -> Result<Vec<ProductRow>, MastError> {
        Err(MastError::NotImplemented)
    }

    pub fn stats(&self) -> MastStats {
        MastStats::default()
    }
}

//! Turning a selection into a plan: the only place that decides where each file comes from.
//!
//! Owns the catalog choice for queries (MAST or a bucket listing), the confirmation of derived
//! keys with one paginated listing per distinct folder shared by every file in it (never a HEAD
//! per file), the batched MAST path lookup for what the naming rules miss, and the fallback to
//! MAST HTTPS for what the bucket does not hold or may not serve (exclusive access).

use std::collections::{BTreeSet, HashMap};

use futures::stream::{self, StreamExt, TryStreamExt};
use reqwest::Url;

use crate::https::MastHttps;
use crate::input::{Item, Parsed, Wanted};
use crate::mast::Mast;
use crate::names::{self, Product};
use crate::plan::{Layout, Placement, Plan, PlanEntry, PlanIndex, Problem, Source};
use crate::query::{Catalog, Query};
use crate::s3::{ObjectInfo, S3Error, S3};

pub struct Resolver<'a> {
    pub s3: &'a S3,
    /// The catalog API; `None` when MAST must not be asked (`--s3-only` without a query).
    pub mast: Option<&'a Mast>,
    pub mast_base: Url,
    pub layout: Layout,
    pub s3_only: bool,
    pub mast_only: bool,
    pub query: Query,
    pub catalog: Catalog,
    /// Listings in flight at once.
    pub parallel: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("listing the bucket failed")]
    List(#[from] S3Error),
    #[error("the MAST query failed")]
    Mast(#[source] crate::mast::MastError),
    #[error("--catalog s3 cannot answer {0}; use --catalog mast or auto")]
    CatalogS3(&'static str),
    #[error("--s3-only and --catalog mast: {0}")]
    Conflict(&'static str),
}

/// What became of one wanted product.
enum Slot {
    Entry(PlanEntry),
    Problem(Problem),
    Many(Vec<PlanEntry>),
}

/// The folder a key sits in, with its trailing `/` (the prefix of a shallow listing).
fn folder_of(key: &str) -> &str {
    key.rfind('/').map_or("", |i| &key[..=i])
}

impl Resolver<'_> {
    pub async fn resolve(&self, parsed: Parsed) -> Result<Plan, ResolveError> {
        let mut plan = Plan {
            problems: parsed.problems,
            ..Plan::default()
        };
        let mut items = parsed.items;
        let query_start = items.len();
        if self.query.is_query() {
            let (catalog, found) = self.run_query().await?;
            plan.catalog = Some(catalog.to_string());
            items.extend(found);
        }
        let (slots, notes) = self.resolve_items(&items, query_start).await?;
        plan.notes = notes;
        if self.query.is_query() {
            let matched: usize = slots[query_start..]
                .iter()
                .map(|s| match s {
                    Slot::Many(v) => v.len(),
                    _ => 1,
                })
                .sum();
            if matched == 0 {
                plan.notes.push("the query matched no products".into());
            }
        }
        let mut index = PlanIndex::default();
        for slot in slots {
            match slot {
                Slot::Entry(e) => plan.push(e, &mut index),
                Slot::Many(es) => {
                    for e in es {
                        plan.push(e, &mut index);
                    }
                }
                Slot::Problem(p) => plan.problems.push(p),
            }
        }
        Ok(plan)
    }

    /// Answer `--program` & co. from MAST, or from a listing when file names suffice.
    async fn run_query(&self) -> Result<(&'static str, Vec<Item>), ResolveError> {
        let by_listing = match self.catalog {
            Catalog::S3 => {
                if !self.query.s3_answerable() {
                    return Err(ResolveError::CatalogS3(
                        "--instrument, --calib-level, --product-type, --recommended or a query \
                         without --program",
                    ));
                }
                true
            }
            Catalog::Mast => false,
            Catalog::Auto => self.query.s3_answerable() && !self.mast_only,
        };
        if by_listing {
            let mut items = Vec::new();
            for program in &self.query.programs {
                items.push(Item::Prefix {
                    bucket: self.s3.bucket.clone(),
                    prefix: format!("jwst/public/jw{program:05}/"),
                    origin: format!("--program {program}"),
                });
            }
            return Ok(("s3", items));
        }
        let Some(mast) = self.mast else {
            return Err(ResolveError::Conflict("the query needs MAST's catalog"));
        };
        let rows = mast
            .products(&self.query)
            .await
            .map_err(ResolveError::Mast)?;
        let items = rows
            .into_iter()
            .filter_map(|row| {
                let product = Product::from_uri(&row.data_uri)?;
                Some(Item::Product(Wanted {
                    product,
                    obs_id: row.obs_id,
                    size: row.size,
                    access: row.data_rights,
                    key: None,
                    origin: "MAST query".into(),
                }))
            })
            .collect();
        Ok(("mast", items))
    }

    /// `items[query_start..]` are what a query found; the rest the user named.
    async fn resolve_items(
        &self,
        items: &[Item],
        query_start: usize,
    ) -> Result<(Vec<Slot>, Vec<String>), ResolveError> {
        let mut notes = Vec::new();
        // Which folder each wanted product should be in, and the distinct folders to list.
        let mut candidates: Vec<Option<(String, String)>> = vec![None; items.len()];
        let mut folders: BTreeSet<(String, String)> = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let Item::Product(w) = item else { continue };
            if self.mast_only || w.access.as_deref() == Some("EXCLUSIVE_ACCESS") {
                continue;
            }
            let key = w
                .key
                .clone()
                .or_else(|| w.product.derive().map(|d| (self.s3.bucket.clone(), d.key)));
            if let Some((bucket, key)) = key {
                folders.insert((bucket.clone(), folder_of(&key).to_string()));
                candidates[i] = Some((bucket, key));
            }
        }
        let mut found = self.list_folders(folders).await?;

        // What the naming rules missed: ask MAST where it is, in batches, then confirm.
        let missing: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(i, item)| {
                matches!(item, Item::Product(w) if !self.mast_only
                    && w.access.as_deref() != Some("EXCLUSIVE_ACCESS"))
                    && candidates[*i]
                        .as_ref()
                        .is_none_or(|c| !found.contains_key(c))
            })
            .map(|(i, _)| i)
            .collect();
        if let (false, Some(mast)) = (missing.is_empty(), self.mast) {
            let uris: Vec<String> = missing
                .iter()
                .filter_map(|&i| match &items[i] {
                    Item::Product(w) => Some(w.product.uri.clone()),
                    _ => None,
                })
                .collect();
            // A failed lookup only means we fall back to MAST downloads for these; say so.
            let keys = match mast.path_lookup(&uris).await {
                Ok(keys) => keys,
                Err(e) => {
                    notes.push(format!(
                        "MAST path lookup failed ({}); {} products not found by name will come from MAST over HTTPS",
                        crate::transfer::chain(&e),
                        uris.len()
                    ));
                    HashMap::new()
                }
            };
            if mast.stats().failed_path_lookups > 0 && !keys.is_empty() {
                notes.push(
                    "some MAST path lookups failed; those products will come from MAST over HTTPS"
                        .into(),
                );
            }
            let mut new_folders = BTreeSet::new();
            for &i in &missing {
                let Item::Product(w) = &items[i] else {
                    continue;
                };
                if let Some(Some(key)) = keys.get(&w.product.uri) {
                    let c = (self.s3.bucket.clone(), key.clone());
                    let folder = (c.0.clone(), folder_of(key).to_string());
                    if !found.contains_key(&c) {
                        new_folders.insert(folder);
                    }
                    candidates[i] = Some(c);
                }
            }
            found.extend(self.list_folders(new_folders).await?);
        }

        let mut slots = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            slots.push(match item {
                Item::Planned(p) => Slot::Entry(p.clone()),
                Item::Prefix {
                    bucket,
                    prefix,
                    origin,
                } => {
                    self.list_prefix(bucket, prefix, origin, i >= query_start)
                        .await?
                }
                Item::Product(w) => {
                    let obj = candidates[i].as_ref().and_then(|c| found.get(c));
                    match obj {
                        Some(obj) => {
                            Slot::Entry(self.s3_entry(w, &candidates[i].as_ref().unwrap().0, obj))
                        }
                        None => self.not_in_bucket(w),
                    }
                }
            });
        }
        Ok((slots, notes))
    }

    /// One shallow, paginated listing per folder, several folders at once.
    async fn list_folders(
        &self,
        folders: BTreeSet<(String, String)>,
    ) -> Result<HashMap<(String, String), ObjectInfo>, ResolveError> {
        let listings: Vec<(String, Vec<ObjectInfo>)> = stream::iter(folders)
            .map(|(bucket, folder)| async move {
                let objs = self.s3.list(&bucket, &folder, true).await?;
                Ok::<_, S3Error>((bucket, objs))
            })
            .buffer_unordered(self.parallel.max(1))
            .try_collect()
            .await?;
        let mut found = HashMap::new();
        for (bucket, objs) in listings {
            for o in objs {
                found.insert((bucket.clone(), o.key.clone()), o);
            }
        }
        Ok(found)
    }

    fn placement_dest(
        &self,
        collection: &str,
        obs_id: Option<&str>,
        filename: &str,
        key: Option<&str>,
    ) -> String {
        self.layout.dest(&Placement {
            collection,
            obs_id,
            filename,
            key,
        })
    }

    fn s3_entry(&self, w: &Wanted, bucket: &str, obj: &ObjectInfo) -> PlanEntry {
        let p = &w.product;
        PlanEntry {
            uri: p.uri.clone(),
            filename: p.filename.clone(),
            source: Source::S3,
            bucket: Some(bucket.to_string()),
            key: Some(obj.key.clone()),
            url: self.s3.url(bucket, &obj.key),
            size: Some(obj.size),
            etag: obj.etag.clone(),
            access: Some(w.access.clone().unwrap_or_else(|| "PUBLIC".into())),
            dest: self.placement_dest(
                &p.collection,
                w.obs_id.as_deref(),
                &p.filename,
                Some(&obj.key),
            ),
        }
    }

    fn not_in_bucket(&self, w: &Wanted) -> Slot {
        let p = &w.product;
        let entry = PlanEntry {
            uri: p.uri.clone(),
            filename: p.filename.clone(),
            source: Source::Mast,
            bucket: None,
            key: None,
            url: MastHttps::download_url(&self.mast_base, &p.uri),
            size: w.size,
            etag: None,
            access: w.access.clone(),
            dest: self.placement_dest(&p.collection, w.obs_id.as_deref(), &p.filename, None),
        };
        if self.s3_only {
            return Slot::Problem(Problem {
                item: format!("{}: {}", w.origin, crate::text::shown(&p.uri)),
                message: "not in cloud (--s3-only: no MAST fallback)".into(),
                entry: Some(entry),
            });
        }
        Slot::Entry(entry)
    }

    /// Every object under a prefix (recursive), filtered by `--match`/`--exclude`/`--suffix`.
    async fn list_prefix(
        &self,
        bucket: &str,
        prefix: &str,
        origin: &str,
        from_query: bool,
    ) -> Result<Slot, ResolveError> {
        let objs = self.s3.list(bucket, prefix, false).await?;
        let listed = objs.len();
        let mut entries = Vec::new();
        for o in objs {
            if o.key.ends_with('/') {
                continue; // folder markers
            }
            let filename = o.key.rsplit('/').next().unwrap_or(&o.key).to_string();
            let product = names::uri_for_key(&o.key);
            let obs_id = product.as_ref().and_then(|p| p.derive()).map(|d| d.obs_id);
            let filter = Query {
                // Guide stars are left out of queries, not out of an explicit prefix.
                include_guidestars: !from_query || self.query.include_guidestars,
                obs_id: if from_query {
                    self.query.obs_id.clone()
                } else {
                    None
                },
                ..self.query.clone()
            };
            if !filter.accepts_filename(&filename, obs_id.as_deref()) {
                continue;
            }
            let collection = product.as_ref().map_or_else(
                || o.key.split('/').next().unwrap_or("").to_ascii_uppercase(),
                |p| p.collection.clone(),
            );
            let uri = product
                .as_ref()
                .map_or_else(|| format!("s3://{bucket}/{}", o.key), |p| p.uri.clone());
            entries.push(PlanEntry {
                dest: self.placement_dest(&collection, obs_id.as_deref(), &filename, Some(&o.key)),
                uri,
                filename,
                source: Source::S3,
                bucket: Some(bucket.to_string()),
                url: self.s3.url(bucket, &o.key),
                key: Some(o.key),
                size: Some(o.size),
                etag: o.etag,
                access: Some("PUBLIC".into()),
            });
        }
        if entries.is_empty() && !from_query {
            let message = if listed == 0 {
                "no objects under this prefix".to_string()
            } else {
                format!("none of the {listed} objects under this prefix pass --suffix/--match/--exclude")
            };
            return Ok(Slot::Problem(Problem {
                item: format!(
                    "{origin}: {}",
                    crate::text::shown(&format!("s3://{bucket}/{prefix}"))
                ),
                message,
                entry: None,
            }));
        }
        Ok(Slot::Many(entries))
    }
}

//! Turning a selection into a plan: the only place that decides where each file comes from.
//!
//! Owns the catalog choice for queries (MAST or a bucket listing), the confirmation of derived
//! keys with one paginated listing per distinct folder shared by every file in it (never a HEAD
//! per file), the batched MAST path lookup for what the naming rules miss, and the fallback to
//! MAST HTTPS for what the bucket does not hold or may not serve (exclusive access).

use std::collections::{BTreeSet, HashMap};

use reqwest::Url;

use crate::https::MastHttps;
use crate::input::{Item, Parsed, Wanted};
use crate::mast::Mast;
use crate::names::{self, Product};
use crate::plan::{Layout, Placement, Plan, PlanEntry, PlanIndex, Problem, Source};
use crate::query::{Catalog, Query};
use crate::retry::Transient;
use crate::s3::{ObjectInfo, S3Error, S3};

pub(crate) struct Resolver<'a> {
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
pub(crate) enum ResolveError {
    #[error("listing the bucket failed")]
    List(#[from] S3Error),
    #[error("the MAST query failed")]
    Mast(#[source] crate::mast::MastError),
    #[error("--catalog s3 cannot answer {0}; use --catalog mast or auto")]
    CatalogS3(&'static str),
    #[error("--s3-only and --catalog mast: {0}")]
    Conflict(&'static str),
}

/// How a query was answered: by which catalog, what it found, and why it may be short.
struct Answer {
    catalog: &'static str,
    items: Vec<Item>,
    problems: Vec<Problem>,
    incomplete: Option<String>,
}

/// What became of one wanted product.
enum Slot {
    Entry(PlanEntry),
    Problem(Problem),
    Many(Vec<PlanEntry>),
}

/// Where an object is, or may be: `(bucket, key)`; with a folder for the key, what to list.
type Place = (String, String);

impl Resolver<'_> {
    pub(crate) async fn resolve(&self, parsed: Parsed) -> Result<Plan, ResolveError> {
        let mut plan = Plan {
            problems: parsed.problems,
            ..Plan::default()
        };
        let mut items = parsed.items;
        let query_start = items.len();
        if self.query.is_query() {
            let answer = self.run_query().await?;
            plan.catalog = Some(answer.catalog.to_string());
            plan.incomplete = answer.incomplete;
            plan.problems.extend(answer.problems);
            items.extend(answer.items);
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
                let catalog = plan.catalog.as_deref().unwrap_or("mast");
                plan.problems.push(Problem {
                    item: self.query.describe(),
                    message: format!(
                        "the query matched no products (answered by {})",
                        if catalog == "mast" {
                            "MAST's catalog"
                        } else {
                            "bucket listings"
                        }
                    ),
                    entry: None,
                });
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

    /// Answer `--program` & co. MAST is the catalog of record: only it knows exclusive-access
    /// products and those not yet copied to the bucket, so `auto` asks it and answers from
    /// bucket listings only when MAST cannot be reached (and then says the plan may be short).
    async fn run_query(&self) -> Result<Answer, ResolveError> {
        let mast = || {
            self.mast
                .ok_or(ResolveError::Conflict("the query needs MAST's catalog"))
        };
        match self.catalog {
            Catalog::S3 => {
                if !self.query.s3_answerable() {
                    return Err(ResolveError::CatalogS3(
                        "--instrument, --calib-level, --product-type, --recommended or a query \
                         without --program",
                    ));
                }
                Ok(self.by_listing(None))
            }
            Catalog::Mast => self.by_mast(mast()?).await.map_err(ResolveError::Mast),
            Catalog::Auto => match self.by_mast(mast()?).await {
                Ok(answer) => Ok(answer),
                // Transient failures that outlived the retries: MAST cannot be reached now.
                Err(e) if e.is_transient() && self.query.s3_answerable() && !self.mast_only => {
                    let why = format!(
                        "MAST could not be reached ({}); the query was answered from bucket \
                         listings instead, so exclusive-access and not-yet-mirrored products may \
                         be missing from this plan",
                        crate::text::chain(&e)
                    );
                    Ok(self.by_listing(Some(why)))
                }
                Err(e) => Err(ResolveError::Mast(e)),
            },
        }
    }

    /// The query's programs as bucket prefixes, filtered by file name when listed.
    fn by_listing(&self, incomplete: Option<String>) -> Answer {
        let items = self
            .query
            .programs
            .iter()
            .map(|program| Item::Prefix {
                bucket: self.s3.bucket.clone(),
                prefix: format!("jwst/public/jw{program:05}/"),
                origin: format!("--program {program}"),
            })
            .collect();
        Answer {
            catalog: "s3",
            items,
            problems: Vec::new(),
            incomplete,
        }
    }

    /// The query's products from MAST's catalog; a row mastfetch cannot use is a problem, never
    /// dropped in silence.
    async fn by_mast(&self, mast: &Mast) -> Result<Answer, crate::mast::MastError> {
        let found = mast.products(&self.query).await?;
        let items = found
            .rows
            .into_iter()
            .map(|row| {
                // A dataURI outside the `mast:<MISSION>/product/<file>` shape is still a product
                // MAST serves: planned from MAST under its own URI.
                let product = Product::from_uri(&row.data_uri).unwrap_or_else(|| Product {
                    uri: row.data_uri.clone(),
                    collection: row
                        .obs_collection
                        .clone()
                        .unwrap_or_else(|| "MAST".into())
                        .to_ascii_uppercase(),
                    filename: row.filename.clone(),
                });
                Item::Product(Wanted {
                    product,
                    obs_id: row.obs_id,
                    size: row.size,
                    access: row.data_rights,
                    key: None,
                    origin: "MAST query".into(),
                })
            })
            .collect();
        let problems = found
            .unusable
            .into_iter()
            .map(|row| Problem {
                item: format!("MAST query: {row}"),
                message: "MAST listed this product without a usable dataURI or file name; \
                          it cannot be placed"
                    .into(),
                entry: None,
            })
            .collect();
        Ok(Answer {
            catalog: "mast",
            items,
            problems,
            incomplete: None,
        })
    }

    /// `items[query_start..]` are what a query found; the rest the user named.
    async fn resolve_items(
        &self,
        items: &[Item],
        query_start: usize,
    ) -> Result<(Vec<Slot>, Vec<String>), ResolveError> {
        let mut notes = Vec::new();
        let (mut candidates, folders) = self.candidates(items);
        let mut found = self.s3.list_folders(folders, self.parallel).await?;
        // What the naming rules missed: ask MAST where it is, in batches, then confirm.
        let missing: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(i, item)| {
                matches!(item, Item::Product(w) if self.may_be_in_bucket(w))
                    && !candidates[*i].iter().any(|c| found.contains_key(c))
            })
            .map(|(i, _)| i)
            .collect();
        if let (false, Some(mast)) = (missing.is_empty(), self.mast) {
            let (more, more_notes) = self
                .look_up(mast, items, &missing, &mut candidates, &found)
                .await?;
            found.extend(more);
            notes.extend(more_notes);
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
                    let hit = candidates[i]
                        .iter()
                        .find_map(|c| found.get(c).map(|obj| (&c.0, obj)));
                    match hit {
                        Some((bucket, obj)) => Slot::Entry(self.s3_entry(w, bucket, obj)),
                        None => self.not_in_bucket(w),
                    }
                }
            });
        }
        Ok((slots, notes))
    }

    /// Whether a wanted product may come from the bucket at all.
    fn may_be_in_bucket(&self, w: &Wanted) -> bool {
        !self.mast_only && w.access.as_deref() != Some("EXCLUSIVE_ACCESS")
    }

    /// Where each wanted product may be (the derived key first, then what the naming rules
    /// also allow), and the distinct folders to list: one listing pass answers them all.
    fn candidates(&self, items: &[Item]) -> (Vec<Vec<Place>>, BTreeSet<Place>) {
        let mut candidates: Vec<Vec<(String, String)>> = vec![Vec::new(); items.len()];
        let mut folders: BTreeSet<(String, String)> = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let Item::Product(w) = item else { continue };
            if !self.may_be_in_bucket(w) {
                continue;
            }
            let bucket = &self.s3.bucket;
            let keys: Vec<(String, String)> = match &w.key {
                Some(k) => vec![k.clone()],
                None => w
                    .product
                    .derive()
                    .map(|d| d.key)
                    .into_iter()
                    .chain(names::alternate_keys(
                        &w.product.collection,
                        &w.product.filename,
                    ))
                    .map(|k| (bucket.clone(), k))
                    .collect(),
            };
            for (bucket, key) in &keys {
                folders.insert((bucket.clone(), names::folder_of(key).to_string()));
            }
            candidates[i] = keys;
        }
        (candidates, folders)
    }

    /// MAST's path lookup for the `missing` items (batched), their keys made their only
    /// candidates, and the listings of folders not yet listed. Returns what those listings
    /// found, and notes when a lookup failed (those products then come from MAST over HTTPS).
    async fn look_up(
        &self,
        mast: &Mast,
        items: &[Item],
        missing: &[usize],
        candidates: &mut [Vec<Place>],
        found: &HashMap<Place, ObjectInfo>,
    ) -> Result<(HashMap<Place, ObjectInfo>, Vec<String>), ResolveError> {
        let mut notes = Vec::new();
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
                    crate::text::chain(&e),
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
        for &i in missing {
            let Item::Product(w) = &items[i] else {
                continue;
            };
            if let Some(Some(key)) = keys.get(&w.product.uri) {
                let c = (self.s3.bucket.clone(), key.clone());
                let folder = (c.0.clone(), names::folder_of(key).to_string());
                if !found.contains_key(&c) {
                    new_folders.insert(folder);
                }
                candidates[i] = vec![c];
            }
        }
        let more = self.s3.list_folders(new_folders, self.parallel).await?;
        Ok((more, notes))
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
        let obs_id = w
            .obs_id
            .clone()
            .or_else(|| names::obs_id_at(&p.collection, &p.filename, &obj.key));
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
                obs_id.as_deref(),
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
        let mut entries = Vec::new();
        let problem = self
            .list_prefix_each(bucket, prefix, origin, from_query, |e| entries.push(e))
            .await?;
        Ok(problem.map_or(Slot::Many(entries), Slot::Problem))
    }

    /// Each file under a prefix as its listing page arrives (a page is held, not the
    /// listing); the problem to report when an explicit prefix gave none.
    pub(crate) async fn list_prefix_each(
        &self,
        bucket: &str,
        prefix: &str,
        origin: &str,
        from_query: bool,
        mut each: impl FnMut(PlanEntry),
    ) -> Result<Option<Problem>, ResolveError> {
        let (mut listed, mut given) = (0usize, 0usize);
        self.s3
            .list_each(bucket, prefix, false, |o| {
                listed += 1;
                if let Some(e) = self.listed_entry(bucket, o, from_query) {
                    given += 1;
                    each(e);
                }
            })
            .await?;
        if given > 0 || from_query {
            return Ok(None);
        }
        let message = if listed == 0 {
            "no objects under this prefix".to_string()
        } else {
            format!(
                "none of the {listed} objects under this prefix pass --suffix/--match/--exclude"
            )
        };
        Ok(Some(Problem {
            item: format!(
                "{origin}: {}",
                crate::text::shown(&format!("s3://{bucket}/{prefix}"))
            ),
            message,
            entry: None,
        }))
    }

    /// The plan entry of one listed object, unless it is a folder marker or the filters
    /// leave it out.
    fn listed_entry(&self, bucket: &str, o: ObjectInfo, from_query: bool) -> Option<PlanEntry> {
        if o.key.ends_with('/') {
            return None; // folder markers
        }
        let filename = o.key.rsplit('/').next().unwrap_or(&o.key).to_string();
        let product = names::uri_for_key(&o.key);
        let obs_id = product
            .as_ref()
            .and_then(|p| names::obs_id_at(&p.collection, &p.filename, &o.key));
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
            return None;
        }
        let collection = product.as_ref().map_or_else(
            || o.key.split('/').next().unwrap_or("").to_ascii_uppercase(),
            |p| p.collection.clone(),
        );
        let uri = product
            .as_ref()
            .map_or_else(|| format!("s3://{bucket}/{}", o.key), |p| p.uri.clone());
        Some(PlanEntry {
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::RetryPolicy;
    use crate::s3::S3Options;

    /// A client for an endpoint nothing listens on: these tests make no request.
    async fn s3() -> S3 {
        let opts = S3Options {
            bucket: "stpubdata".into(),
            region: "us-east-1".into(),
            endpoint_url: Some("http://127.0.0.1:9".into()),
            sign: false,
        };
        S3::connect(&opts, RetryPolicy::default(), 4).await
    }

    fn resolver(s3: &S3) -> Resolver<'_> {
        Resolver {
            s3,
            mast: None,
            mast_base: Url::parse("https://mast.stsci.edu/").unwrap(),
            layout: Layout::Flat,
            s3_only: false,
            mast_only: false,
            query: Query::default(),
            catalog: Catalog::Auto,
            parallel: 4,
        }
    }

    fn wanted(filename: &str, access: Option<&str>) -> Wanted {
        Wanted {
            product: Product::from_filename(filename).unwrap(),
            obs_id: None,
            size: Some(10),
            access: access.map(str::to_string),
            key: None,
            origin: "argument 1".into(),
        }
    }

    const CAL: &str = "jw02731001001_02101_00001_nrcb1_cal.fits";
    const DRZ: &str = "j8ck01041_drz.fits";

    #[tokio::test]
    async fn only_products_the_bucket_may_serve_get_candidates_and_their_folders_listed() {
        let s3 = s3().await;
        let r = resolver(&s3);
        let mut known = wanted(CAL, None);
        known.key = Some(("other".into(), "a/b/x.fits".into()));
        let items = [
            Item::Product(wanted(CAL, Some("PUBLIC"))),
            Item::Product(wanted(DRZ, None)),
            Item::Product(wanted(CAL, Some("EXCLUSIVE_ACCESS"))),
            Item::Product(known),
            Item::Prefix {
                bucket: "stpubdata".into(),
                prefix: "jwst/".into(),
                origin: "argument 5".into(),
            },
        ];
        let (candidates, folders) = r.candidates(&items);
        let derived = Product::from_filename(CAL).unwrap().derive().unwrap().key;
        assert_eq!(candidates[0], [("stpubdata".to_string(), derived.clone())]);
        // HST association products: their own rootname's folder, then the association's.
        let drz: Vec<&str> = candidates[1].iter().map(|(_, k)| k.as_str()).collect();
        assert_eq!(drz.len(), 2, "{drz:?}");
        assert!(drz[1].contains("j8ck01040/"), "{drz:?}");
        // Exclusive access is never looked for in the bucket; a given key is the only place.
        assert!(candidates[2].is_empty());
        assert_eq!(
            candidates[3],
            [("other".to_string(), "a/b/x.fits".to_string())]
        );
        assert!(
            candidates[4].is_empty(),
            "prefixes are listed whole elsewhere"
        );
        let want: BTreeSet<Place> = [
            (
                "stpubdata".to_string(),
                names::folder_of(&derived).to_string(),
            ),
            (
                "stpubdata".to_string(),
                names::folder_of(drz[0]).to_string(),
            ),
            (
                "stpubdata".to_string(),
                names::folder_of(drz[1]).to_string(),
            ),
            ("other".to_string(), "a/b/".to_string()),
        ]
        .into();
        assert_eq!(folders, want, "one listing per distinct folder");
    }

    #[tokio::test]
    async fn mast_only_and_exclusive_access_stay_off_the_bucket() {
        let s3 = s3().await;
        let mut r = resolver(&s3);
        assert!(r.may_be_in_bucket(&wanted(CAL, None)));
        assert!(!r.may_be_in_bucket(&wanted(CAL, Some("EXCLUSIVE_ACCESS"))));
        r.mast_only = true;
        assert!(!r.may_be_in_bucket(&wanted(CAL, Some("PUBLIC"))));
        let (candidates, folders) = r.candidates(&[Item::Product(wanted(CAL, None))]);
        assert!(candidates[0].is_empty() && folders.is_empty());
    }

    #[tokio::test]
    async fn what_the_bucket_lacks_comes_from_mast_unless_s3_only() {
        let s3 = s3().await;
        let mut r = resolver(&s3);
        let w = wanted(CAL, Some("EXCLUSIVE_ACCESS"));
        let Slot::Entry(e) = r.not_in_bucket(&w) else {
            panic!("a MAST download")
        };
        assert_eq!(e.source, Source::Mast);
        assert_eq!((e.bucket, e.key, e.size), (None, None, Some(10)));
        assert_eq!(e.url, MastHttps::download_url(&r.mast_base, &w.product.uri));
        assert_eq!(e.dest, CAL, "placed by the layout");
        r.s3_only = true;
        let Slot::Problem(p) = r.not_in_bucket(&w) else {
            panic!("a problem")
        };
        assert!(p.message.contains("--s3-only"), "{}", p.message);
        assert!(p.item.starts_with("argument 1: "), "{}", p.item);
        assert!(p.entry.is_some(), "recorded in the manifest as failed");
    }

    #[tokio::test]
    async fn a_listed_object_becomes_an_s3_entry_placed_by_the_layout() {
        let s3 = s3().await;
        let mut r = resolver(&s3);
        r.layout = Layout::Mirror;
        let obj = ObjectInfo {
            key: "jwst/public/jw02731/jw02731001001/x_cal.fits".into(),
            size: 42,
            etag: Some("abc".into()),
            checksum: None,
            last_modified: None,
        };
        let e = r.s3_entry(&wanted(CAL, None), "stpubdata", &obj);
        assert_eq!(e.source, Source::S3);
        assert_eq!(e.key.as_deref(), Some(obj.key.as_str()));
        assert_eq!((e.size, e.etag.as_deref()), (Some(42), Some("abc")));
        assert_eq!(
            e.access.as_deref(),
            Some("PUBLIC"),
            "public unless said otherwise"
        );
        assert_eq!(e.dest, obj.key, "the mirror layout keeps the key");
        assert_eq!(e.url, s3.url("stpubdata", &obj.key));
    }
}

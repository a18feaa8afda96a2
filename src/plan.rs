//! The download plan: exact objects, their sources and where each lands under DIR.
//!
//! Owns the plan entry (the JSON-lines exchange format of `plan --format jsonl`), the layouts,
//! the rule that no destination leaves DIR, de-duplication by URI (by hashes, so a plan can be
//! checked as it streams) and the byte-balanced partition. Pure: it neither lists buckets nor
//! asks MAST (that is `resolve`), nor prints (that is `formats`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use serde::{Deserialize, Serialize};

use crate::dest;
use crate::names;
use crate::text;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    S3,
    Mast,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::S3 => "s3",
            Source::Mast => "mast",
        }
    }
}

/// One file of the plan, as `plan --format jsonl` prints it and `@plan.jsonl` reads it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEntry {
    pub uri: String,
    pub filename: String,
    pub source: Source,
    pub bucket: Option<String>,
    pub key: Option<String>,
    pub url: String,
    pub size: Option<u64>,
    pub etag: Option<String>,
    pub access: Option<String>,
    /// Relative to DIR, `/`-separated, checked by [`dest::safe_relative`].
    pub dest: String,
}

impl PlanEntry {
    pub(crate) fn is_exclusive(&self) -> bool {
        self.access.as_deref() == Some("EXCLUSIVE_ACCESS")
    }
}

/// A URI asked for more than once with different destinations: fetched once, recorded for each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub entry: PlanEntry,
    pub first_dest: String,
}

/// An item that could not become a plan entry; reported with the input that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub item: String,
    pub message: String,
    /// Where the file would have gone, when that is known (so a manifest can record it).
    pub entry: Option<PlanEntry>,
}

#[derive(Debug, Default, Clone)]
pub struct Plan {
    pub files: Vec<PlanEntry>,
    pub duplicates: Vec<Duplicate>,
    pub problems: Vec<Problem>,
    /// Which catalog answered a query, when there was one (`mast` or `s3`).
    pub catalog: Option<String>,
    /// Things the user should know that are not errors.
    pub notes: Vec<String>,
    /// Why this plan may lack products that exist (MAST could not be reached, and bucket
    /// listings answered the query): said loudly, and the run exits 1.
    pub incomplete: Option<String>,
    /// The folder the plan is for (`plan --dest`), when given: `dest` fields stay relative.
    pub dir: Option<String>,
    /// For a plan whose files were streamed (decided on, written out) instead of held in
    /// `files`: what they were.
    pub streamed: Option<Tally>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// DIR/<COLLECTION>/<obs_id>/<file>, as MAST's own bundles and astroquery do.
    Nested,
    /// DIR/<file>.
    Flat,
    /// DIR/<s3 key>, the bucket's own tree.
    Mirror,
}

/// What the layout needs to know about a file.
pub(crate) struct Placement<'a> {
    pub collection: &'a str,
    pub obs_id: Option<&'a str>,
    pub filename: &'a str,
    pub key: Option<&'a str>,
}

impl Layout {
    pub(crate) fn dest(self, p: &Placement<'_>) -> String {
        let nested = || {
            let obs = p
                .obs_id
                .map(str::to_string)
                .or_else(|| names::derive(p.collection, p.filename).map(|d| d.obs_id))
                // Objects outside the product naming rules keep their bucket folder.
                .or_else(|| p.key.and_then(|k| k.rsplit('/').nth(1)).map(str::to_string))
                .unwrap_or_else(|| "unknown".to_string());
            format!("{}/{}/{}", p.collection, obs, p.filename)
        };
        match self {
            Layout::Flat => p.filename.to_string(),
            Layout::Nested => nested(),
            Layout::Mirror => p
                .key
                .map(str::to_string)
                .or_else(|| names::derive(p.collection, p.filename).map(|d| d.key))
                .unwrap_or_else(nested),
        }
    }
}

impl Plan {
    /// Add an entry unless its URI is already planned; a repeat with another destination is
    /// kept as a duplicate, one with a destination taken by another URI is a problem.
    pub(crate) fn push(&mut self, entry: PlanEntry, index: &mut PlanIndex) {
        let files = std::mem::take(&mut self.files);
        let admitted = self.admit(entry, index, |i| files.get(i as usize).cloned());
        self.files = files;
        self.files.extend(admitted);
    }

    /// The checks of [`Plan::push`] without holding the files: duplicates and problems are
    /// kept, and a new file is handed back (it is the index's next file number) for the
    /// caller to write out or decide on. `earlier(n)` gives file `n` back when a hash says
    /// it may be a repeat, so that equal hashes of different strings never merge two files
    /// (a stream that cannot give it back trusts the 64-bit hash).
    pub(crate) fn admit(
        &mut self,
        entry: PlanEntry,
        index: &mut PlanIndex,
        earlier: impl Fn(u32) -> Option<PlanEntry>,
    ) -> Option<PlanEntry> {
        if let Some(message) = unplaceable(&entry.dest) {
            return self.refuse(&entry, message);
        }
        let taken_by = |i: u32| match i {
            DUPLICATE => "a duplicate".to_string(),
            i => earlier(i).map_or("an earlier file of the plan".into(), |e| e.uri),
        };
        // A file where another needs a folder (`x` and `x/y`) would fail at rename time and
        // leave its temporary file behind; refuse the later one now, naming both.
        if let Some((folder, i)) = index.folder_clash(&entry.dest, &earlier) {
            let message = format!(
                "destination {} clashes with {} (one needs {folder} as a folder, the other as a file)",
                text::shown(&entry.dest),
                text::shown(&taken_by(i))
            );
            return self.refuse(&entry, message);
        }
        if let Some((i, first)) = index.same_uri(&entry.uri, &earlier) {
            let first_dest = first.map(|f| f.dest);
            let same_dest = first_dest.as_deref() == Some(entry.dest.as_str());
            if !same_dest && index.dest_of(&entry.dest, &earlier).is_none() {
                index.add_dest(&entry.dest, DUPLICATE);
                let first_dest =
                    first_dest.unwrap_or_else(|| format!("file {} of the plan", i + 1));
                self.duplicates.push(Duplicate { entry, first_dest });
            }
            return None;
        }
        if let Some(i) = index.dest_of(&entry.dest, &earlier) {
            let message = format!(
                "destination {} is already taken by {}",
                text::shown(&entry.dest),
                text::shown(&taken_by(i))
            );
            return self.refuse(&entry, message);
        }
        let n = index.files;
        index.files += 1;
        index.by_uri.entry(hash(&entry.uri)).or_insert(n);
        index.add_dest(&entry.dest, n);
        Some(entry)
    }

    /// A file that cannot be planned: a problem naming it, nothing admitted.
    fn refuse(&mut self, entry: &PlanEntry, message: String) -> Option<PlanEntry> {
        self.problems.push(Problem {
            item: text::shown(&entry.uri),
            message,
            entry: None,
        });
        None
    }

    /// [`Plan::admit`] for a plan whose files are streamed, not held: an admitted file is
    /// counted in `streamed`, what the summary says of the plan.
    pub(crate) fn admit_streamed(
        &mut self,
        entry: PlanEntry,
        index: &mut PlanIndex,
        earlier: impl Fn(u32) -> Option<PlanEntry>,
    ) -> Option<PlanEntry> {
        let f = self.admit(entry, index, earlier)?;
        self.streamed.get_or_insert_default().add(&f);
        Some(f)
    }

    /// Files, bytes and where they come from: counted from the files, or, for a plan whose
    /// files were streamed rather than held, as they were admitted.
    pub(crate) fn tally(&self) -> Tally {
        self.streamed.unwrap_or_else(|| {
            let mut t = Tally::default();
            self.files.iter().for_each(|f| t.add(f));
            t
        })
    }

    /// Keep shard `index` of `shards`: a deterministic partition balanced by bytes (the rule
    /// is [`partition`]'s, shared with plan files read as a stream).
    pub fn shard(&mut self, shards: u32, index: u32) {
        if shards <= 1 {
            return;
        }
        let sizes: Vec<u64> = self.files.iter().map(|f| f.size.unwrap_or(0)).collect();
        let mine = partition(&sizes, shards).into_iter().map(|k| k == index);
        let mut keep = mine;
        self.files.retain(|_| keep.next().unwrap_or(false));
        // Duplicates follow the shard of their first copy.
        let dests: std::collections::HashSet<&str> =
            self.files.iter().map(|f| f.dest.as_str()).collect();
        self.duplicates
            .retain(|d| dests.contains(d.first_dest.as_str()));
        // Problems are reported by shard 0 only, so a batch of N shards reports them once.
        if index != 0 {
            self.problems.clear();
        }
    }
}

/// Why a destination cannot be used at all (outside DIR, or one of mastfetch's own names).
fn unplaceable(dest: &str) -> Option<String> {
    if let Err(e) = dest::safe_relative(dest) {
        return Some(text::escape(&e.to_string()).into_owned());
    }
    dest::reserved(dest).map(|why| format!("destination {} is {why}", text::shown(dest)))
}

/// What a summary says of a plan's files.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub files: usize,
    pub bytes: u64,
    pub from_s3: usize,
    pub exclusive: usize,
}

impl Tally {
    pub(crate) fn add(&mut self, f: &PlanEntry) {
        self.files += 1;
        self.bytes += f.size.unwrap_or(0);
        self.from_s3 += usize::from(f.source == Source::S3);
        self.exclusive += usize::from(f.is_exclusive());
    }
}

/// A destination taken by a duplicate (a repeat of a URI), not by a file of its own.
const DUPLICATE: u32 = u32::MAX;

fn hash(s: &str) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// Lookup tables used while a plan is being built: hashes of URIs, destinations and the
/// folders destinations need, to file numbers (40-70 bytes a file by the maps' layout, not the strings), so a
/// plan of millions of files can be checked as it streams. A hash hit is confirmed against
/// the earlier file when the caller can give it back.
#[derive(Default)]
pub(crate) struct PlanIndex {
    by_uri: HashMap<u64, u32>,
    by_dest: HashMap<u64, u32>,
    /// Every folder some planned destination needs, with that file ([`DUPLICATE`]: a duplicate).
    folders: HashMap<u64, u32>,
    files: u32,
}

impl PlanIndex {
    fn add_dest(&mut self, dest: &str, i: u32) {
        self.by_dest.entry(hash(dest)).or_insert(i);
        for f in folders_of(dest) {
            if self.folders.contains_key(&hash(f)) {
                break; // its own folders are there too
            }
            self.folders.insert(hash(f), i);
        }
    }

    /// The earlier file with this URI (and that file, when it can be given back).
    fn same_uri(
        &self,
        uri: &str,
        earlier: &impl Fn(u32) -> Option<PlanEntry>,
    ) -> Option<(u32, Option<PlanEntry>)> {
        let &i = self.by_uri.get(&hash(uri))?;
        match earlier(i) {
            Some(e) if e.uri != uri => None,
            first => Some((i, first)),
        }
    }

    /// The file (or duplicate) that already has this destination.
    fn dest_of(&self, dest: &str, earlier: &impl Fn(u32) -> Option<PlanEntry>) -> Option<u32> {
        let &i = self.by_dest.get(&hash(dest))?;
        let differs = i != DUPLICATE && earlier(i).is_some_and(|e| e.dest != dest);
        (!differs).then_some(i)
    }

    /// A file that needs `dest` as a folder, or one that sits where `dest` needs a folder.
    fn folder_clash(
        &self,
        dest: &str,
        earlier: &impl Fn(u32) -> Option<PlanEntry>,
    ) -> Option<(String, u32)> {
        if let Some(&i) = self.folders.get(&hash(dest)) {
            let prefix = format!("{dest}/");
            if i == DUPLICATE || earlier(i).is_none_or(|e| e.dest.starts_with(&prefix)) {
                return Some((dest.to_string(), i));
            }
        }
        folders_of(dest).find_map(|f| self.dest_of(f, earlier).map(|i| (f.to_string(), i)))
    }
}

/// The folders of a `/`-separated destination, deepest first: `a/b/c` gives `a/b`, `a`.
fn folders_of(dest: &str) -> impl Iterator<Item = &str> {
    dest.match_indices('/').rev().map(move |(i, _)| &dest[..i])
}

/// The shard of each file, given the files' sizes in plan order (unknown sizes as 0).
///
/// The rule is the same in every process that reads the same plan: files in order of size
/// (largest first, then their position in the plan), each given to the shard with the fewest
/// bytes so far (ties to the lowest shard). Greedy largest-first keeps every shard within one
/// file of the mean. Plan files read as a stream (`shard`) use it too.
pub(crate) fn partition(sizes: &[u64], shards: u32) -> Vec<u32> {
    let mut order: Vec<u32> = (0..sizes.len() as u32).collect();
    order.sort_unstable_by_key(|&i| (Reverse(sizes[i as usize]), i));
    let mut load: BinaryHeap<Reverse<(u64, u32)>> = (0..shards).map(|k| Reverse((0, k))).collect();
    let mut shard_of = vec![0u32; sizes.len()];
    for i in order {
        let Reverse((bytes, k)) = load.pop().expect("at least one shard");
        shard_of[i as usize] = k;
        // Empty files still cost a request: one byte each, so they spread too.
        load.push(Reverse((bytes + sizes[i as usize].max(1), k)));
    }
    shard_of
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{write_plan, Format};

    #[test]
    fn partition_is_greedy_largest_first_and_deterministic() {
        let sizes = [10, 50, 30, 30, 0, 20];
        let a = partition(&sizes, 2);
        assert_eq!(a, partition(&sizes, 2));
        // 50 -> 0; 30 (pos 2) -> 1; 30 (pos 3) -> 1 (30 < 50); 20 -> 0 (50 < 60); 10 -> 1;
        // 0 -> 0 (70 = 70: the lower shard).
        assert_eq!(a, [1, 0, 1, 1, 0, 0]);
        let load = |k| (0..6).filter(|&i| a[i] == k).map(|i| sizes[i]).sum::<u64>();
        assert_eq!((load(0), load(1)), (70, 70));
        assert!(partition(&[], 3).is_empty());
    }

    fn entry(uri: &str, dest: &str, size: u64) -> PlanEntry {
        PlanEntry {
            uri: uri.into(),
            filename: dest.rsplit('/').next().unwrap().into(),
            source: Source::S3,
            bucket: Some("b".into()),
            key: Some(dest.into()),
            url: format!("https://example/{dest}"),
            size: Some(size),
            etag: None,
            access: Some("PUBLIC".into()),
            dest: dest.into(),
        }
    }

    #[test]
    fn layouts() {
        let p = Placement {
            collection: "JWST",
            obs_id: None,
            filename: "jw02731001001_02101_00001_nrcb1_cal.fits",
            key: Some("jwst/public/jw02731/jw02731001001/jw02731001001_02101_00001_nrcb1_cal.fits"),
        };
        assert_eq!(
            Layout::Nested.dest(&p),
            "JWST/jw02731001001_02101_00001_nrcb1/jw02731001001_02101_00001_nrcb1_cal.fits"
        );
        assert_eq!(Layout::Flat.dest(&p), p.filename);
        assert_eq!(Layout::Mirror.dest(&p), p.key.unwrap());
        let odd = Placement {
            collection: "TESS",
            obs_id: None,
            filename: "x.fits",
            key: Some("tess/public/s1/x.fits"),
        };
        assert_eq!(Layout::Nested.dest(&odd), "TESS/s1/x.fits");
    }

    #[test]
    fn dedupe_by_uri_and_dest() {
        let mut plan = Plan::default();
        let mut idx = PlanIndex::default();
        plan.push(entry("u1", "a/x", 1), &mut idx);
        plan.push(entry("u1", "a/x", 1), &mut idx); // plain repeat: dropped
        plan.push(entry("u1", "b/x", 1), &mut idx); // other dest: duplicate
        plan.push(entry("u2", "a/x", 1), &mut idx); // dest taken: problem
        plan.push(entry("u3", "../x", 1), &mut idx); // unsafe: problem
        assert_eq!(plan.files.len(), 1);
        assert_eq!(plan.duplicates.len(), 1);
        assert_eq!(plan.duplicates[0].first_dest, "a/x");
        assert_eq!(plan.problems.len(), 2);
    }

    #[test]
    fn reserved_names_and_folder_clashes_are_refused() {
        let mut plan = Plan::default();
        let mut idx = PlanIndex::default();
        plan.push(entry("u1", "p/x", 1), &mut idx);
        plan.push(entry("u2", "p/x/y", 1), &mut idx); // p/x is a file: problem
        plan.push(entry("u3", "q/r/s", 1), &mut idx);
        plan.push(entry("u4", "q/r", 1), &mut idx); // q/r is a folder: problem
        plan.push(entry("u5", "q", 1), &mut idx); // q is a folder: problem
        plan.push(entry("u6", "SHA256SUMS", 1), &mut idx);
        plan.push(entry("u7", ".mastfetch/tmp/a.part", 1), &mut idx);
        plan.push(entry("u8", "q/r2", 1), &mut idx); // a sibling: fine
        let dests: Vec<&str> = plan.files.iter().map(|f| f.dest.as_str()).collect();
        assert_eq!(dests, ["p/x", "q/r/s", "q/r2"]);
        assert_eq!(plan.problems.len(), 5, "{:?}", plan.problems);
        assert!(
            plan.problems[0].message.contains("u1"),
            "{:?}",
            plan.problems
        );
        assert_eq!(plan.problems[0].item, "u2");
    }

    #[test]
    fn shards_cover_the_plan_once_and_balance_bytes() {
        let mut full = Plan::default();
        let mut idx = PlanIndex::default();
        let mut rng = fastrand::Rng::with_seed(7);
        for i in 0..2000 {
            full.push(
                entry(&format!("u{i}"), &format!("d/{i}"), rng.u64(1..50_000_000)),
                &mut idx,
            );
        }
        let total = full.tally().bytes;
        let mut seen = std::collections::HashSet::new();
        let mut largest = 0;
        for k in 0..8 {
            let mut s = full.clone();
            s.shard(8, k);
            largest = largest.max(s.tally().bytes);
            for f in &s.files {
                assert!(seen.insert(f.uri.clone()), "{} in two shards", f.uri);
            }
        }
        assert_eq!(seen.len(), 2000);
        let mean = total as f64 / 8.0;
        assert!(
            (largest as f64) <= mean * 1.05,
            "largest {largest} mean {mean}"
        );
    }

    #[test]
    fn jsonl_round_trips() {
        let e = entry("mast:JWST/product/x.fits", "JWST/o/x.fits", 5);
        let mut plan = Plan::default();
        plan.files.push(e.clone());
        let mut out = Vec::new();
        write_plan(&mut out, &plan, Format::Jsonl).unwrap();
        let back: PlanEntry = serde_json::from_slice(out.trim_ascii_end()).unwrap();
        assert_eq!(back, e);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for k in [
            "uri", "filename", "source", "bucket", "key", "url", "size", "etag", "access", "dest",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
    }

    #[test]
    fn curl_script_quotes_names() {
        let mut plan = Plan::default();
        plan.files.push(entry("u", "it's/x", 1));
        let mut out = Vec::new();
        write_plan(&mut out, &plan, Format::Curl).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains(r"fetch 'it'\''s/x'"), "{s}");
        assert!(s.contains("DIR='.'"), "{s}");
        plan.dir = Some("my dir".into());
        let mut out = Vec::new();
        write_plan(&mut out, &plan, Format::Curl).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("DIR='my dir'"));
    }
}

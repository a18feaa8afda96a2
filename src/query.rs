//! A MAST-style query (`--program`, `--suffix`, ...) and the filters it applies to products.
//!
//! Owns which filters a query has, which of them a bucket listing can answer from file names
//! alone (the `s3` catalog), and the per-product accept rule shared by both catalogs. It does not
//! send requests (that is `mast` and `resolve`).

use regex::Regex;

use crate::names;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Catalog {
    /// MAST; bucket listings only when MAST cannot be reached (the plan then may be short).
    Auto,
    Mast,
    S3,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Query {
    pub programs: Vec<u32>,
    /// SQL-like or glob pattern on `obs_id` (`*` and `%` are wildcards).
    pub obs_id: Option<String>,
    pub instruments: Vec<String>,
    pub calib_levels: Vec<u8>,
    pub suffixes: Vec<String>,
    pub product_types: Vec<String>,
    pub recommended: bool,
    pub include_guidestars: bool,
    pub matches: Option<Regex>,
    pub excludes: Option<Regex>,
}

/// A product row as the MAST catalog describes it (the columns we use).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProductRow {
    pub data_uri: String,
    pub filename: String,
    pub obs_id: Option<String>,
    pub obs_collection: Option<String>,
    pub size: Option<u64>,
    pub product_type: Option<String>,
    pub group: Option<String>,
    pub subgroup: Option<String>,
    pub calib_level: Option<u8>,
    pub data_rights: Option<String>,
}

impl Query {
    /// True when the user asked a query at all (otherwise only items are planned).
    pub(crate) fn is_query(&self) -> bool {
        !self.programs.is_empty() || self.obs_id.is_some()
    }

    /// The query as the flags that asked it, to name it in messages.
    pub(crate) fn describe(&self) -> String {
        let list = |v: &[String]| v.join(",");
        let mut parts = Vec::new();
        if !self.programs.is_empty() {
            let p: Vec<String> = self.programs.iter().map(u32::to_string).collect();
            parts.push(format!("--program {}", list(&p)));
        }
        if let Some(o) = &self.obs_id {
            parts.push(format!("--obs-id {o}"));
        }
        if !self.instruments.is_empty() {
            parts.push(format!("--instrument {}", list(&self.instruments)));
        }
        if !self.calib_levels.is_empty() {
            let l: Vec<String> = self.calib_levels.iter().map(u8::to_string).collect();
            parts.push(format!("--calib-level {}", list(&l)));
        }
        if !self.suffixes.is_empty() {
            parts.push(format!("--suffix {}", list(&self.suffixes)));
        }
        if !self.product_types.is_empty() {
            parts.push(format!("--product-type {}", list(&self.product_types)));
        }
        if self.recommended {
            parts.push("--recommended".into());
        }
        if self.include_guidestars {
            parts.push("--include-guidestars".into());
        }
        if let Some(r) = &self.matches {
            parts.push(format!("--match {}", r.as_str()));
        }
        if let Some(r) = &self.excludes {
            parts.push(format!("--exclude {}", r.as_str()));
        }
        parts.join(" ")
    }

    /// Whether file names alone answer every filter, so a bucket listing can replace MAST.
    pub(crate) fn s3_answerable(&self) -> bool {
        !self.programs.is_empty()
            && self.instruments.is_empty()
            && self.calib_levels.is_empty()
            && self.product_types.is_empty()
            && !self.recommended
    }

    /// Filters that need only the file name (and the obs_id derived from it).
    pub(crate) fn accepts_filename(&self, filename: &str, obs_id: Option<&str>) -> bool {
        if !self.include_guidestars && names::is_guide_star(filename) {
            return false;
        }
        if !self.suffixes.is_empty() {
            let s = names::suffix(filename);
            if !self
                .suffixes
                .iter()
                .any(|want| want.eq_ignore_ascii_case(s))
            {
                return false;
            }
        }
        if let Some(re) = &self.matches {
            if !re.is_match(filename) {
                return false;
            }
        }
        if let Some(re) = &self.excludes {
            if re.is_match(filename) {
                return false;
            }
        }
        if let (Some(pat), Some(obs)) = (&self.obs_id, obs_id) {
            if !glob_match(pat, obs) {
                return false;
            }
        }
        true
    }

    /// Every filter, on a MAST product row.
    pub(crate) fn accepts_row(&self, row: &ProductRow) -> bool {
        let guide = row
            .subgroup
            .as_deref()
            .is_some_and(|s| s.to_ascii_uppercase().starts_with("GS-"))
            || names::is_guide_star(&row.filename);
        if guide && !self.include_guidestars {
            return false;
        }
        if self.recommended && row.group.as_deref() != Some("Minimum Recommended Products") {
            return false;
        }
        if !self.product_types.is_empty() {
            let t = row.product_type.as_deref().unwrap_or("");
            if !self.product_types.iter().any(|p| p.eq_ignore_ascii_case(t)) {
                return false;
            }
        }
        if !self.calib_levels.is_empty() {
            if let Some(l) = row.calib_level {
                if !self.calib_levels.contains(&l) {
                    return false;
                }
            }
        }
        // The obs_id filter was applied to observations already; names may not repeat it.
        let q = Query {
            obs_id: None,
            include_guidestars: true,
            ..self.clone()
        };
        q.accepts_filename(&row.filename, None)
    }
}

/// `*`/`%` match any run, `?`/`_` one character; case-insensitive like MAST's freeText.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == '_' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && (p[pi] == '*' || p[pi] == '%') {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && (p[pi] == '*' || p[pi] == '%') {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("jw01410*", "jw01410001001_02101_00001_nrcb1"));
        assert!(glob_match("JW01410%", "jw01410001001"));
        assert!(glob_match("jw0141?001*", "jw01410001001"));
        assert!(!glob_match("jw01411*", "jw01410001001"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn filename_filters() {
        let q = Query {
            programs: vec![2731],
            suffixes: vec!["cal".into()],
            ..Default::default()
        };
        assert!(q.s3_answerable());
        assert!(q.accepts_filename("jw02731001001_02101_00001_nrcb1_cal.fits", None));
        assert!(!q.accepts_filename("jw02731001001_02101_00001_nrcb1_rate.fits", None));
        assert!(!q.accepts_filename("jw02731001001_gs-fg_2022166062113_cal.fits", None));
        let with_gs = Query {
            include_guidestars: true,
            ..q.clone()
        };
        assert!(with_gs.accepts_filename("jw02731001001_gs-fg_2022166062113_cal.fits", None));
        assert_eq!(q.describe(), "--program 2731 --suffix cal");
        let needs_mast = Query {
            calib_levels: vec![2],
            ..q
        };
        assert!(!needs_mast.s3_answerable());
    }

    #[test]
    fn row_filters() {
        let row = ProductRow {
            filename: "jw01039-o004_t001_miri_ch3-long_x1d.fits".into(),
            product_type: Some("SCIENCE".into()),
            group: Some("Minimum Recommended Products".into()),
            calib_level: Some(3),
            ..Default::default()
        };
        let q = Query {
            recommended: true,
            calib_levels: vec![3],
            product_types: vec!["science".into()],
            ..Default::default()
        };
        assert!(q.accepts_row(&row));
        let q2 = Query {
            calib_levels: vec![2],
            ..Default::default()
        };
        assert!(!q2.accepts_row(&row));
        let gs = ProductRow {
            filename: "jw01039001001_gs-fg_2022_cal.fits".into(),
            subgroup: Some("GS-FG".into()),
            ..Default::default()
        };
        assert!(!Query::default().accepts_row(&gs));
    }
}

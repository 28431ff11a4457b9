//! Results of a benchmark run: per (driver, workload) cells for ours and Go, the reference
//! ("limit") measurements, the targets, and the table printed and saved as JSON and markdown.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{Value, json};

/// Which binary a measurement belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Imp {
    /// Our `containers-storage`.
    Ours,
    /// Go's `containers-storage`.
    Go,
}

impl Imp {
    /// `ours` / `go`.
    pub fn name(self) -> &'static str {
        match self {
            Imp::Ours => "ours",
            Imp::Go => "go",
        }
    }
}

/// The measurements of one workload for one binary (or one reference tool).
#[derive(Clone, Debug, Default)]
pub struct Cell {
    /// Seconds per sample.
    pub secs: Vec<f64>,
    /// Peak RSS per sample, KiB.
    pub rss_kib: Vec<u64>,
    /// The command failed: not supported or broken (first error seen).
    pub error: Option<String>,
    /// A correctness check failed (first failure seen).
    pub fail: Option<String>,
}

impl Cell {
    /// Median seconds, when there is at least one sample and no error.
    pub fn median(&self) -> Option<f64> {
        if self.error.is_some() || self.secs.is_empty() {
            return None;
        }
        Some(median(&self.secs))
    }
    fn min(&self) -> f64 {
        self.secs.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.secs.iter().copied().fold(0.0, f64::max)
    }
    /// Peak RSS over all samples, KiB.
    pub fn peak_rss(&self) -> Option<u64> {
        self.rss_kib.iter().copied().max()
    }
    fn usable(&self) -> bool {
        self.error.is_none() && self.fail.is_none() && !self.secs.is_empty()
    }
    fn show(&self, who: &str) -> String {
        if let Some(e) = &self.error {
            return format!("n/a ({who}: {e})");
        }
        if self.secs.is_empty() {
            return "–".into();
        }
        let t = if self.secs.len() == 1 {
            secs(self.secs[0])
        } else {
            format!(
                "{} ({}–{})",
                secs(median(&self.secs)),
                secs(self.min()),
                secs(self.max())
            )
        };
        match &self.fail {
            Some(f) => format!("FAIL {t} ({f})"),
            None => t,
        }
    }
    fn json(&self) -> Value {
        json!({
            "median_s": self.median(),
            "min_s": (!self.secs.is_empty()).then(|| self.min()),
            "max_s": (!self.secs.is_empty()).then(|| self.max()),
            "samples_s": self.secs,
            "peak_rss_kib": self.peak_rss(),
            "error": self.error,
            "fail": self.fail,
        })
    }
}

/// What "good" means for a workload.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// ours ≤ factor × limit.
    Limit(f64),
    /// Go / ours ≥ factor.
    FasterThanGo(f64),
    /// ours' slowest sample ≤ this many seconds (a bound on a wait, not on a median).
    AtMost(f64),
    /// ours ≤ `within` × our own median of the row `ours_row` (same driver), and
    /// limit / ours ≥ `faster` (the limit a slower tool doing the same job).
    WithinOursAndFaster {
        /// Our workload compared with.
        ours_row: &'static str,
        /// Allowed factor over that row.
        within: f64,
        /// Required speed-up over the limit.
        faster: f64,
    },
    /// ours ≤ `at_most` × our own median of the row `ours_row` (same driver); the ratio is
    /// shown.
    RatioToOurs {
        /// Our workload compared with.
        ours_row: &'static str,
        /// The largest allowed ratio.
        at_most: f64,
    },
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct Row {
    /// Storage driver.
    pub driver: String,
    /// Workload name.
    pub workload: String,
    /// Name of the reference measurement, if there is one.
    pub limit: Option<String>,
    /// The time target.
    pub target: Option<Target>,
    /// Peak RSS target for ours, MiB.
    pub rss_target_mib: Option<u64>,
    /// Our binary.
    pub ours: Cell,
    /// Go's binary.
    pub go: Cell,
}

/// Everything measured in one run.
#[derive(Debug, Default)]
pub struct Results {
    /// Rows in first-recorded order.
    pub rows: Vec<Row>,
    /// Reference measurements by name.
    pub limits: BTreeMap<String, Cell>,
    /// Drivers or workloads skipped, with why.
    pub skipped: Vec<String>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Human-readable seconds.
pub fn secs(s: f64) -> String {
    if s >= 10.0 {
        format!("{s:.1} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 0.001 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

impl Results {
    /// The row of (driver, workload), created with its limit and targets on first use.
    pub fn row(&mut self, driver: &str, workload: &str) -> &mut Row {
        let i = match self
            .rows
            .iter()
            .position(|r| r.driver == driver && r.workload == workload)
        {
            Some(i) => i,
            None => {
                let (limit, target, rss) = super::limit_and_target(driver, workload);
                // A driver's rows stay together: rows first seen late (the deletions at the
                // end of a round) go after the driver's others, not after the next driver's.
                let at = self
                    .rows
                    .iter()
                    .rposition(|r| r.driver == driver)
                    .map_or(self.rows.len(), |i| i + 1);
                self.rows.insert(
                    at,
                    Row {
                        driver: driver.into(),
                        workload: workload.into(),
                        limit,
                        target,
                        rss_target_mib: rss,
                        ours: Cell::default(),
                        go: Cell::default(),
                    },
                );
                at
            }
        };
        &mut self.rows[i]
    }

    /// The cell of one binary for (driver, workload).
    pub fn cell(&mut self, driver: &str, workload: &str, imp: Imp) -> &mut Cell {
        let r = self.row(driver, workload);
        match imp {
            Imp::Ours => &mut r.ours,
            Imp::Go => &mut r.go,
        }
    }

    /// Our usable median of the row (driver, workload).
    fn our_median(&self, driver: &str, workload: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|x| x.driver == driver && x.workload == workload)
            .filter(|x| x.ours.usable())
            .and_then(|x| x.ours.median())
    }

    fn verdict(&self, r: &Row) -> Option<(String, bool)> {
        let mut parts = Vec::new();
        let mut ok = true;
        if let Some(t) = r.target {
            let v = match t {
                Target::Limit(f) => {
                    let lim = r
                        .limit
                        .as_ref()
                        .and_then(|l| self.limits.get(l))
                        .and_then(Cell::median);
                    match (r.ours.usable(), r.ours.median(), lim) {
                        (true, Some(o), Some(l)) => {
                            let good = o <= f * l;
                            ok &= good;
                            let mut v =
                                format!("≤{f}× limit: {}", if good { "ok" } else { "MISS" });
                            let durable = super::durable_limit(&r.workload).and_then(|name| {
                                let d = self.limits.get(name)?.median()?;
                                (d > 0.0).then(|| format!(" ({:.2}× {name})", o / d))
                            });
                            v.extend(durable);
                            v
                        }
                        _ => {
                            ok = false;
                            format!("≤{f}× limit: n/a")
                        }
                    }
                }
                Target::WithinOursAndFaster {
                    ours_row,
                    within,
                    faster,
                } => {
                    let other = self.our_median(&r.driver, ours_row);
                    let lim = r
                        .limit
                        .as_ref()
                        .and_then(|l| self.limits.get(l))
                        .and_then(Cell::median);
                    let o = r.ours.usable().then(|| r.ours.median()).flatten();
                    let first = match (o, other) {
                        (Some(o), Some(x)) => {
                            let good = o <= within * x;
                            ok &= good;
                            format!(
                                "≤{within}× {ours_row}: {}",
                                if good { "ok" } else { "MISS" }
                            )
                        }
                        _ => {
                            ok = false;
                            format!("≤{within}× {ours_row}: n/a")
                        }
                    };
                    let second = match (o, lim) {
                        (Some(o), Some(l)) if o > 0.0 => {
                            let good = l / o >= faster;
                            ok &= good;
                            format!(
                                "≥{faster}× faster than limit: {}",
                                if good { "ok" } else { "MISS" }
                            )
                        }
                        _ => {
                            ok = false;
                            format!("≥{faster}× faster than limit: n/a")
                        }
                    };
                    format!("{first}, {second}")
                }
                Target::RatioToOurs { ours_row, at_most } => {
                    let other = self.our_median(&r.driver, ours_row);
                    match (r.ours.usable(), r.ours.median(), other) {
                        (true, Some(o), Some(x)) if x > 0.0 => {
                            let good = o <= at_most * x;
                            ok &= good;
                            format!(
                                "{:.2}× {ours_row} (≤{at_most}×): {}",
                                o / x,
                                if good { "ok" } else { "MISS" }
                            )
                        }
                        _ => {
                            ok = false;
                            format!("≤{at_most}× {ours_row}: n/a")
                        }
                    }
                }
                Target::AtMost(max) => {
                    let ms = max * 1000.0;
                    match (r.ours.usable(), r.ours.median()) {
                        (true, Some(_)) => {
                            let good = r.ours.max() <= max;
                            ok &= good;
                            format!(
                                "every sample ≤{ms:.0} ms: {}",
                                if good { "ok" } else { "MISS" }
                            )
                        }
                        _ => {
                            ok = false;
                            format!("every sample ≤{ms:.0} ms: n/a")
                        }
                    }
                }
                Target::FasterThanGo(f) => {
                    match (r.ours.usable(), r.ours.median(), r.go.median()) {
                        (true, Some(o), Some(g)) if o > 0.0 => {
                            let good = g / o >= f;
                            ok &= good;
                            format!("≥{f}× faster than Go: {}", if good { "ok" } else { "MISS" })
                        }
                        _ => {
                            ok = false;
                            format!("≥{f}× faster than Go: n/a")
                        }
                    }
                }
            };
            parts.push(v);
        }
        if let Some(mib) = r.rss_target_mib {
            match r.ours.peak_rss() {
                Some(k) if r.ours.error.is_none() => {
                    let good = k <= mib * 1024;
                    ok &= good;
                    parts.push(format!(
                        "RSS ≤{mib} MiB: {}",
                        if good { "ok" } else { "MISS" }
                    ));
                }
                _ => {
                    ok = false;
                    parts.push(format!("RSS ≤{mib} MiB: n/a"));
                }
            }
        }
        if r.ours.fail.is_some() {
            ok = false;
        }
        (!parts.is_empty()).then(|| (parts.join(", "), ok))
    }

    /// Workloads where we miss a target (or cannot be measured against it).
    pub fn misses(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| self.verdict(r).is_some_and(|(_, ok)| !ok))
            .collect()
    }

    fn cells(&self, r: &Row) -> [String; 8] {
        let lim = r
            .limit
            .as_ref()
            .and_then(|l| self.limits.get(l).map(|c| (l, c)));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "–".into(),
        };
        let ours_m = r.ours.usable().then(|| r.ours.median()).flatten();
        let go_m = r.go.usable().then(|| r.go.median()).flatten();
        let mib = |c: &Cell| {
            c.peak_rss()
                .map(|k| format!("{:.0}", k as f64 / 1024.0))
                .unwrap_or("–".into())
        };
        [
            format!("{} {}", r.driver, r.workload),
            r.ours.show("ours"),
            r.go.show("go"),
            ratio(go_m, ours_m),
            match lim {
                Some((name, c)) => format!(
                    "{name}: {}",
                    c.median().map(secs).unwrap_or_else(|| c.show("limit"))
                ),
                None => "–".into(),
            },
            ratio(ours_m, lim.and_then(|(_, c)| c.median())),
            format!("{} / {}", mib(&r.ours), mib(&r.go)),
            self.verdict(r)
                .map(|(v, _)| v)
                .unwrap_or_else(|| "–".into()),
        ]
    }

    /// The table as markdown.
    pub fn markdown(&self, title: &str) -> String {
        let mut s = format!("# {title}\n\n");
        s.push_str("| workload | ours median (min–max) | Go | Go/ours | limit | ours/limit | RSS MiB ours / Go | target |\n");
        s.push_str("|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let c = self.cells(r);
            let _ = writeln!(s, "| {} |", c.map(|x| x.replace('|', "\\|")).join(" | "));
        }
        s.push_str("\n| reference (limit) | median (min–max) | peak RSS MiB |\n|---|---|---|\n");
        for (name, c) in &self.limits {
            let rss = c
                .peak_rss()
                .map(|k| format!("{:.0}", k as f64 / 1024.0))
                .unwrap_or("–".into());
            let _ = writeln!(s, "| {name} | {} | {rss} |", c.show("limit"));
        }
        if !self.skipped.is_empty() {
            s.push('\n');
            for k in &self.skipped {
                let _ = writeln!(s, "- skipped: {k}");
            }
        }
        s
    }

    /// The table as aligned text for the terminal.
    pub fn text(&self) -> String {
        let header = [
            "workload",
            "ours median (min–max)",
            "Go",
            "Go/ours",
            "limit",
            "ours/limit",
            "RSS ours/Go",
            "target",
        ]
        .map(String::from);
        let mut lines: Vec<[String; 8]> = vec![header];
        lines.extend(self.rows.iter().map(|r| self.cells(r)));
        let mut width = [0usize; 8];
        for l in &lines {
            for (i, c) in l.iter().enumerate() {
                width[i] = width[i].max(c.chars().count().min(60));
            }
        }
        let mut s = String::new();
        for l in &lines {
            for (i, c) in l.iter().enumerate() {
                let pad = width[i].saturating_sub(c.chars().count());
                let _ = write!(s, "{c}{}  ", " ".repeat(pad));
            }
            s.push('\n');
        }
        s.push_str("\nreferences:\n");
        for (name, c) in &self.limits {
            let _ = writeln!(s, "  {name}: {}", c.show("limit"));
        }
        for k in &self.skipped {
            let _ = writeln!(s, "skipped: {k}");
        }
        s
    }

    /// Everything as JSON.
    pub fn json(&self, params: Value) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let lim = r.limit.as_ref().and_then(|l| self.limits.get(l));
                let (verdict, ok) = self
                    .verdict(r)
                    .map_or((None, None), |(v, ok)| (Some(v), Some(ok)));
                let om = r.ours.usable().then(|| r.ours.median()).flatten();
                let gm = r.go.usable().then(|| r.go.median()).flatten();
                json!({
                    "driver": r.driver,
                    "workload": r.workload,
                    "ours": r.ours.json(),
                    "go": r.go.json(),
                    "go_over_ours": om.zip(gm).map(|(o, g)| g / o),
                    "limit": r.limit,
                    "limit_median_s": lim.and_then(Cell::median),
                    "ours_over_limit": om.zip(lim.and_then(Cell::median)).map(|(o, l)| o / l),
                    "target": verdict,
                    "target_met": ok,
                })
            })
            .collect();
        let limits: BTreeMap<&String, Value> =
            self.limits.iter().map(|(k, c)| (k, c.json())).collect();
        json!({"params": params, "rows": rows, "limits": limits, "skipped": self.skipped})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_a_driver_stay_together() {
        let mut r = Results::default();
        for (d, w) in [
            ("vfs", "a"),
            ("vfs", "b"),
            ("overlay", "a"),
            ("vfs", "late"),
            ("overlay", "late"),
            ("vfs", "a"),
        ] {
            r.row(d, w);
        }
        let order: Vec<String> = r
            .rows
            .iter()
            .map(|x| format!("{} {}", x.driver, x.workload))
            .collect();
        assert_eq!(
            order,
            ["vfs a", "vfs b", "vfs late", "overlay a", "overlay late"]
        );
    }

    #[test]
    fn medians_ratios_and_verdicts() {
        let mut r = Results::default();
        r.limits.insert(
            "tar -x small.tar".into(),
            Cell {
                secs: vec![1.0, 2.0, 3.0],
                rss_kib: vec![1000],
                ..Cell::default()
            },
        );
        let row = r.row("vfs", "applydiff small (tar)");
        row.limit = Some("tar -x small.tar".into());
        row.target = Some(Target::Limit(1.3));
        row.rss_target_mib = Some(32);
        row.ours = Cell {
            secs: vec![2.5, 2.4, 9.0],
            rss_kib: vec![20_000, 30_000],
            ..Cell::default()
        };
        row.go = Cell {
            secs: vec![5.0, 4.8],
            rss_kib: vec![80_000],
            ..Cell::default()
        };
        let md = r.markdown("t");
        assert!(md.contains("| vfs applydiff small (tar) | 2.50 s (2.40 s–9.00 s) | 4.90 s (4.80 s–5.00 s) | 1.96 |"), "{md}");
        assert!(md.contains("≤1.3× limit: ok, RSS ≤32 MiB: ok"), "{md}");
        r.limits.insert(
            "tar -x small.tar + sync".into(),
            Cell {
                secs: vec![5.0],
                ..Cell::default()
            },
        );
        let md = r.markdown("t");
        assert!(
            md.contains("≤1.3× limit: ok (0.50× tar -x small.tar + sync), RSS"),
            "{md}"
        );
        assert!(r.misses().is_empty());
        r.cell("vfs", "applydiff small (tar)", Imp::Ours).secs = vec![3.0];
        assert_eq!(r.misses().len(), 1);
        let unsupported = r.cell("vfs", "status", Imp::Ours);
        unsupported.error = Some("status: unrecognized command.".into());
        assert!(
            r.text()
                .contains("n/a (ours: status: unrecognized command.)")
        );
        let j = r.json(json!({}));
        assert_eq!(j["rows"][0]["ours_over_limit"].as_f64(), Some(1.5));
    }

    #[test]
    fn import_target_compares_with_our_apply_and_the_limit() {
        let mut r = Results::default();
        let w = super::super::IMPORT_IMAGE;
        r.limits.insert(
            super::super::skopeo_limit("vfs"),
            Cell {
                secs: vec![3.5],
                ..Cell::default()
            },
        );
        r.cell("vfs", "applydiff small (tar)", Imp::Ours).secs = vec![1.0];
        r.cell("vfs", w, Imp::Ours).secs = vec![1.05];
        r.cell("vfs", w, Imp::Ours).rss_kib = vec![1000];
        let row = r.rows.iter().find(|x| x.workload == w).unwrap().clone();
        let (v, ok) = r.verdict(&row).unwrap();
        assert!(ok, "{v}");
        assert!(
            v.starts_with("≤1.1× applydiff small (tar): ok, ≥3× faster than limit: ok"),
            "{v}"
        );
        // 1.5× our apply misses; 2.3× faster than skopeo misses too.
        r.cell("vfs", w, Imp::Ours).secs = vec![1.5];
        let row = r.rows.iter().find(|x| x.workload == w).unwrap().clone();
        let (v, ok) = r.verdict(&row).unwrap();
        assert!(!ok);
        assert!(
            v.contains("applydiff small (tar): MISS") && v.contains("limit: MISS"),
            "{v}"
        );
    }

    #[test]
    fn parallel_import_is_a_ratio_to_our_one_by_one_apply() {
        let mut r = Results::default();
        let (w, serial) = (super::super::PARALLEL_IMPORT, super::super::PARALLEL_SERIAL);
        r.cell("overlay", serial, Imp::Ours).secs = vec![10.0, 12.0];
        r.cell("overlay", serial, Imp::Go).secs = vec![20.0];
        r.cell("overlay", w, Imp::Ours).secs = vec![6.0];
        let row = r.rows.iter().find(|x| x.workload == w).unwrap().clone();
        let (v, ok) = r.verdict(&row).unwrap();
        assert!(ok, "{v}");
        assert_eq!(v, format!("0.55× {serial} (≤0.65×): ok"));
        r.cell("overlay", w, Imp::Ours).secs = vec![8.0];
        let row = r.rows.iter().find(|x| x.workload == w).unwrap().clone();
        let (v, ok) = r.verdict(&row).unwrap();
        assert!(!ok);
        assert_eq!(v, format!("0.73× {serial} (≤0.65×): MISS"));
        // Without the one-by-one row there is nothing to compare with.
        let mut lone = Results::default();
        lone.cell("overlay", w, Imp::Ours).secs = vec![6.0];
        let row = lone.rows[0].clone();
        let (v, ok) = lone.verdict(&row).unwrap();
        assert!(!ok);
        assert!(v.ends_with(": n/a"), "{v}");
    }

    #[test]
    fn seconds_formatting() {
        assert_eq!(secs(12.34), "12.3 s");
        assert_eq!(secs(1.234), "1.23 s");
        assert_eq!(secs(0.0305), "30.5 ms");
        assert_eq!(secs(0.000_25), "250 µs");
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    }
}

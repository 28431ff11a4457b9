//! After the workers stop: every item a worker committed is there with its names, data and
//! files, nothing deleted is, no record is unaccounted for, `check` (ours) is clean, Go loads
//! the store, nothing is left mounted; lost or resurrected names on shared items are put down
//! to Go 1.43's read-then-set `add-names` when one of its calls on that item overlapped.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use serde_json::Value;

use super::worker::{Env, Exec, Kind, NameOp, Outcome, Slot, Tool, digest, exec};

/// What the verification found.
#[derive(Default, Debug)]
pub struct Verified {
    /// Everything wrong, one line each.
    pub errors: Vec<String>,
    /// What was checked, by kind.
    pub counts: BTreeMap<&'static str, u64>,
    /// Shared-item names that a worker added and that are gone, with an overlapping
    /// read-then-set names update on the same item (Go 1.43's `add-names`, podman 4.3's
    /// `tag`/`untag`), by the tools that ran those: their race, not ours.
    pub race_lost: BTreeMap<String, u64>,
    /// Shared-item names that a worker removed and that are back, likewise.
    pub race_resurrected: BTreeMap<String, u64>,
    /// Names lost (or resurrected) with no read-then-set update to blame.
    pub unexplained_names: u64,
}

impl Verified {
    fn count(&mut self, what: &'static str, n: u64) {
        *self.counts.entry(what).or_default() += n;
    }
}

/// The store's records, read with our binary.
struct Records {
    by_kind: BTreeMap<Kind, BTreeMap<String, Value>>,
}

impl Records {
    fn load(env: &Env, slot: &Slot) -> Result<Self, String> {
        let mut by_kind = BTreeMap::new();
        for (kind, cmd) in [
            (Kind::Layer, "layers"),
            (Kind::Image, "images"),
            (Kind::Container, "containers"),
        ] {
            let x = exec(env, slot, Tool::Ours, &[cmd.into(), "--json".into()]);
            if !x.ok {
                return Err(format!("ours {cmd} --json: {}", x.err_line()));
            }
            let v: Value =
                serde_json::from_slice(&x.stdout).map_err(|e| format!("ours {cmd} --json: {e}"))?;
            let mut m = BTreeMap::new();
            for r in v.as_array().cloned().unwrap_or_default() {
                if let Some(id) = r["id"].as_str() {
                    m.insert(id.to_string(), r.clone());
                }
            }
            by_kind.insert(kind, m);
        }
        Ok(Records { by_kind })
    }

    fn get(&self, kind: Kind, id: &str) -> Option<&Value> {
        self.by_kind.get(&kind).and_then(|m| m.get(id))
    }

    fn names(v: &Value) -> BTreeSet<String> {
        v["names"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every name in the store → the IDs carrying it.
    fn name_index(&self) -> BTreeMap<String, Vec<String>> {
        let mut idx: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in self.by_kind.values() {
            for (id, v) in m {
                for n in Self::names(v) {
                    idx.entry(n).or_default().push(id.clone());
                }
            }
        }
        idx
    }
}

/// The tools of the read-then-set names updates other than `op` itself, on the same item,
/// that ran while `op` did ("go", "podman", "go+podman"), or `None`.
fn rmw_overlap(op: &NameOp, all: &[&NameOp]) -> Option<String> {
    let tools: BTreeSet<Tool> = all
        .iter()
        .filter(|g| {
            g.rmw
                && g.item == op.item
                && !(g.worker == op.worker && g.start == op.start)
                && g.start < op.end
                && op.start < g.end
        })
        .map(|g| g.tool)
        .collect();
    (!tools.is_empty()).then(|| tools.iter().map(|t| t.name()).collect::<Vec<_>>().join("+"))
}

/// Verifies the store against the workers' outcomes.
pub fn verify(env: &Env, outs: &[(usize, Tool, &Outcome)]) -> Verified {
    let mut v = Verified::default();
    let slot = Slot::default();
    let rec = match Records::load(env, &slot) {
        Ok(r) => r,
        Err(e) => {
            v.errors.push(e);
            return v;
        }
    };
    let names = rec.name_index();
    let uncertain: BTreeSet<&String> = outs.iter().flat_map(|(_, _, o)| &o.uncertain).collect();
    // Records some worker (or the set-up) accounts for.
    let mut known: BTreeSet<String> = env.shared.all().into_iter().map(|(_, i)| i).collect();

    for (w, tool, o) in outs {
        let who = format!("worker {w} ({})", tool.name());
        for (kind, items) in [
            (Kind::Layer, &o.layers),
            (Kind::Image, &o.images),
            (Kind::Container, &o.containers),
        ] {
            for (id, item) in items.iter() {
                known.insert(id.clone());
                if uncertain.contains(id) {
                    continue;
                }
                let Some(r) = rec.get(kind, id) else {
                    v.errors.push(format!(
                        "{who}: committed {} {id} ({:?}) is missing",
                        kind.word(),
                        item.names
                    ));
                    continue;
                };
                v.count(
                    match kind {
                        Kind::Layer => "layers",
                        Kind::Image => "images",
                        Kind::Container => "containers",
                    },
                    1,
                );
                let have = Records::names(r);
                let want: BTreeSet<String> = item
                    .names
                    .iter()
                    .filter(|n| !uncertain.contains(n))
                    .cloned()
                    .collect();
                let have_certain: BTreeSet<String> = have
                    .iter()
                    .filter(|n| !uncertain.contains(n))
                    .cloned()
                    .collect();
                v.count("names", want.len() as u64);
                if have_certain != want {
                    v.errors.push(format!(
                        "{who}: {} {id} has names {have:?}, expected {want:?}",
                        kind.word()
                    ));
                }
                let parent_key = match kind {
                    Kind::Layer => "parent",
                    Kind::Image => "layer",
                    Kind::Container => "image",
                };
                if r[parent_key].as_str().map(str::to_string) != item.parent {
                    v.errors.push(format!(
                        "{who}: {} {id} has {parent_key} {}, expected {:?}",
                        kind.word(),
                        r[parent_key],
                        item.parent
                    ));
                }
                if let Some(d) = &item.diff {
                    v.count("layer diffs", 1);
                    if r["diff-digest"].as_str() != Some(d) {
                        v.errors.push(format!(
                            "{who}: layer {id} has diff-digest {}, expected {d}",
                            r["diff-digest"]
                        ));
                    }
                }
                // podman keeps data of its own on its containers.
                if *tool != Tool::Podman {
                    let have: BTreeSet<&str> = r["big-data-names"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let want: BTreeSet<&str> = item.data.keys().map(String::as_str).collect();
                    let extra: Vec<&&str> = have
                        .difference(&want)
                        .filter(|k| !uncertain.contains(&format!("{id}/{k}")))
                        .collect();
                    if !extra.is_empty() {
                        v.errors.push(format!(
                            "{who}: {} {id} has data items no worker set: {extra:?}",
                            kind.word()
                        ));
                    }
                }
                for (key, want) in &item.data {
                    if uncertain.contains(&format!("{id}/{key}")) {
                        continue;
                    }
                    v.count("big data items", 1);
                    let have = if kind == Kind::Layer {
                        let x: Exec = exec(
                            env,
                            &slot,
                            Tool::Ours,
                            &["get-layer-data".into(), id.clone(), key.clone()],
                        );
                        x.ok.then(|| digest(&x.stdout))
                    } else {
                        r["big-data-digests"][key.as_str()]
                            .as_str()
                            .map(str::to_string)
                    };
                    if have.as_deref() != Some(want.as_str()) {
                        v.errors.push(format!(
                            "{who}: {} {id} data {key:?} is {have:?}, expected {want}",
                            kind.word()
                        ));
                    }
                }
                if kind == Kind::Container {
                    let layer = r["layer"].as_str().unwrap_or_default().to_string();
                    known.insert(layer.clone());
                    let dir = match env.driver.as_str() {
                        "overlay" => env.graph.join("overlay").join(&layer).join("diff"),
                        d => env.graph.join(d).join("dir").join(&layer),
                    };
                    for (file, want) in &item.files {
                        v.count("files in container layers", 1);
                        let p: PathBuf = dir.join(file);
                        match fs::read(&p) {
                            Ok(b) if digest(&b) == *want => {}
                            Ok(b) => v.errors.push(format!(
                                "{who}: {} has digest {}, expected {want}",
                                p.display(),
                                digest(&b)
                            )),
                            Err(e) => v.errors.push(format!("{who}: {}: {e}", p.display())),
                        }
                    }
                }
            }
        }
        for (kind, id) in &o.deleted {
            v.count("deleted items absent", 1);
            if rec.get(*kind, id).is_some() {
                v.errors
                    .push(format!("{who}: deleted {} {id} is present", kind.word()));
            }
        }
        for n in &o.gone_names {
            if uncertain.contains(n) {
                continue;
            }
            v.count("removed names absent", 1);
            if let Some(ids) = names.get(n) {
                v.errors
                    .push(format!("{who}: removed name {n} is still on {ids:?}"));
            }
        }
    }
    // Containers made by the set-up own a layer too.
    for c in &env.shared.containers {
        if let Some(r) = rec.get(Kind::Container, c)
            && let Some(l) = r["layer"].as_str()
        {
            known.insert(l.to_string());
        }
    }
    for (kind, m) in &rec.by_kind {
        for (id, r) in m {
            let n = Records::names(r);
            if !known.contains(id)
                && !uncertain.contains(id)
                && !n.iter().any(|n| uncertain.contains(n))
            {
                v.errors.push(format!(
                    "{} {id} ({n:?}) is in the store but no worker committed it (or it was deleted)",
                    kind.word()
                ));
            }
        }
    }

    // Names on shared items.
    let ops: Vec<&NameOp> = outs.iter().flat_map(|(_, _, o)| &o.name_ops).collect();
    for op in &ops {
        if op.missing {
            // An untag found its name gone: the name's addition must have overlapped a
            // read-then-set update.
            v.count("names removed from shared items", 1);
            let added = ops
                .iter()
                .find(|a| a.add && a.ok && a.item == op.item && a.name == op.name);
            match added.and_then(|a| rmw_overlap(a, &ops)) {
                Some(who) => *v.race_lost.entry(who).or_default() += 1,
                None => {
                    v.unexplained_names += 1;
                    v.errors.push(format!(
                        "worker {}: name {} on shared item {} was gone when it was to be removed, and no read-then-set names update overlapped its addition",
                        op.worker, op.name, op.item
                    ));
                }
            }
            continue;
        }
        if !op.ok || uncertain.contains(&op.name) {
            continue;
        }
        let held = outs.iter().any(|(w, _, o)| {
            *w == op.worker && o.shared_names.contains(&(op.item.clone(), op.name.clone()))
        });
        let on_item = names
            .get(&op.name)
            .is_some_and(|ids| ids.contains(&op.item));
        if op.add && held {
            v.count("names on shared items", 1);
            if !on_item {
                if let Some(who) = rmw_overlap(op, &ops) {
                    *v.race_lost.entry(who).or_default() += 1;
                } else {
                    v.unexplained_names += 1;
                    v.errors.push(format!(
                        "worker {}: name {} added to shared item {} is lost, and no read-then-set names update on it overlapped",
                        op.worker, op.name, op.item
                    ));
                }
            }
        } else if !op.add {
            v.count("names removed from shared items", 1);
            if on_item {
                if let Some(who) = rmw_overlap(op, &ops) {
                    *v.race_resurrected.entry(who).or_default() += 1;
                } else {
                    v.unexplained_names += 1;
                    v.errors.push(format!(
                        "worker {}: name {} removed from shared item {} is back, and no read-then-set names update on it overlapped",
                        op.worker, op.name, op.item
                    ));
                }
            }
        }
    }

    // `check` with ours: clean and silent.
    let x = exec(env, &slot, Tool::Ours, &["check".into()]);
    v.count("check runs", 1);
    if !x.ok || !x.stdout.is_empty() {
        v.errors.push(format!(
            "ours check is not clean ({}): {}{}",
            if x.ok { "exit 0" } else { "failed" },
            String::from_utf8_lossy(&x.stdout),
            x.stderr
        ));
    }
    // Go loads the store.
    for cmd in ["layers", "images", "containers"] {
        let x = exec(env, &slot, Tool::Go, &[cmd.into()]);
        v.count("Go loads", 1);
        if !x.ok {
            v.errors
                .push(format!("Go {cmd} fails on the store: {}", x.err_line()));
        }
    }
    // Nothing is left mounted.
    let mp = env
        .run
        .join(format!("{}-layers", env.driver))
        .join("mountpoints.json");
    match fs::read(&mp) {
        Ok(b) => match serde_json::from_slice::<Value>(&b) {
            Ok(Value::Array(a)) => {
                for m in a {
                    if m["count"].as_u64().unwrap_or(0) > 0 {
                        v.errors.push(format!(
                            "{} still counts a mount after every worker unmounted: {m}",
                            mp.display()
                        ));
                    }
                }
            }
            Ok(other) => v
                .errors
                .push(format!("{}: not an array: {other}", mp.display())),
            Err(e) => v.errors.push(format!("{}: {e}", mp.display())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => v.errors.push(format!("{}: {e}", mp.display())),
    }
    for m in super::mounts_under(&env.graph) {
        if m.ends_with("/merged") || env.driver == "vfs" {
            v.errors
                .push(format!("{m} is still mounted after every worker unmounted"));
        }
    }
    v
}

//! Comparing a layer chain's expected tree (from its diffs) with the mounted one, for `check`'s content checks.

use super::*;

/// Walks a layer chain from `top`, marking layers referenced; returns the errors of the
/// layers on the way (their own, and `missing(layer)` for unknown ones).
pub(super) fn walk_chain(
    report: &CheckReport,
    top: &str,
    referenced: &mut HashSet<String>,
    missing: impl Fn(&str) -> String,
) -> Vec<String> {
    let mut errs = Vec::new();
    let mut seen = HashSet::new();
    let mut layer = top.to_string();
    while !layer.is_empty() && seen.insert(layer.clone()) {
        match report.layer_parents.get(&layer) {
            None => {
                errs.push(missing(&layer));
                break;
            }
            Some(parent) => {
                referenced.insert(layer.clone());
                for map in [&report.layers, &report.ro_layers] {
                    if let Some(e) = map.get(&layer) {
                        errs.extend(e.iter().cloned());
                    }
                }
                layer = parent.clone();
            }
        }
    }
    errs
}

// ------------------------------------------------------------------ content comparison

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Dir,
    File,
    Symlink,
    Char,
    Block,
    Fifo,
    Other,
}

impl Kind {
    pub(super) fn from_typeflag(t: u8) -> Kind {
        match t {
            b'0' | 0 | b'7' | b'1' => Kind::File,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            _ => Kind::Other,
        }
    }

    pub(super) fn from_type(ft: rustix::fs::FileType) -> Kind {
        use rustix::fs::FileType as T;
        match ft {
            T::Directory => Kind::Dir,
            T::RegularFile => Kind::File,
            T::Symlink => Kind::Symlink,
            T::CharacterDevice => Kind::Char,
            T::BlockDevice => Kind::Block,
            T::Fifo => Kind::Fifo,
            _ => Kind::Other,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) kind: Kind,
    pub(super) mode: u32,
    pub(super) uid: i64,
    pub(super) gid: i64,
    pub(super) size: i64,
    /// Described by a header (not just implied as a parent directory).
    pub(super) explicit: bool,
    /// Permissions are not compared (hard-linked inodes).
    pub(super) any_mode: bool,
}

/// Where a tar member lands below the layer root: Go's `path.Clean` of the name inside the
/// root (`..` clamped there), relative to it (`""` for the root itself).
pub(super) fn clean(path: &str) -> String {
    let rooted = storage_gocompat::path::clean_str(&format!("/{path}"));
    rooted.trim_start_matches('/').to_owned()
}

pub(super) fn remove_subtree(tree: &mut BTreeMap<String, Entry>, path: &str, keep_self: bool) {
    let prefix = format!("{path}/");
    let doomed: Vec<String> = tree
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in doomed {
        tree.remove(&k);
    }
    if !keep_self {
        tree.remove(path);
    }
}

/// The tree the layer chain's diffs describe.
pub(super) fn expected_tree(chain: &[&Vec<DiffEntry>]) -> BTreeMap<String, Entry> {
    let mut tree: BTreeMap<String, Entry> = BTreeMap::new();
    for headers in chain {
        for h in headers.iter() {
            let path = clean(&h.path);
            if path.is_empty() {
                continue;
            }
            let (dir, base) = match path.rsplit_once('/') {
                Some((d, b)) => (d.to_string(), b.to_string()),
                None => (String::new(), path.clone()),
            };
            if let Some(hidden) = base.strip_prefix(".wh.") {
                if hidden == ".wh..opq" {
                    if !dir.is_empty() {
                        remove_subtree(&mut tree, &dir, true);
                    } else {
                        tree.clear();
                    }
                } else if !hidden.starts_with(".wh.") {
                    let victim = if dir.is_empty() {
                        hidden.to_string()
                    } else {
                        format!("{dir}/{hidden}")
                    };
                    remove_subtree(&mut tree, &victim, false);
                }
                continue;
            }
            // Implied parent directories.
            let mut acc = String::new();
            for part in dir.split('/').filter(|p| !p.is_empty()) {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(part);
                tree.entry(acc.clone()).or_insert(Entry {
                    kind: Kind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    size: 0,
                    explicit: false,
                    any_mode: false,
                });
            }
            let mut entry = Entry {
                kind: Kind::from_typeflag(h.typeflag),
                mode: h.mode & 0o777,
                uid: h.uid,
                gid: h.gid,
                size: h.size,
                explicit: true,
                any_mode: false,
            };
            if h.typeflag == b'1' {
                // Extractors differ on whether a hard link's header mode is applied to the
                // shared inode (Go's is not, by accident): do not judge permissions there.
                let target = clean(&h.linkname);
                match tree.get_mut(&target) {
                    Some(t) => {
                        t.any_mode = true;
                        entry = t.clone();
                    }
                    None => entry.explicit = false,
                }
            }
            if entry.kind != Kind::Dir {
                remove_subtree(&mut tree, &path, true);
            }
            if entry.kind == Kind::Other {
                continue;
            }
            tree.insert(path, entry);
        }
    }
    tree
}

/// The tree found under `root`, walked through descriptors resolved inside it: no
/// symbolic link is followed, in any component ([`storage_io::confined`]).
pub(super) fn actual_tree(root: &Path) -> std::io::Result<BTreeMap<String, Entry>> {
    use storage_io::confined;
    let layer = confined::Root::open(root)?;
    let mut tree = BTreeMap::new();
    let mut stack: Vec<(Vec<u8>, String)> = vec![(Vec::new(), String::new())];
    while let Some((dir_rel, rel)) = stack.pop() {
        let dir = layer.open_dir_for_listing(&dir_rel)?;
        for (name, _) in confined::list_dir(&dir)? {
            let st =
                rustix::fs::statat(&dir, name.as_slice(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
            let shown = String::from_utf8_lossy(&name);
            let path = if rel.is_empty() {
                shown.into_owned()
            } else {
                format!("{rel}/{shown}")
            };
            let kind = Kind::from_type(rustix::fs::FileType::from_raw_mode(st.st_mode));
            if kind == Kind::Dir {
                let child = if dir_rel.is_empty() {
                    name.clone()
                } else {
                    [&dir_rel[..], b"/", &name[..]].concat()
                };
                stack.push((child, path.clone()));
            }
            tree.insert(
                path,
                Entry {
                    kind,
                    mode: st.st_mode & 0o777,
                    uid: i64::from(st.st_uid),
                    gid: i64::from(st.st_gid),
                    size: st.st_size,
                    explicit: true,
                    any_mode: false,
                },
            );
        }
    }
    Ok(tree)
}

/// What the content comparison leaves out.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ContentRules {
    /// `ignore_chown_errors=true`: owners may differ from the diffs' (Go ignores them).
    pub(super) ignore_ownership: bool,
    /// Rootless: extraction in a user namespace skips character and block devices (it cannot
    /// make them), so their absence is no damage.
    pub(super) devices_skipped: bool,
}

impl ContentRules {
    pub(super) fn for_options(driver_options: &[String]) -> Self {
        let ignore_ownership = driver_options.iter().any(|o| {
            o.split_once('=').is_some_and(|(k, v)| {
                k.rsplit('.')
                    .next()
                    .unwrap_or(k)
                    .eq_ignore_ascii_case("ignore_chown_errors")
                    && matches!(v.to_ascii_lowercase().as_str(), "1" | "t" | "true")
            })
        });
        ContentRules {
            ignore_ownership,
            devices_skipped: storage_userns::is_rootless(),
        }
    }
}

/// Compares the mounted tree of `layer` with the union of its chain's diffs; returns Go-style
/// difference descriptions (`+/added`, `-/removed`, `/changed(size:1→2)`). Empty when the
/// chain's diffs are not all known.
pub(super) fn compare_content(
    layer: &Layer,
    all: &[Layer],
    headers: &HashMap<String, Vec<DiffEntry>>,
    mount_point: &Path,
    rules: ContentRules,
) -> Vec<String> {
    let mut chain: Vec<&Vec<DiffEntry>> = Vec::new();
    let mut cur = layer.id.clone();
    let mut seen = HashSet::new();
    while !cur.is_empty() && seen.insert(cur.clone()) {
        let Some(h) = headers.get(&cur) else {
            return Vec::new();
        };
        chain.insert(0, h);
        cur = all
            .iter()
            .find(|l| l.id == cur)
            .map(|l| l.parent.clone())
            .unwrap_or_default();
    }
    let expected = expected_tree(&chain);
    let actual = match actual_tree(mount_point) {
        Ok(t) => t,
        Err(e) => return vec![format!("reading {}: {e}", mount_point.display())],
    };
    let ownership = layer.uidmap.is_empty() && layer.gidmap.is_empty() && !rules.ignore_ownership;
    let mut diffs = Vec::new();
    let slash = |k: Kind| if k == Kind::Dir { "/" } else { "" };
    for (path, want) in &expected {
        match actual.get(path) {
            None if rules.devices_skipped && matches!(want.kind, Kind::Char | Kind::Block) => {}
            None => diffs.push(format!("-/{path}{}", slash(want.kind))),
            Some(have) => {
                if !want.explicit {
                    if have.kind != Kind::Dir {
                        diffs.push(format!("/{path}(filetype:dir→other)"));
                    }
                    continue;
                }
                let mut attrs = Vec::new();
                if want.kind != have.kind {
                    attrs.push(format!("filetype:{:?}→{:?}", want.kind, have.kind));
                }
                if ownership && want.uid != have.uid {
                    attrs.push(format!("uid:{}→{}", want.uid, have.uid));
                }
                if ownership && want.gid != have.gid {
                    attrs.push(format!("gid:{}→{}", want.gid, have.gid));
                }
                if want.kind == Kind::File && have.kind == Kind::File && want.size != have.size {
                    attrs.push(format!("size:{}→{}", want.size, have.size));
                }
                if want.kind == have.kind
                    && want.kind != Kind::Symlink
                    && !want.any_mode
                    && want.mode != have.mode
                {
                    attrs.push(format!("mode:{:04o}→{:04o}", want.mode, have.mode));
                }
                if !attrs.is_empty() {
                    diffs.push(format!("/{path}({})", attrs.join(",")));
                }
            }
        }
    }
    for (path, have) in &actual {
        if !expected.contains_key(path) {
            diffs.push(format!("+/{path}{}", slash(have.kind)));
        }
    }
    diffs
}

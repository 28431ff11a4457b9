//! Automatic user namespaces (Go's `userns.go` and `idset.go`): host ID ranges for a
//! container that asked for `AutoUserNs`, taken from the subordinate IDs of the configured
//! user and not used by any existing container's `uidmap`/`gidmap`.
//!
//! Allocation happens under `userns.lock` (exclusive), reading every container record, so
//! that Go processes sharing the store and this one never hand out the same range: a range
//! is "used" exactly when some container record lists it, whoever wrote the record.

use std::path::{Path, PathBuf};

use storage_layers::{CreateLayerOptions, LayersRead, LayersWrite};
use storage_types::{Error, ErrorKind, IdMap, Image, Result, go_quote};

use crate::Store;

/// Go's default `auto-userns-min-size`.
pub(crate) const DEFAULT_MIN_SIZE: u32 = 1024;
/// Go's default `auto-userns-max-size`.
pub(crate) const DEFAULT_MAX_SIZE: u32 = 65536;
/// Go's default `root-auto-userns-user`.
pub(crate) const DEFAULT_USER: &str = "containers";
/// IDs (and names) of "nobody" are left out of the size estimate from `/etc/passwd`.
const NOBODY: i64 = 65534;

/// What a container asking for an automatic user namespace wants (Go's
/// `types.AutoUserNsOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutoUserNsOptions {
    /// Size of the namespace; 0 = estimate it from the image (at least
    /// `auto-userns-min-size`, at most `auto-userns-max-size`).
    pub size: u32,
    /// Minimum size when the size is estimated (0 = 1).
    pub initial_size: u32,
    /// `/etc/passwd` to read for the estimate instead of the image's (a host path).
    pub passwd_file: Option<PathBuf>,
    /// `/etc/group` to read for the estimate instead of the image's (a host path).
    pub group_file: Option<PathBuf>,
    /// Extra UID ranges the container gets besides the automatic ones; their container IDs
    /// are left out of the automatic range and their host IDs are not allocated.
    pub additional_uid_mappings: Vec<IdMap>,
    /// Extra GID ranges (see `additional_uid_mappings`).
    pub additional_gid_mappings: Vec<IdMap>,
}

/// The store's auto-userns settings (`storage.conf`) and the cached subordinate ranges.
#[derive(Debug)]
pub(crate) struct AutoUserNsConfig {
    /// `root-auto-userns-user` (empty: `containers`).
    pub user: String,
    /// `auto-userns-min-size`.
    pub min_size: u32,
    /// `auto-userns-max-size`.
    pub max_size: u32,
    /// The subordinate host IDs of the user, looked up once (Go caches them per store).
    pub available: std::sync::Mutex<Option<(IdSet, IdSet)>>,
}

impl AutoUserNsConfig {
    pub(crate) fn new(user: &str, min_size: u32, max_size: u32) -> Self {
        AutoUserNsConfig {
            user: user.to_string(),
            min_size: if min_size == 0 {
                DEFAULT_MIN_SIZE
            } else {
                min_size
            },
            max_size: if max_size == 0 {
                DEFAULT_MAX_SIZE
            } else {
                max_size
            },
            available: std::sync::Mutex::new(None),
        }
    }
}

/// A set of IDs: sorted, disjoint, non-adjacent half-open intervals (`u64` so that the end
/// of a range reaching `u32::MAX` fits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IdSet(Vec<(u64, u64)>);

impl IdSet {
    /// The union of `intervals` (empty ones dropped).
    fn new(mut intervals: Vec<(u64, u64)>) -> IdSet {
        intervals.retain(|(s, e)| s < e);
        intervals.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
        for (s, e) in intervals {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        IdSet(out)
    }

    /// The host side of `maps` (Go's `getHostIDs`).
    fn host_ids(maps: &[IdMap]) -> IdSet {
        IdSet::new(
            maps.iter()
                .map(|m| {
                    (
                        u64::from(m.host_id),
                        u64::from(m.host_id) + u64::from(m.size),
                    )
                })
                .collect(),
        )
    }

    /// The container side of `maps` (Go's `getContainerIDs`).
    fn container_ids(maps: &[IdMap]) -> IdSet {
        IdSet::new(
            maps.iter()
                .map(|m| {
                    (
                        u64::from(m.container_id),
                        u64::from(m.container_id) + u64::from(m.size),
                    )
                })
                .collect(),
        )
    }

    /// How many IDs the set holds.
    fn size(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s).sum()
    }

    /// The IDs of `self` that are not in `other`.
    fn subtract(&self, other: &IdSet) -> IdSet {
        let mut out = Vec::new();
        for &(mut s, e) in &self.0 {
            for &(os, oe) in &other.0 {
                if oe <= s || os >= e {
                    continue;
                }
                if os > s {
                    out.push((s, os));
                }
                s = s.max(oe);
                if s >= e {
                    break;
                }
            }
            if s < e {
                out.push((s, e));
            }
        }
        IdSet::new(out)
    }

    /// The lowest `n` IDs of the set (Go's `findAvailable`).
    fn find_available(&self, n: u64) -> Result<IdSet> {
        let mut left = n;
        let mut out = Vec::new();
        for &(s, e) in &self.0 {
            if left == 0 {
                break;
            }
            let take = left.min(e - s);
            out.push((s, s + take));
            left -= take;
        }
        if left > 0 {
            return Err(Error::msg(
                ErrorKind::InvalidInput,
                "could not find enough available IDs",
            ));
        }
        Ok(IdSet(out))
    }

    /// Pairs host IDs (`self`) with container IDs, in ascending order on both sides (Go's
    /// `zip`): one map entry per piece where neither side's interval changes.
    fn zip(&self, container: &IdSet) -> Vec<IdMap> {
        let mut out = Vec::new();
        let (mut hi, mut ci) = (self.0.iter().copied(), container.0.iter().copied());
        let (mut h, mut c) = (hi.next(), ci.next());
        while let (Some((hs, he)), Some((cs, ce))) = (h, c) {
            let len = (he - hs).min(ce - cs);
            // Both sides come from u32 IDs, and `len` is at most one interval's length.
            let fit = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
            out.push(IdMap {
                container_id: fit(cs),
                host_id: fit(hs),
                size: fit(len),
            });
            h = if he - hs > len {
                Some((hs + len, he))
            } else {
                hi.next()
            };
            c = if ce - cs > len {
                Some((cs + len, ce))
            } else {
                ci.next()
            };
        }
        out
    }
}

/// Go's `getAutoUserNSIDMappings`: `size` container IDs from 0 (minus the container IDs
/// of the additional mappings), mapped to the lowest available host IDs not used by
/// `used_*` nor by the additional mappings' host IDs; the additional mappings follow.
fn auto_maps(
    size: u32,
    available: (&IdSet, &IdSet),
    used: (&[IdMap], &[IdMap]),
    additional: (&[IdMap], &[IdMap]),
) -> Result<(Vec<IdMap>, Vec<IdMap>)> {
    let target = IdSet::new(vec![(0, u64::from(size))]);
    let one = |available: &IdSet, used: &[IdMap], additional: &[IdMap]| -> Result<Vec<IdMap>> {
        let mut taken = used.to_vec();
        taken.extend_from_slice(additional);
        let wanted = target.subtract(&IdSet::container_ids(additional));
        let hosts = available
            .subtract(&IdSet::host_ids(&taken))
            .find_available(wanted.size())?;
        let mut maps = hosts.zip(&wanted);
        maps.extend_from_slice(additional);
        Ok(maps)
    };
    Ok((
        one(available.0, used.0, additional.0)?,
        one(available.1, used.1, additional.1)?,
    ))
}

/// The fields of the lines of a passwd- or group-style file (Go's libcontainer parser:
/// lines trimmed, blank ones skipped).
fn colon_records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(':').collect())
}

/// A number field the way libcontainer reads it: `strconv.Atoi`, errors read as 0.
fn atoi(field: Option<&&str>) -> i64 {
    field.and_then(|f| f.parse::<i64>().ok()).unwrap_or(0)
}

/// The name of UID `uid` in the host's `/etc/passwd`.
fn passwd_lookup_id(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    colon_records(&text)
        .find(|f| f.len() > 2 && atoi(f.get(2)) == i64::from(uid))
        .and_then(|f| f.first().map(|s| s.to_string()))
}

/// Go's `parseMountedFiles`: one more than the highest UID or GID in a passwd file and GID
/// in a group file (entries named `nobody` or `nogroup`, and ID 65534, are left out; an
/// unreadable file counts as empty).
pub(crate) fn size_from_user_files(passwd: &Path, group: &Path) -> u32 {
    let mut size: i64 = 0;
    let mut see = |id: i64| {
        if id != NOBODY && id >= size {
            size = id + 1;
        }
    };
    let skip = |f: &[&str]| matches!(f.first(), Some(&"nobody") | Some(&"nogroup"));
    if let Ok(text) = std::fs::read_to_string(passwd) {
        for f in colon_records(&text).filter(|f| !skip(f)) {
            see(atoi(f.get(2)));
            see(atoi(f.get(3)));
        }
    }
    if let Ok(text) = std::fs::read_to_string(group) {
        for f in colon_records(&text).filter(|f| !skip(f)) {
            see(atoi(f.get(2)));
        }
    }
    u32::try_from(size).unwrap_or(u32::MAX)
}

impl Store {
    /// Go's `getAvailableIDs`: the host IDs automatic namespaces are allocated from. As root,
    /// the subordinate ranges of `root-auto-userns-user` (default `containers`); rootless,
    /// those of `$USER` (or the rootless UID's name) as seen inside the rootless namespace,
    /// `1…size`. A user without ranges gets none (logged, as Go does).
    fn available_ids(&self) -> Result<(IdSet, IdSet)> {
        let cfg = &self.auto_userns;
        let mut cached = cfg
            .available
            .lock()
            .map_err(|_| Error::msg(ErrorKind::Other, "auto-userns state poisoned"))?;
        let rootless = storage_userns::is_rootless();
        if cached.is_none() {
            let user = if rootless {
                match std::env::var("USER") {
                    Ok(u) if !u.is_empty() => u,
                    _ => passwd_lookup_id(storage_userns::rootless_uid()).unwrap_or_default(),
                }
            } else if cfg.user.is_empty() {
                DEFAULT_USER.to_string()
            } else {
                cfg.user.clone()
            };
            let sets = storage_userns::sub_id_mappings(&user, &user)
                .map(|(u, g)| (IdSet::host_ids(&u), IdSet::host_ids(&g)))
                .unwrap_or_else(|e| {
                    tracing::error!("Cannot find mappings for user {}: {e}", go_quote(&user));
                    (IdSet::default(), IdSet::default())
                });
            *cached = Some(sets);
        }
        let (uids, gids) = cached.clone().unwrap_or_default();
        if !rootless {
            return Ok((uids, gids));
        }
        let inside = |s: &IdSet| IdSet::new(vec![(1, s.size() + 1)]);
        Ok((inside(&uids), inside(&gids)))
    }

    /// Go's `getMaxSizeFromImage`: one more than the highest ID in the `uidset`/`gidset` of
    /// the image's layers, or in its `/etc/passwd` and `/etc/group` (read through a
    /// temporary map-less layer on top of the image, removed afterwards), whichever is more.
    fn size_from_image(
        w: &mut LayersWrite<'_>,
        ro: &[LayersRead<'_>],
        image: &Image,
        opts: &AutoUserNsOptions,
    ) -> Result<u32> {
        let mut size = 0u32;
        let mut top = None;
        let mut name = image.layer.clone();
        loop {
            let found = std::iter::once(w.lookup(&name))
                .chain(ro.iter().map(|r| r.lookup(&name)))
                .flatten()
                .next()
                .cloned();
            let Some(layer) = found else {
                return Err(Error::msg(
                    ErrorKind::LayerUnknown,
                    format!("cannot find layer {}", go_quote(&name)),
                ));
            };
            for id in layer.uidset.iter().chain(layer.gidset.iter()) {
                if *id >= size {
                    size = id.saturating_add(1);
                }
            }
            let parent = layer.parent.clone();
            if top.is_none() {
                top = Some(layer);
            }
            if parent.is_empty() {
                break;
            }
            name = parent;
        }
        let (tmp, _) = w.create_with_parent(
            top.as_ref(),
            &CreateLayerOptions {
                host_uid_mapping: true,
                host_gid_mapping: true,
                ..CreateLayerOptions::default()
            },
            None,
        )?;
        let result = (|| -> Result<u32> {
            let mnt = w.mount(&tmp.id, &storage_drivers::MountOpts::default())?;
            let passwd = opts
                .passwd_file
                .clone()
                .unwrap_or_else(|| mnt.join("etc/passwd"));
            let group = opts
                .group_file
                .clone()
                .unwrap_or_else(|| mnt.join("etc/group"));
            let from_files = size_from_user_files(&passwd, &group);
            let unmounted = w.unmount(&tmp.id, true);
            unmounted?;
            Ok(from_files)
        })();
        let deleted = w
            .delete_unchecked(&tmp.id)
            .map_err(|e| e.context(format!("deleting temporary layer {}", go_quote(&tmp.id))));
        let from_files = result?;
        deleted?;
        Ok(size.max(from_files))
    }

    /// Go's `getAutoUserNS`: the maps of a new container with an automatic user namespace.
    /// The caller holds `userns.lock`, the primary layer store (`w`) and the read-only ones
    /// (`ro`); every container record is read for the ranges in use.
    pub(crate) fn auto_userns_maps(
        &self,
        w: &mut LayersWrite<'_>,
        ro: &[LayersRead<'_>],
        image: Option<&Image>,
        opts: &AutoUserNsOptions,
    ) -> Result<(Vec<IdMap>, Vec<IdMap>)> {
        let (avail_u, avail_g) = self
            .available_ids()
            .map_err(|e| e.context("cannot read mappings"))?;
        let (mut used_u, mut used_g) = (Vec::new(), Vec::new());
        for c in self.containers.read()?.containers() {
            used_u.extend_from_slice(&c.uidmap);
            used_g.extend_from_slice(&c.gidmap);
        }
        let cfg = &self.auto_userns;
        let mut size = opts.size;
        if size == 0 {
            if let Some(image) = image {
                size = Self::size_from_image(w, ro, image, opts)?;
            }
            size = size.max(cfg.min_size).max(opts.initial_size.max(1));
            if cfg.max_size > 0 && size > cfg.max_size {
                return Err(Error::msg(
                    ErrorKind::InvalidInput,
                    format!(
                        "the container needs a user namespace with size {size} that is bigger than the maximum value allowed with userns=auto {}",
                        cfg.max_size
                    ),
                ));
            }
        }
        auto_maps(
            size,
            (&avail_u, &avail_g),
            (&used_u, &used_g),
            (&opts.additional_uid_mappings, &opts.additional_gid_mappings),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: u32, h: u32, s: u32) -> IdMap {
        IdMap::new(c, h, s)
    }

    #[test]
    fn sets_union_subtract_take_zip() {
        let s = IdSet::new(vec![(10, 20), (15, 30), (40, 50), (30, 31), (5, 5)]);
        assert_eq!(s.0, vec![(10, 31), (40, 50)]);
        assert_eq!(s.size(), 31);
        let d = s.subtract(&IdSet::new(vec![(0, 12), (20, 25), (45, 46), (49, 60)]));
        assert_eq!(d.0, vec![(12, 20), (25, 31), (40, 45), (46, 49)]);
        assert_eq!(d.find_available(10).unwrap().0, vec![(12, 20), (25, 27)]);
        assert_eq!(
            d.find_available(100).unwrap_err().to_string(),
            "could not find enough available IDs"
        );
        let z = IdSet::new(vec![(100, 105), (200, 210)]).zip(&IdSet::new(vec![(0, 3), (5, 17)]));
        assert_eq!(
            z,
            vec![m(0, 100, 3), m(5, 103, 2), m(7, 200, 10)],
            "pieces follow both sides"
        );
    }

    #[test]
    fn allocation_skips_used_and_additional_ranges() {
        let avail = IdSet::new(vec![(100_000, 165_536)]);
        // Two containers hold the first 2048 IDs (one of them through two ranges).
        let used_u = [
            m(0, 100_000, 1024),
            m(0, 101_024, 512),
            m(512, 101_536, 512),
        ];
        let (u, g) = auto_maps(1024, (&avail, &avail), (&used_u, &[]), (&[], &[])).unwrap();
        assert_eq!(u, vec![m(0, 102_048, 1024)]);
        assert_eq!(g, vec![m(0, 100_000, 1024)]);
        // Additional mappings: their container IDs are cut out of 0..size, their host IDs
        // are not handed out, and they are appended.
        let extra = [m(0, 5000, 1)];
        let (u, _) = auto_maps(4, (&avail, &avail), (&[], &[]), (&extra, &[])).unwrap();
        assert_eq!(u, vec![m(1, 100_000, 3), m(0, 5000, 1)]);
        let extra_host = [m(10, 100_000, 2)];
        let (u, _) = auto_maps(4, (&avail, &avail), (&[], &[]), (&extra_host, &[])).unwrap();
        assert_eq!(u, vec![m(0, 100_002, 4), m(10, 100_000, 2)]);
        let e = auto_maps(70_000, (&avail, &avail), (&[], &[]), (&[], &[])).unwrap_err();
        assert_eq!(e.to_string(), "could not find enough available IDs");
    }

    #[test]
    fn sizes_from_passwd_and_group() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("passwd");
        let g = tmp.path().join("group");
        std::fs::write(
            &p,
            "root:x:0:0:root:/root:/bin/sh\n\n  daemon:x:1:1::/:/bin/false  \nnobody:x:65534:65534::/:/x\nweird:x:notanumber:7\napp:x:1500:1400::/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(&g, "root:x:0:\nnogroup:x:65534:\nstaff:x:2000:app\n").unwrap();
        assert_eq!(size_from_user_files(&p, &g), 2001);
        assert_eq!(size_from_user_files(&p, &tmp.path().join("none")), 1501);
        assert_eq!(
            size_from_user_files(&tmp.path().join("none"), &tmp.path().join("none")),
            0
        );
    }
}

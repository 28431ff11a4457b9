//! Subordinate ID ranges (`/etc/subuid`, `/etc/subgid`) and the maps of the namespace.
//!
//! The parser is Go's `idtools.parseSubidFile`: blank lines and lines starting with `#` are
//! skipped, every other line must have exactly three `:`-separated fields (else the whole
//! file is refused), field 1 is a user name or a numeric UID, fields 2 and 3 are the start
//! and the length of the range.

use std::path::Path;

use storage_types::{IdMap, go_io_error_text, go_quote};

/// `/etc/subuid`.
pub const SUBUID_FILE: &str = "/etc/subuid";
/// `/etc/subgid`.
pub const SUBGID_FILE: &str = "/etc/subgid";

/// One subordinate range: `len` IDs from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SubIdRange {
    /// First host ID of the range.
    pub start: u32,
    /// Number of IDs.
    pub len: u32,
}

/// Parses the text of a subordinate ID file, keeping the ranges of `name` (or of the
/// numeric `id`, when given). `path` only names the file in errors.
///
/// ```
/// use storage_userns::{SubIdRange, parse_subid};
/// let text = "# comment\nalice:100000:65536\nbob:165536:65536\n1001:300000:10\n";
/// let r = parse_subid(text, "alice", Some(1001), "/etc/subuid").unwrap();
/// assert_eq!(r, vec![SubIdRange { start: 100000, len: 65536 }, SubIdRange { start: 300000, len: 10 }]);
/// assert!(parse_subid("alice:1\n", "alice", None, "/etc/subuid").is_err());
/// ```
pub fn parse_subid(
    text: &str,
    name: &str,
    id: Option<u32>,
    path: &str,
) -> Result<Vec<SubIdRange>, String> {
    let id = id.map(|i| i.to_string());
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split(':').collect();
        if parts.len() != 3 {
            return Err(format!(
                "cannot parse subuid/gid information: Format not correct for {path} file"
            ));
        }
        let ours = parts[0] == name || id.as_deref().is_some_and(|i| i == parts[0]);
        if !ours {
            continue;
        }
        let number = |s: &str| {
            s.parse::<u32>().map_err(|_| {
                format!(
                    "string to int conversion failed during subuid/gid parsing of {path}: strconv.Atoi: parsing {}: invalid syntax",
                    go_quote(s)
                )
            })
        };
        out.push(SubIdRange {
            start: number(parts[1])?,
            len: number(parts[2])?,
        });
    }
    Ok(out)
}

fn read_ranges(path: &str, name: &str, id: Option<u32>) -> Result<Vec<SubIdRange>, String> {
    if name == "ALL" {
        return Err("username ALL not supported".into());
    }
    let text = std::fs::read_to_string(Path::new(path))
        .map_err(|e| format!("open {path}: {}", go_io_error_text(&e)))?;
    parse_subid(&text, name, id, path)
}

/// Go's `idtools.NewIDMappings(user, group)`: the subordinate UID ranges of `user` and GID
/// ranges of `group`, each list sorted by start and laid out from container ID 0.
///
/// Fails (with Go's texts) when a file cannot be read or parsed, or holds no range for
/// the name: `no subuid ranges found for user "U" in /etc/subuid`,
/// `no subgid ranges found for group "G" in /etc/subgid`.
pub fn sub_id_mappings(user: &str, group: &str) -> Result<(Vec<IdMap>, Vec<IdMap>), String> {
    sub_id_mappings_in(user, group, SUBUID_FILE, SUBGID_FILE)
}

/// [`sub_id_mappings`] reading other files (tests).
pub fn sub_id_mappings_in(
    user: &str,
    group: &str,
    subuid: &str,
    subgid: &str,
) -> Result<(Vec<IdMap>, Vec<IdMap>), String> {
    // Go looks the numeric form of both names up as a *user* (idtools' quirk).
    let uids = read_ranges(subuid, user, crate::user::lookup_user_id(user))?;
    let gids = read_ranges(subgid, group, crate::user::lookup_user_id(group))?;
    if uids.is_empty() {
        return Err(format!(
            "no subuid ranges found for user {} in {subuid}",
            go_quote(user)
        ));
    }
    if gids.is_empty() {
        return Err(format!(
            "no subgid ranges found for group {} in {subgid}",
            go_quote(group)
        ));
    }
    Ok((lay_out(&uids, 0), lay_out(&gids, 0)))
}

/// The ranges sorted by start, at consecutive container IDs from `first`.
fn lay_out(ranges: &[SubIdRange], first: u32) -> Vec<IdMap> {
    let mut sorted = ranges.to_vec();
    sorted.sort();
    let mut next = first;
    sorted
        .into_iter()
        .map(|r| {
            let m = IdMap {
                container_id: next,
                host_id: r.start,
                size: r.len,
            };
            next = next.saturating_add(r.len);
            m
        })
        .collect()
}

/// The map of the namespace Go's re-exec builds: the user's own `id` as 0, then the
/// subordinate ranges (as [`sub_id_mappings`] returns them) from container ID 1.
///
/// ```
/// use storage_types::IdMap;
/// use storage_userns::namespace_map;
/// let sub = [IdMap { container_id: 0, host_id: 100000, size: 65536 }];
/// assert_eq!(
///     namespace_map(1001, &sub),
///     vec![
///         IdMap { container_id: 0, host_id: 1001, size: 1 },
///         IdMap { container_id: 1, host_id: 100000, size: 65536 },
///     ]
/// );
/// ```
pub fn namespace_map(id: u32, sub: &[IdMap]) -> Vec<IdMap> {
    let mut out = vec![IdMap {
        container_id: 0,
        host_id: id,
        size: 1,
    }];
    let mut next = 1u32;
    for m in sub {
        out.push(IdMap {
            container_id: next,
            host_id: m.host_id,
            size: m.size,
        });
        next = next.saturating_add(m.size);
    }
    out
}

/// The arguments of `newuidmap PID …` / `newgidmap PID …` for `map`: one argument per
/// number, `container host size` for each range.
pub fn map_arguments(map: &[IdMap]) -> Vec<String> {
    map.iter()
        .flat_map(|m| {
            [
                m.container_id.to_string(),
                m.host_id.to_string(),
                m.size.to_string(),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: u32, h: u32, s: u32) -> IdMap {
        IdMap::new(c, h, s)
    }

    #[test]
    fn ranges_are_sorted_and_laid_out() {
        let dir = tempfile::tempdir().unwrap();
        let u = dir.path().join("subuid");
        let g = dir.path().join("subgid");
        std::fs::write(
            &u,
            "\n# x\nalice:500000:1000\nbob:1:2\n alice:400000:65536 \n",
        )
        .unwrap();
        std::fs::write(&g, "alice:700000:10\n").unwrap();
        let (uids, gids) =
            sub_id_mappings_in("alice", "alice", u.to_str().unwrap(), g.to_str().unwrap()).unwrap();
        assert_eq!(uids, vec![m(0, 400000, 65536), m(65536, 500000, 1000)]);
        assert_eq!(gids, vec![m(0, 700000, 10)]);
        assert_eq!(
            namespace_map(1001, &uids),
            vec![m(0, 1001, 1), m(1, 400000, 65536), m(65537, 500000, 1000)]
        );
        assert_eq!(
            map_arguments(&namespace_map(7, &gids)),
            ["0", "7", "1", "1", "700000", "10"]
        );
    }

    #[test]
    fn go_errors() {
        let dir = tempfile::tempdir().unwrap();
        let u = dir.path().join("subuid");
        let g = dir.path().join("subgid");
        let (us, gs) = (u.to_str().unwrap(), g.to_str().unwrap());
        std::fs::write(&u, "alice:1:2\n").unwrap();
        assert_eq!(
            sub_id_mappings_in("alice", "alice", us, gs).unwrap_err(),
            format!("open {gs}: no such file or directory")
        );
        std::fs::write(&g, "bob:1:2\n").unwrap();
        assert_eq!(
            sub_id_mappings_in("alice", "alice", us, gs).unwrap_err(),
            format!("no subgid ranges found for group \"alice\" in {gs}")
        );
        assert_eq!(
            sub_id_mappings_in("carol", "carol", us, gs).unwrap_err(),
            format!("no subuid ranges found for user \"carol\" in {us}")
        );
        std::fs::write(&u, "alice:1\n").unwrap();
        assert_eq!(
            sub_id_mappings_in("alice", "alice", us, gs).unwrap_err(),
            format!("cannot parse subuid/gid information: Format not correct for {us} file")
        );
        std::fs::write(&u, "alice:x:2\n").unwrap();
        assert!(
            sub_id_mappings_in("alice", "alice", us, gs)
                .unwrap_err()
                .starts_with("string to int conversion failed during subuid/gid parsing of")
        );
        assert_eq!(
            sub_id_mappings_in("ALL", "ALL", us, gs).unwrap_err(),
            "username ALL not supported"
        );
    }
}

//! UID/GID mappings (`IDMap`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// One range of an ID mapping: container IDs `[container_id, container_id+size)`
/// correspond to host IDs `[host_id, host_id+size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct IdMap {
    /// First ID inside the container.
    pub container_id: u32,
    /// First ID on the host.
    pub host_id: u32,
    /// Length of the range.
    pub size: u32,
}

impl IdMap {
    /// The range of `size` IDs from `container_id` inside to `host_id` outside.
    pub const fn new(container_id: u32, host_id: u32, size: u32) -> IdMap {
        IdMap {
            container_id,
            host_id,
            size,
        }
    }
}

/// Maps a container ID to the host: first matching range wins; an empty slice is
/// the identity; `None` when no range covers `id`.
pub fn to_host(maps: &[IdMap], id: u32) -> Option<u32> {
    if maps.is_empty() {
        return Some(id);
    }
    maps.iter().find_map(|m| {
        let off = id.checked_sub(m.container_id)?;
        (off < m.size).then(|| m.host_id.checked_add(off)).flatten()
    })
}

/// Maps a host ID back into the container (inverse of [`to_host`]).
pub fn to_container(maps: &[IdMap], id: u32) -> Option<u32> {
    if maps.is_empty() {
        return Some(id);
    }
    maps.iter().find_map(|m| {
        let off = id.checked_sub(m.host_id)?;
        (off < m.size)
            .then(|| m.container_id.checked_add(off))
            .flatten()
    })
}

/// Go's `idtools.GetRootUIDGID`: the host IDs of container root. A map of exactly one
/// range of size 1 gives that range's host ID whatever its container ID; otherwise
/// container ID 0 is mapped with [`to_host`] (an empty map is the identity, so `(0, 0)`).
/// Fails with Go's `container ID 0 cannot be mapped to a host ID` when it is not mapped.
///
/// ```
/// use storage_types::{IdMap, root_pair};
/// let m = |c, h, s| IdMap { container_id: c, host_id: h, size: s };
/// assert_eq!(root_pair(&[], &[]).unwrap(), (0, 0));
/// assert_eq!(root_pair(&[m(0, 100000, 6)], &[m(0, 200000, 6)]).unwrap(), (100000, 200000));
/// assert_eq!(root_pair(&[m(5, 1000, 1)], &[]).unwrap(), (1000, 0));
/// assert!(root_pair(&[m(1, 100000, 6)], &[]).is_err());
/// ```
pub fn root_pair(uid_map: &[IdMap], gid_map: &[IdMap]) -> Result<(u32, u32)> {
    let root = |maps: &[IdMap]| match maps {
        [only] if only.size == 1 => Ok(only.host_id),
        _ => to_host(maps, 0).ok_or_else(|| {
            Error::msg(
                ErrorKind::InvalidInput,
                "container ID 0 cannot be mapped to a host ID",
            )
        }),
    };
    Ok((root(uid_map)?, root(gid_map)?))
}

/// Parses the CLI's `--uidmap`/`--gidmap` value like Go's `idtools.ParseIDMap`:
/// colon-separated `container:host:size` triples (several triples are simply
/// concatenated, `0:1000:1:1:100000:65536`); each number a decimal uint32.
/// An empty string is no mapping. `kind` is `"uid"` or `"gid"` and appears in
/// Go's error text:
/// `initializing ID mappings: uid setting is malformed expected ["uint32:uint32:uint32"]: ["bogus"]`.
///
/// (Go 1.43 does not accept `,` between triples; neither do we.)
pub fn parse_id_maps(s: &str, kind: &str) -> Result<Vec<IdMap>> {
    let malformed = || {
        Error::msg(
            ErrorKind::InvalidInput,
            format!(
                "initializing ID mappings: {kind} setting is malformed expected [\"uint32:uint32:uint32\"]: [{}]",
                crate::go_quote(s)
            ),
        )
    };
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = s.split(':').collect();
    let triples = parts.chunks_exact(3);
    if !triples.remainder().is_empty() {
        return Err(malformed());
    }
    let num = |p: &str| -> Result<u32> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        p.parse::<u32>().map_err(|_| malformed())
    };
    triples
        .map(|c| {
            Ok(IdMap {
                container_id: num(c[0])?,
                host_id: num(c[1])?,
                size: num(c[2])?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: [IdMap; 2] = [
        IdMap {
            container_id: 0,
            host_id: 100000,
            size: 1000,
        },
        IdMap {
            container_id: 1000,
            host_id: 1000,
            size: 1,
        },
    ];

    #[test]
    fn mapping_both_ways() {
        assert_eq!(to_host(&[], 42), Some(42));
        assert_eq!(to_container(&[], 42), Some(42));
        assert_eq!(to_host(&M, 0), Some(100000));
        assert_eq!(to_host(&M, 999), Some(100999));
        assert_eq!(to_host(&M, 1000), Some(1000));
        assert_eq!(to_host(&M, 1001), None);
        assert_eq!(to_container(&M, 100500), Some(500));
        assert_eq!(to_container(&M, 1000), Some(1000));
        assert_eq!(to_container(&M, 5), None);
        let edge = [IdMap {
            container_id: 0,
            host_id: u32::MAX,
            size: 2,
        }];
        assert_eq!(to_host(&edge, 1), None);
        // Ranges that run past u32::MAX (Go's parser accepts them) map what fits and
        // nothing beyond, in both directions.
        let wrap = parse_id_maps("4294967295:0:10", "uid").expect("overflowing range");
        assert_eq!(to_host(&wrap, u32::MAX), Some(0));
        assert_eq!(to_container(&wrap, 0), Some(u32::MAX));
        assert_eq!(to_container(&wrap, 5), None);
        let wrap = parse_id_maps("0:4294967290:100", "uid").expect("overflowing host range");
        assert_eq!(to_host(&wrap, 5), Some(u32::MAX));
        assert_eq!(to_host(&wrap, 6), None);
        assert_eq!(to_container(&wrap, u32::MAX), Some(5));
    }

    #[test]
    fn parsing_like_go() {
        assert_eq!(parse_id_maps("", "uid").expect("empty"), vec![]);
        assert_eq!(
            parse_id_maps("0:100000:1000:1000:1000:1", "uid").expect("two triples"),
            M.to_vec()
        );
        for bad in [
            "bogus",
            "0:1",
            "0:1:2,3:4:5",
            "0:1:2,",
            "0:1:99999999999",
            "+0:1:2",
            "0: 1:2",
        ] {
            let e = parse_id_maps(bad, "gid").expect_err(bad);
            assert_eq!(
                e.to_string(),
                format!(
                    "initializing ID mappings: gid setting is malformed expected [\"uint32:uint32:uint32\"]: [\"{bad}\"]"
                )
            );
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
        let json = serde_json::to_string(&M[0]).expect("serialize");
        assert_eq!(json, r#"{"container_id":0,"host_id":100000,"size":1000}"#);
    }
}

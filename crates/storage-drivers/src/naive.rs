//! Go's NaiveDiffDriver: diffs of drivers that only hold plain directories.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use storage_types::{Error, ErrorKind, IdMap, Result};

use crate::{ApplyDiffOpts, Change, LayerMaps};

/// `(uid_map, gid_map)` of one layer.
pub(crate) type Maps<'a> = (&'a [IdMap], &'a [IdMap]);

/// Naive `Diff`: the whole tree without a parent, else the exported changes. Like Go,
/// it then waits until the next whole second after it started, so that a later
/// mtime comparison against a tar (whole seconds) cannot be fooled.
pub(crate) fn diff(
    layer: &Path,
    parent: Option<&Path>,
    uid_map: &[IdMap],
    gid_map: &[IdMap],
    out: &mut dyn Write,
) -> Result<()> {
    diff_mapped(
        layer,
        (uid_map, gid_map),
        parent.map(|p| (p, (uid_map, gid_map))),
        out,
    )
}

/// Naive `Diff` with each side's own `(uid_map, gid_map)`.
pub(crate) fn diff_mapped(
    layer: &Path,
    maps: Maps<'_>,
    parent: Option<(&Path, Maps<'_>)>,
    out: &mut dyn Write,
) -> Result<()> {
    let (uid_map, gid_map) = maps;
    let start = std::time::SystemTime::now();
    let result = match parent {
        None => storage_archive::export::tar_dir(layer, uid_map, gid_map, out).map_err(Error::from),
        Some(parent) => {
            let changes = storage_archive::changes::changes_dirs_mapped(
                layer,
                maps,
                Some(parent.0),
                parent.1,
            )
            .map_err(Error::from)?;
            storage_archive::export::export_changes(layer, &changes, uid_map, gid_map, out)
                .map_err(Error::from)
        }
    };
    if let Ok(since) = start.duration_since(std::time::UNIX_EPOCH) {
        let next = std::time::Duration::from_secs(since.as_secs() + 1);
        if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)
            && let Some(wait) = next.checked_sub(now)
        {
            std::thread::sleep(wait);
        }
    }
    result
}

/// The directory of a layer of a plain-directory driver (vfs, btrfs) for `Get`: `ro` is
/// the only mount option accepted, and `dir` must be an existing directory (a missing
/// one is [`ErrorKind::LayerUnknown`]).
pub(crate) fn plain_layer_dir(
    driver: &str,
    options: &[String],
    dir: impl FnOnce() -> PathBuf,
) -> Result<PathBuf> {
    match options {
        [] => {}
        [o] if o == "ro" => {}
        _ => {
            return Err(Error::msg(
                ErrorKind::InvalidInput,
                format!("{driver} driver does not support mount options"),
            ));
        }
    }
    let dir = dir();
    let md = std::fs::metadata(&dir).map_err(|e| {
        let err = Error::io("stat", &dir, e);
        if err.is_not_found() {
            Error::msg(ErrorKind::LayerUnknown, err.message())
        } else {
            err
        }
    })?;
    if !md.is_dir() {
        return Err(Error::msg(
            ErrorKind::Io,
            format!("{}: not a directory", dir.display()),
        ));
    }
    Ok(dir)
}

/// The paths of a layer and of its parent (with any `extra` of the parent, e.g. its ID
/// maps), resolved by a plain-directory driver's `resolve`.
pub(crate) fn layer_and_parent<T>(
    resolve: impl Fn(&str) -> Result<PathBuf>,
    id: &str,
    parent: Option<(&str, T)>,
) -> Result<(PathBuf, Option<(PathBuf, T)>)> {
    let layer = resolve(id)?;
    let parent = match parent {
        Some((p, extra)) => Some((resolve(p)?, extra)),
        None => None,
    };
    Ok((layer, parent))
}

/// Naive `Diff` of layer `id` against `parent`, each compared through its own maps;
/// `resolve` gives a layer's directory.
pub(crate) fn diff_layers(
    resolve: impl Fn(&str) -> Result<PathBuf>,
    id: &str,
    maps: LayerMaps<'_>,
    parent: Option<(&str, LayerMaps<'_>)>,
    out: &mut dyn Write,
) -> Result<()> {
    let (layer, parent) = layer_and_parent(resolve, id, parent)?;
    let parent = parent.as_ref().map(|(p, m)| (p.as_path(), (m.uid, m.gid)));
    diff_mapped(&layer, (maps.uid, maps.gid), parent, out)
}

/// The naive `Diff` with the trait's plain arguments: Go maps both sides with the layer's maps.
pub(crate) fn diff_with_layer_maps(
    resolve: impl Fn(&str) -> Result<PathBuf>,
    id: &str,
    parent: Option<&str>,
    uid_map: &[IdMap],
    gid_map: &[IdMap],
    out: &mut dyn Write,
) -> Result<()> {
    let maps = LayerMaps {
        uid: uid_map,
        gid: gid_map,
    };
    diff_layers(resolve, id, maps, parent.map(|p| (p, maps)), out)
}

/// The naive `Changes` with the trait's plain arguments: no ID maps on either side.
pub(crate) fn changes_unmapped(
    resolve: impl Fn(&str) -> Result<PathBuf>,
    id: &str,
    parent: Option<&str>,
) -> Result<Vec<Change>> {
    let none = LayerMaps::default();
    changes_layers(resolve, id, none, parent.map(|p| (p, none)))
}

/// Naive `Changes` of layer `id` against `parent`, each through its own maps.
pub(crate) fn changes_layers(
    resolve: impl Fn(&str) -> Result<PathBuf>,
    id: &str,
    maps: LayerMaps<'_>,
    parent: Option<(&str, LayerMaps<'_>)>,
) -> Result<Vec<Change>> {
    let (layer, parent) = layer_and_parent(resolve, id, parent)?;
    let parent = parent.as_ref().map(|(p, m)| (p.as_path(), (m.uid, m.gid)));
    changes_mapped(&layer, (maps.uid, maps.gid), parent)
}

/// Naive `DiffSize` of layer `id` against `parent`, each through its own maps.
pub(crate) fn diff_size_layers(
    resolve: impl Fn(&str) -> Result<PathBuf>,
    id: &str,
    maps: LayerMaps<'_>,
    parent: Option<(&str, LayerMaps<'_>)>,
) -> Result<i64> {
    let (layer, parent) = layer_and_parent(resolve, id, parent)?;
    let parent = parent.as_ref().map(|(p, m)| (p.as_path(), (m.uid, m.gid)));
    let (parent, parent_maps) = match parent {
        Some((p, m)) => (Some(p), m),
        None => (None, (&[][..], &[][..])),
    };
    storage_archive::changes::changes_dirs_size_mapped(
        &layer,
        (maps.uid, maps.gid),
        parent,
        parent_maps,
    )
    .map_err(Error::from)
}

/// Naive `DiffSize`: the size of the changes between `layer` and `parent`.
pub(crate) fn diff_size(layer: &Path, parent: Option<&Path>) -> Result<i64> {
    let none: Maps<'_> = (&[], &[]);
    storage_archive::changes::changes_dirs_size_mapped(layer, none, parent, none)
        .map_err(Error::from)
}

/// Naive `Changes`.
pub(crate) fn changes(layer: &Path, parent: Option<&Path>) -> Result<Vec<Change>> {
    storage_archive::changes::changes_dirs(layer, parent).map_err(Error::from)
}

/// Naive `Changes` with each side's own `(uid_map, gid_map)`.
pub(crate) fn changes_mapped(
    layer: &Path,
    maps: Maps<'_>,
    parent: Option<(&Path, Maps<'_>)>,
) -> Result<Vec<Change>> {
    let (parent, parent_maps) = match parent {
        Some((p, m)) => (Some(p), m),
        None => (None, (&[][..], &[][..])),
    };
    storage_archive::changes::changes_dirs_mapped(layer, maps, parent, parent_maps)
        .map_err(Error::from)
}

/// Naive `ApplyDiff`: `UnpackLayer` with whiteouts applied; returns the sum of the
/// entries' header sizes.
pub(crate) fn apply_diff(layer: &Path, diff: &mut dyn Read, opts: &ApplyDiffOpts) -> Result<i64> {
    let unpack = storage_archive::UnpackOptions {
        uid_map: opts.uid_map.clone(),
        gid_map: opts.gid_map.clone(),
        ignore_chown_errors: opts.ignore_chown_errors,
        whiteout: storage_archive::WhiteoutFormat::Apply,
        force_mask: opts.force_mask,
        in_user_ns: storage_userns::in_user_namespace(),
    };
    storage_archive::unpack(diff, layer, &unpack).map_err(Error::from)
}

/// Go's `NewPathFileGetter`: opens `Join(root, name)` (lexically cleaned), confined to the
/// layer: a name that cleans to a path outside it fails as if absent, and no symbolic link
/// is followed (Go follows them, out of the layer too).
pub(crate) type PathFileGetter = storage_tarsplit::DirFileGetter;

#[cfg(test)]
mod tests {
    use super::PathFileGetter;
    use std::path::Path;
    use storage_tarsplit::FileGetter;

    #[test]
    fn file_getter_stays_in_the_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let layer = tmp.path().join("layer");
        std::fs::create_dir_all(layer.join("d")).unwrap();
        std::fs::write(layer.join("d/in"), b"inside").unwrap();
        std::fs::write(tmp.path().join("secret"), b"outside").unwrap();
        let mut g = PathFileGetter::new(layer.clone());
        let got = g.open(b"./d/../d/in").unwrap().read_to_vec().unwrap();
        assert_eq!(got, b"inside");
        for bad in [&b"../secret"[..], b"d/../../secret", b"../layer/../secret"] {
            // The file exists outside the layer; it must not be read.
            let err = g.open(bad).err().expect("escape refused");
            assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
            assert!(
                err.to_string()
                    .ends_with("secret: no such file or directory"),
                "{err}"
            );
        }
        assert!(
            g.open(b"/d/in").is_ok(),
            "absolute names stay inside like Go's Join"
        );
    }

    #[test]
    fn join_cleans_like_go() {
        let join = |root: &str, name: &str| PathFileGetter::new(root).path_of(name.as_bytes());
        assert_eq!(join("/a/b", "c/./d"), Path::new("/a/b/c/d"));
        assert_eq!(join("/a/b", "../escape"), Path::new("/a/escape"));
        assert_eq!(join("/a/b", "/x"), Path::new("/a/b/x"));
        assert_eq!(join("/", "../../x"), Path::new("/x"));
    }
}

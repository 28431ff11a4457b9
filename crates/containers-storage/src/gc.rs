//! `GarbageCollect` (Go's `store.GarbageCollect`).

use std::collections::HashSet;
use std::path::Path;

use storage_types::{Error, Result};

use crate::Store;

impl Store {
    /// Go's `Store.GarbageCollect`: removes container and image directories named like an
    /// ID that no record owns (graph and run roots), and driver layers without a record
    /// (with their tar-split file and big data) and the temporary tar-split files of
    /// interrupted applies. Loading the layer store for writing also removes incomplete
    /// layers and abandoned staging directories. The stores are locked
    /// one after the other (containers, images, layers), never nested; the first error is
    /// returned after every step was tried.
    pub fn garbage_collect(&self) -> Result<()> {
        let mut first: Option<Error> = None;
        let mut keep = |r: Result<()>| {
            if let Err(e) = r
                && first.is_none()
            {
                first = Some(e);
            }
        };
        keep((|| {
            let c = self.containers.write()?;
            let known: HashSet<String> = c.containers().iter().map(|x| x.id.clone()).collect();
            remove_stray_dirs(self.containers.dir(), &known)?;
            remove_stray_dirs(self.containers.run_dir(), &known)
        })());
        keep((|| {
            let i = self.images.write()?;
            let known: HashSet<String> = i.images().iter().map(|x| x.id.clone()).collect();
            remove_stray_dirs(self.images.dir(), &known)?;
            remove_stray_dirs(
                &self.run_root.join(format!("{}-images", self.driver_name)),
                &known,
            )
        })());
        keep((|| {
            let rw = self.layer_store()?;
            let mut w = rw.write()?;
            w.garbage_collect()
        })());
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Removes directories of `dir` named like a full ID that are not in `known`.
fn remove_stray_dirs(dir: &Path, known: &HashSet<String>) -> Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("open", dir, e)),
    };
    for entry in rd.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !entry.file_type().is_ok_and(|t| t.is_dir())
            || !storage_types::is_full_id(&name)
            || known.contains(&name)
        {
            continue;
        }
        let path = entry.path();
        tracing::debug!("removing {:?}", path.display().to_string());
        std::fs::remove_dir_all(&path).map_err(|e| Error::io("unlinkat", &path, e))?;
    }
    Ok(())
}

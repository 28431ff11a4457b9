//! Names, metadata, flags and big data of layer records.

use super::*;

impl LayersWrite<'_> {
    // ---------------------------------------------------------------- names, metadata, flags

    pub(super) fn update_names(&mut self, key: &str, given: &[String], op: NameOp) -> Result<()> {
        let i = self.state.index_or_unknown(key)?;
        let old = self.state.entries[i].layer.names.clone();
        let new = match op {
            NameOp::Set => storage_types::dedup_names(given),
            NameOp::Add => {
                let all: Vec<String> = given.iter().chain(old.iter()).cloned().collect();
                storage_types::dedup_names(&all)
            }
            NameOp::Remove => {
                let kept: Vec<String> =
                    old.iter().filter(|n| !given.contains(n)).cloned().collect();
                storage_types::dedup_names(&kept)
            }
        };
        let mut locs = self.state.entries[i].location.bit();
        for name in &new {
            if let Some(&other) = self.state.by_name.get(name)
                && other != i
            {
                self.state.entries[other].layer.names.retain(|n| n != name);
                locs |= self.state.entries[other].location.bit();
            }
        }
        self.state.entries[i].layer.names = new;
        self.state.reindex(false)?;
        self.save(locs)
    }

    /// Replaces a layer's names; names held by other layers are taken away from them.
    pub fn set_names(&mut self, key: &str, names: &[String]) -> Result<()> {
        self.update_names(key, names, NameOp::Set)
    }

    /// Adds names: the given names first, then the old ones (de-duplicated).
    pub fn add_names(&mut self, key: &str, names: &[String]) -> Result<()> {
        self.update_names(key, names, NameOp::Add)
    }

    /// Removes names from a layer.
    pub fn remove_names(&mut self, key: &str, names: &[String]) -> Result<()> {
        self.update_names(key, names, NameOp::Remove)
    }

    /// Replaces a layer's opaque metadata string.
    pub fn set_metadata(&mut self, key: &str, metadata: &str) -> Result<()> {
        let i = self.state.index_or_unknown(key)?;
        self.state.entries[i].layer.metadata = metadata.to_string();
        let loc = self.state.entries[i].location;
        self.save(loc.bit())
    }

    /// Sets a flag on a layer.
    pub fn set_flag(&mut self, key: &str, flag: &str, value: Value) -> Result<()> {
        let i = self.state.index_or_unknown(key)?;
        self.state.entries[i]
            .layer
            .flags
            .insert(flag.to_string(), value);
        let loc = self.state.entries[i].location;
        self.save(loc.bit())
    }

    /// Removes a flag from a layer.
    pub fn clear_flag(&mut self, key: &str, flag: &str) -> Result<()> {
        let i = self.state.index_or_unknown(key)?;
        self.state.entries[i].layer.flags.remove(flag);
        let loc = self.state.entries[i].location;
        self.save(loc.bit())
    }

    /// Stores a big-data item of a layer (streamed into `<layerdir>/<id>/<file name>`
    /// atomically); the name is recorded (and the record saved) when new.
    pub fn set_big_data(&mut self, key: &str, name: &str, data: &mut dyn Read) -> Result<()> {
        if name.is_empty() {
            return Err(Error::new(ErrorKind::InvalidBigDataName)
                .context("can't set empty name for layer big data item"));
        }
        let i = self.state.lookup_index(key).ok_or_else(|| {
            Error::new(ErrorKind::LayerUnknown).context(format!(
                "locating layer with ID {} to write bigdata",
                storage_types::go_quote(key)
            ))
        })?;
        let id = self.state.entries[i].layer.id.clone();
        let dir = self.state.ctx.data_dir(&id);
        storage_io::mkdir_all(&dir, 0o700).map_err(|e| Error::io("mkdir", &dir, e))?;
        let path = dir.join(storage_types::big_data_file_name(name)?);
        let mut f = AtomicFile::create(
            &path,
            WriteOptions {
                mode: 0o600,
                sync: true,
            },
        )
        .map_err(|e| Error::io("open", &path, e))?;
        // A failed write (a full or failing disk) names the file it was writing.
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::from(e).context("copying contents of bigdata item")),
            };
            f.write_all(&buf[..n]).map_err(|e| {
                Error::io("write", &path, e).context("copying contents of bigdata item")
            })?;
        }
        f.commit().map_err(|e| {
            Error::io("close", &path, e).context("closing bigdata file for the layer")
        })?;
        if !self.state.entries[i]
            .layer
            .big_data_names
            .iter()
            .any(|n| n == name)
        {
            self.state.entries[i]
                .layer
                .big_data_names
                .push(name.to_string());
            let loc = self.state.entries[i].location;
            self.save(loc.bit())?;
        }
        Ok(())
    }
}

//! The zstd:chunked differ (the partial-pull path of Go 1.60, `pkg/chunked`) and
//! `ApplyDiffUsingStagingDir`: a directory packed as a zstd:chunked blob and applied through
//! a staged layer, recording what Go records for such a layer (TOC digest, the
//! `zstd-chunked-*` big data, no compressed digest).

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use storage_archive::UnpackOptions;
use storage_layers::{CreateLayerOptions, Differ, DifferOutput};
use storage_types::{Digest, Error, ErrorKind, Layer, Result};

use crate::Store;

/// The compression level Go's `applydiff-using-staging-dir` packs with.
const LEVEL: i32 = 10;

/// A [`Differ`] applying a zstd:chunked blob: its tar stream is extracted into the staging
/// directory and the layer's description taken from its TOC.
pub struct ChunkedDiffer {
    blob: PathBuf,
    chunked: storage_chunked::Chunked,
}

impl ChunkedDiffer {
    /// Reads the TOC and tar-split of the zstd:chunked blob in `blob`.
    pub fn open(blob: &Path) -> Result<ChunkedDiffer> {
        let mut f = std::fs::File::open(blob).map_err(|e| Error::io("open", blob, e))?;
        let chunked = storage_chunked::read(&mut BufReader::new(&mut f))
            .map_err(|e| Error::msg(ErrorKind::InvalidInput, e.to_string()))?;
        Ok(ChunkedDiffer {
            blob: blob.to_path_buf(),
            chunked,
        })
    }

    /// The TOC digest (`toc-digest`).
    pub fn toc_digest(&self) -> &str {
        &self.chunked.toc_digest
    }
}

/// The IDs of the TOC's entries, each once, in the order they first appear.
fn ids(
    entries: &[storage_chunked::TocEntry],
    pick: fn(&storage_chunked::TocEntry) -> i64,
) -> Vec<u32> {
    let mut seen = Vec::new();
    for id in entries.iter().filter_map(|e| u32::try_from(pick(e)).ok()) {
        if !seen.contains(&id) {
            seen.push(id);
        }
    }
    seen
}

impl Differ for ChunkedDiffer {
    fn apply_diff(&mut self, dest: &Path, unpack: &UnpackOptions) -> Result<DifferOutput> {
        let f = std::fs::File::open(&self.blob).map_err(|e| Error::io("open", &self.blob, e))?;
        let mut reader =
            storage_archive::open_diff_recording(Box::new(f), Vec::new()).map_err(Error::from)?;
        storage_archive::unpack_sized(&mut reader, dest, unpack).map_err(Error::from)?;
        let (stats, tar_split) = reader.finish_recording().map_err(Error::from)?;
        let entries = &self.chunked.toc.entries;
        let root_dir_mode = entries
            .iter()
            .find(|e| e.kind == "dir" && matches!(e.name.as_str(), "" | "." | "./" | "/"))
            .and_then(|e| u32::try_from(e.mode).ok());
        let toc_digest: Digest = self
            .chunked
            .toc_digest
            .parse()
            .map_err(|e| Error::msg(ErrorKind::InvalidInput, format!("TOC digest: {e}")))?;
        Ok(DifferOutput {
            size: stats.uncompressed_size,
            uids: ids(entries, |e| e.uid),
            gids: ids(entries, |e| e.gid),
            uncompressed_digest: Some(stats.uncompressed_digest),
            compressed_digest: None,
            toc_digest: Some(toc_digest),
            metadata: String::new(),
            big_data: BTreeMap::from([
                (
                    "zstd-chunked-manifest".to_string(),
                    self.chunked.manifest.clone(),
                ),
                (
                    "zstd-chunked-layer-data".to_string(),
                    br#"{"format":0}"#.to_vec(),
                ),
            ]),
            tar_split: Some(tar_split),
            root_dir_mode,
        })
    }
}

/// A temporary file in `$TMPDIR` removed when dropped.
struct TempFile(PathBuf, std::fs::File);

impl TempFile {
    fn new(prefix: &str) -> Result<TempFile> {
        let dir = std::env::temp_dir();
        for _ in 0..100 {
            let mut rnd = [0u8; 4];
            getrandom::fill(&mut rnd)
                .map_err(|e| Error::msg(ErrorKind::Io, format!("getrandom: {e}")))?;
            let p = dir.join(format!("{prefix}{}", u32::from_le_bytes(rnd)));
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&p)
            {
                Ok(f) => return Ok(TempFile(p, f)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("open", &p, e)),
            }
        }
        Err(Error::msg(ErrorKind::Io, "creating a temporary file"))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Store {
    /// Go 1.60's `applydiff-using-staging-dir LAYER DIR`: packs `dir` as a zstd:chunked blob
    /// (in `$TMPDIR`, removed afterwards), prepares it through the chunked differ (refused
    /// unless the `enable_partial_images` pull option is set and the driver supports
    /// partial pulls) and commits it as layer `layer`: an existing layer's content is
    /// replaced; an unknown `layer` becomes a new parentless read-only layer with that ID.
    pub fn apply_diff_using_staging_dir(&self, layer: &str, dir: &Path) -> Result<Layer> {
        let mut tar = TempFile::new("layer-diff-tar-")?;
        {
            let mut w = BufWriter::new(&mut tar.1);
            storage_archive::export::tar_dir(dir, &[], &[], &mut w)
                .map_err(|e| Error::io("tar", dir, e))?;
            w.flush().map_err(|e| Error::io("write", &tar.0, e))?;
        }
        let blob = TempFile::new("layer-diff-chunked-")?;
        {
            let rewind =
                |f: &mut std::fs::File| f.rewind().map_err(|e| Error::io("seek", &tar.0, e));
            rewind(&mut tar.1)?;
            let again = std::fs::File::open(&tar.0).map_err(|e| Error::io("open", &tar.0, e))?;
            let mut out = BufWriter::new(&blob.1);
            storage_chunked::write(
                BufReader::new(&tar.1),
                BufReader::new(again),
                &mut out,
                LEVEL,
            )
            .map_err(|e| Error::msg(ErrorKind::InvalidInput, e.to_string()))?;
            out.flush().map_err(|e| Error::io("write", &blob.0, e))?;
        }
        drop(tar);
        let mut differ = ChunkedDiffer::open(&blob.0)?;
        let opts = CreateLayerOptions {
            id: Some(layer.to_string()),
            ..CreateLayerOptions::default()
        };
        let staged = self.prepare_staged_layer_with_differ(&opts, &mut differ)?;
        // A failure drops (and so removes) the staged layer: Go's `CleanupStagedLayer`.
        self.apply_staged_layer(staged, &opts)
    }
}

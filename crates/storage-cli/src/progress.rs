//! A byte-count progress display on stderr for `applydiff`, `import-layer`, `import-layers`
//! and `diff`, shown only when stderr is a terminal (so scripted output stays byte-identical
//! to Go's).

use std::io::{IsTerminal, Read, Write};

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar when stderr is a terminal; `len` is the total when known.
pub(crate) fn bar(len: Option<u64>) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = match len {
        Some(n) => {
            let pb = ProgressBar::new(n);
            if let Ok(style) =
                ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            {
                pb.set_style(style);
            }
            pb
        }
        None => {
            let pb = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}") {
                pb.set_style(style);
            }
            pb
        }
    };
    Some(pb)
}

/// A reader that advances a progress bar.
pub(crate) struct ProgressReader<R> {
    inner: R,
    bar: Option<ProgressBar>,
}

impl<R: Read> ProgressReader<R> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: R, bar: Option<ProgressBar>) -> Self {
        ProgressReader { inner, bar }
    }
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = &self.bar {
            b.inc(n as u64);
            if n == 0 {
                b.finish_and_clear();
            }
        }
        Ok(n)
    }
}

impl<R> Drop for ProgressReader<R> {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// A writer that advances a progress bar.
pub(crate) struct ProgressWriter<W> {
    inner: W,
    bar: Option<ProgressBar>,
}

impl<W: Write> ProgressWriter<W> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: W, bar: Option<ProgressBar>) -> Self {
        ProgressWriter { inner, bar }
    }
}

impl<W: Write> Write for ProgressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(b) = &self.bar {
            b.inc(n as u64);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W> Drop for ProgressWriter<W> {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// One progress bar per layer for `import-image` and `export-image` (stderr, terminals only).
pub(crate) struct LayerBars {
    multi: indicatif::MultiProgress,
    bars: std::sync::Mutex<Vec<Option<ProgressBar>>>,
}

impl LayerBars {
    /// Bars when stderr is a terminal; `None` otherwise.
    pub(crate) fn new() -> Option<std::sync::Arc<LayerBars>> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        Some(std::sync::Arc::new(LayerBars {
            multi: indicatif::MultiProgress::new(),
            bars: std::sync::Mutex::new(Vec::new()),
        }))
    }

    /// Starts the bar of layer `index` (of `count`), labelled `label`, for `size` bytes.
    pub(crate) fn start(&self, index: usize, count: usize, label: &str, size: u64) {
        let pb = self.multi.add(ProgressBar::new(size));
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        ) {
            pb.set_style(style);
        }
        pb.set_prefix(format!("layer {}/{count} {label}", index + 1));
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        if bars.len() <= index {
            bars.resize(index + 1, None);
        }
        bars[index] = Some(pb);
    }

    /// Advances the bar of layer `index` by `bytes`.
    pub(crate) fn advance(&self, index: usize, bytes: u64) {
        self.with_bar(index, |b| b.inc(bytes));
    }

    /// Finishes the bar of layer `index` with `msg`.
    pub(crate) fn finish(&self, index: usize, msg: &'static str) {
        self.with_bar(index, |b| b.finish_with_message(msg));
    }

    fn with_bar(&self, index: usize, f: impl FnOnce(&ProgressBar)) {
        let bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Some(b)) = bars.get(index) {
            f(b);
        }
    }
}

impl containers_storage::oci::Progress for LayerBars {
    fn layer_start(
        &self,
        index: usize,
        count: usize,
        digest: &containers_storage::types::Digest,
        size: u64,
    ) {
        let short: String = digest.encoded().chars().take(12).collect();
        self.start(index, count, &short, size);
    }

    fn layer_advance(&self, index: usize, bytes: u64) {
        self.advance(index, bytes);
    }

    fn layer_done(&self, index: usize, outcome: containers_storage::oci::LayerOutcome) {
        self.finish(
            index,
            match outcome {
                containers_storage::oci::LayerOutcome::Applied => "done",
                containers_storage::oci::LayerOutcome::Reused => "already present",
                containers_storage::oci::LayerOutcome::Failed => "failed",
            },
        );
    }
}

/// A reader that advances the bar of one layer of [`LayerBars`].
pub(crate) struct LayerReader<R> {
    inner: R,
    bars: Option<std::sync::Arc<LayerBars>>,
    index: usize,
}

impl<R: Read> LayerReader<R> {
    /// Wraps `inner`, the input of layer `index`.
    pub(crate) fn new(inner: R, bars: Option<std::sync::Arc<LayerBars>>, index: usize) -> Self {
        LayerReader { inner, bars, index }
    }
}

impl<R: Read> Read for LayerReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = &self.bars {
            b.advance(self.index, n as u64);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrappers_pass_bytes_through() {
        let pb = ProgressBar::hidden();
        let mut r = ProgressReader::new(&b"hello"[..], Some(pb.clone()));
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        assert_eq!(pb.position(), 5);
        let pb = ProgressBar::hidden();
        let mut w = ProgressWriter::new(Vec::new(), Some(pb.clone()));
        w.write_all(b"abc").unwrap();
        assert_eq!(pb.position(), 3);
        assert_eq!(w.inner, b"abc");
    }
}

//! The workload sequence of one binary on one fresh store (`Seq`), and the formats it imports layers in.

use super::*;

/// The workload sequence of one binary on one fresh store, recording into `res`.
pub(super) struct Seq<'a> {
    pub(super) cli: Cli,
    pub(super) imp: Imp,
    pub(super) res: &'a mut Results,
    pub(super) data: &'a Data,
    pub(super) scale: &'a Scale,
    pub(super) groups: &'a [String],
    pub(super) started: std::time::Instant,
    pub(super) later: Later,
}

/// The measured deletions of a sequence, run after the last round (see [`Deletions`]).
#[derive(Default)]
pub(super) struct Later {
    /// The `.tar.gz` small layer, for `delete-layer small`.
    pub(super) small: Option<String>,
    /// The child of the small layer, for `delete-layer child`.
    pub(super) child: Option<String>,
}

#[derive(Clone, Copy)]
pub(super) enum Fmt {
    Tar,
    Gz,
    Zst,
}

impl<'a> Seq<'a> {
    /// A sequence on `cli`'s store, its clock started now.
    pub(super) fn new(
        cli: Cli,
        imp: Imp,
        res: &'a mut Results,
        (data, scale, groups): (&'a Data, &'a Scale, &'a [String]),
        later: Later,
    ) -> Self {
        Seq {
            cli,
            imp,
            res,
            data,
            scale,
            groups,
            started: std::time::Instant::now(),
            later,
        }
    }

    pub(super) fn want(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }

    pub(super) fn cell(&mut self, w: &str) -> &mut Cell {
        let d = self.cli.driver.clone();
        self.res.cell(&d, w, self.imp)
    }

    pub(super) fn error(&mut self, w: &str, why: String) {
        let c = self.cell(w);
        if c.error.is_none() {
            c.error = Some(why);
        }
    }

    pub(super) fn fail(&mut self, w: &str, why: String) {
        let c = self.cell(w);
        if c.fail.is_none() {
            c.fail = Some(why);
        }
    }

    /// Runs one measured command and records its time and peak RSS under `w` (or its error).
    pub(super) fn timed(
        &mut self,
        w: &str,
        args: &[String],
        stdin: Option<&Path>,
        sink: Sink,
    ) -> Result<Outcome, String> {
        self.sample(w, args, stdin, sink, !w.contains("per call"))
    }

    /// Runs the call once and adds its time and RSS to `w` (an error or a failed exit
    /// marks `w` instead); `log` prints the time.
    pub(super) fn sample(
        &mut self,
        w: &str,
        args: &[String],
        stdin: Option<&Path>,
        sink: Sink,
        log: bool,
    ) -> Result<Outcome, String> {
        let o = match measure(&mut self.cli.cmd(args), stdin, sink) {
            Ok(o) => o,
            Err(e) => {
                self.error(w, e.to_string());
                return Err(e.to_string());
            }
        };
        if !o.status.success() {
            let why = o.reason();
            eprintln!(
                "bench: {:>6.1}s  {w}: failed: {why}",
                self.started.elapsed().as_secs_f64()
            );
            self.error(w, why.clone());
            return Err(why);
        }
        if log {
            eprintln!(
                "bench: {:>6.1}s  {w}: {}",
                self.started.elapsed().as_secs_f64(),
                report::secs(o.secs)
            );
        }
        let c = self.cell(w);
        c.secs.push(o.secs);
        c.rss_kib.push(o.rss_kib);
        Ok(o)
    }

    /// [`Self::timed`], then `reps - 1` more runs of the same read-only call, each one more
    /// sample of `w`: calls of a few milliseconds need more than one per round for a stable
    /// median. Returns the first run (the one whose output the caller checks).
    pub(super) fn timed_reps(
        &mut self,
        w: &str,
        args: &[String],
        reps: usize,
    ) -> Result<Outcome, String> {
        let first = self.timed(w, args, None, Sink::Capture)?;
        for _ in 1..reps {
            self.sample(w, args, None, Sink::Capture, false)?;
        }
        Ok(first)
    }

    /// `diff -u` of `layer` must hash to the dataset's tar; a mismatch marks `w` FAIL. When
    /// `as_workload` is given, a diff is also timed under that name, its output drained like
    /// the `tar -c` it is compared with (hashing in this process would take CPU time from the
    /// measured one), and checked by the untimed, hashed run that follows.
    pub(super) fn check(&mut self, w: &str, layer: &str, ds: &Dataset, as_workload: Option<&str>) {
        let args = vec!["diff".to_string(), "-u".into(), layer.into()];
        if let Some(dw) = as_workload
            && let Ok(o) = self.timed(dw, &args, None, Sink::Drain)
            && o.out_len != ds.size
        {
            let why = format!("diff -u gave {} bytes, the tar has {}", o.out_len, ds.size);
            self.fail(dw, why);
        }
        let got = self.cli.untimed(&args, Sink::Hash);
        match got {
            Ok(o) if o.sha256.as_deref() == Some(ds.sha256.as_str()) => {}
            Ok(o) => {
                let why = format!(
                    "diff -u sha256 {}… ({} bytes) != tar {}… ({} bytes)",
                    o.sha256.as_deref().unwrap_or("").get(..12).unwrap_or(""),
                    o.out_len,
                    &ds.sha256[..12],
                    ds.size
                );
                self.fail(w, why.clone());
                if let Some(dw) = as_workload {
                    self.fail(dw, why);
                }
            }
            Err(e) => self.fail(w, format!("unverified: {e}")),
        }
    }

    /// Applies `ds` in format `fmt` as a new layer (child of `parent`); checks it; returns
    /// the layer ID.
    pub(super) fn apply(
        &mut self,
        ds: &Dataset,
        fmt: Fmt,
        parent: Option<&str>,
        diff_workload: Option<&str>,
    ) -> Option<String> {
        let w = apply_workload(&ds.name, fmt, parent.is_some());
        let file = match fmt {
            Fmt::Tar => &ds.tar,
            Fmt::Gz => &ds.gz,
            Fmt::Zst => &ds.zst,
        };
        let parent_args: Vec<String> = parent.map(String::from).into_iter().collect();
        // Children (the upper layer) are created first and filled by applydiff so that the
        // vfs copy of the parent is not part of the measured apply.
        let id = match (fmt, parent.is_some()) {
            (Fmt::Tar, _) | (_, true) => {
                let created = self
                    .cli
                    .untimed(
                        &[vec!["create-layer".to_string()], parent_args].concat(),
                        Sink::Capture,
                    )
                    .and_then(|o| first_id(&o));
                let id = match created {
                    Ok(id) => id,
                    Err(e) => {
                        self.error(&w, e);
                        return None;
                    }
                };
                let args = vec!["applydiff".to_string(), "-f".into(), s(file), id.clone()];
                self.timed(&w, &args, None, Sink::Capture).ok()?;
                id
            }
            (Fmt::Gz | Fmt::Zst, false) => {
                let args = [
                    vec!["import-layer".to_string(), "-f".into(), s(file)],
                    parent_args,
                ]
                .concat();
                let o = self.timed(&w, &args, None, Sink::Capture).ok()?;
                match first_id(&o) {
                    Ok(id) => id,
                    Err(e) => {
                        self.fail(&w, e);
                        return None;
                    }
                }
            }
        };
        self.check(&w, &id, ds, diff_workload);
        Some(id)
    }

    /// Creates a layer (child of `parent`) and fills it with `ds`'s plain tar, unmeasured.
    pub(super) fn apply_untimed(
        &mut self,
        ds: &Dataset,
        parent: Option<&str>,
    ) -> Result<String, String> {
        let mut args = vec!["create-layer".to_string()];
        args.extend(parent.map(String::from));
        let id = first_id(&self.cli.untimed(&args, Sink::Capture)?)?;
        let args = vec!["applydiff".to_string(), "-f".into(), s(&ds.tar), id.clone()];
        self.cli.untimed(&args, Sink::Capture)?;
        Ok(id)
    }

    pub(super) fn run(&mut self) {
        let data = self.data;
        let apply = self.want("apply");
        // The small layer is the base of most other workloads: applied (and checked) even
        // when the apply group is not selected, recorded only when it is.
        let diff_w = self.want("diff").then_some("diff -u small");
        let small = if apply {
            self.apply(&data.small, Fmt::Tar, None, diff_w)
        } else {
            let id = self.apply_untimed(&data.small, None).ok();
            if let (Some(id), Some(dw)) = (&id, diff_w) {
                self.check(dw, id, &data.small, Some(dw));
            }
            id
        };
        if apply {
            // Nothing is deleted before the last round is done (see `Deletions`): every
            // apply gets a layer of its own.
            for fmt in [Fmt::Gz, Fmt::Zst] {
                if let Some(id) = self.apply(&data.small, fmt, None, None)
                    && matches!(fmt, Fmt::Gz)
                {
                    self.later.small = Some(id);
                }
            }
            for fmt in [Fmt::Tar, Fmt::Gz, Fmt::Zst] {
                let _ = self.apply(&data.large, fmt, None, None);
            }
            // The upper layer goes on top of `lower` (checked like every apply).
            let lower = self.apply_untimed(&data.lower, None).and_then(|id| {
                let args = vec!["diff".to_string(), "-u".into(), id.clone()];
                let o = self.cli.untimed(&args, Sink::Hash)?;
                if o.sha256.as_deref() == Some(data.lower.sha256.as_str()) {
                    Ok(id)
                } else {
                    Err("the lower layer does not diff back to its tar".into())
                }
            });
            for fmt in [Fmt::Tar, Fmt::Gz, Fmt::Zst] {
                match &lower {
                    Ok(p) => {
                        let _ = self.apply(&data.upper, fmt, Some(p.as_str()), None);
                    }
                    Err(e) => {
                        let w = apply_workload("upper", fmt, true);
                        self.error(&w, format!("needs the lower layer: {e}"));
                    }
                }
            }
        }
        let needs = |seq: &mut Self, ws: &[&str]| {
            for w in ws {
                seq.error(
                    w,
                    "needs the small layer, which could not be applied".into(),
                );
            }
        };
        if self.want("diff") {
            match &small {
                Some(id) => {
                    let args = vec!["diff".to_string(), "-c".into(), id.clone()];
                    if let Ok(o) = self.timed("diff -c small", &args, None, Sink::Drain)
                        && o.out_len < 20
                    {
                        self.fail(
                            "diff -c small",
                            format!("only {} bytes of output", o.out_len),
                        );
                    }
                }
                None => needs(self, &["diff -u small", "diff -c small"]),
            }
        }
        if self.want("changes") {
            match &small {
                Some(id) => {
                    let want_entries = data.small.entries;
                    if let Ok(o) = self.timed(
                        "changes small",
                        &["changes".into(), id.clone()],
                        None,
                        Sink::Capture,
                    ) {
                        let n = o
                            .stdout
                            .split(|b| *b == b'\n')
                            .filter(|l| l.starts_with(b"Add "))
                            .count() as u64;
                        if n != want_entries {
                            self.fail(
                                "changes small",
                                format!("{n} Add lines, tar has {want_entries} entries"),
                            );
                        }
                    }
                    if let Ok(o) = self.timed(
                        "diffsize small",
                        &["diffsize".into(), id.clone()],
                        None,
                        Sink::Capture,
                    ) {
                        let txt = String::from_utf8_lossy(&o.stdout).trim().to_string();
                        if txt.parse::<u64>().is_err() {
                            self.fail("diffsize small", format!("not a number: {txt:?}"));
                        }
                    }
                }
                None => needs(self, &["changes small", "diffsize small"]),
            }
        }
        if self.want("child") {
            self.child(small.as_deref());
        }
        if self.want("images") || self.want("containers") {
            self.images_and_containers();
        }
        if self.want("status") {
            let _ = self.timed("status", &["status".into()], None, Sink::Capture);
        }
        if self.want("import") && self.imp == Imp::Ours {
            self.import_image();
        }
        if self.want("readers") {
            self.readers_during_apply();
        }
        if self.want("parallel") && self.cli.driver == "overlay" {
            self.parallel_image();
        }
    }

    /// The eight layers of the `parallel` group's image, base first: small-file and
    /// large-file layers, plain, gzip and zstd (each `upper` changes the `lower` below it).
    pub(super) fn image_layers(&self) -> Vec<(Dataset, PathBuf)> {
        let d = self.data;
        vec![
            (d.small.clone(), d.small.tar.clone()),
            (d.large.clone(), d.large.gz.clone()),
            (d.lower.clone(), d.lower.tar.clone()),
            (d.upper.clone(), d.upper.gz.clone()),
            (d.small.clone(), d.small.gz.clone()),
            (d.lower.clone(), d.lower.gz.clone()),
            (d.upper.clone(), d.upper.tar.clone()),
            (d.small.clone(), d.small.zst.clone()),
        ]
    }

    /// [`PARALLEL_SERIAL`] and (ours) [`PARALLEL_IMPORT`], each in a store of its own; every
    /// layer is checked like an apply. Only on overlay: vfs (and btrfs) layers start as a
    /// copy of their parent, so a chain is prepared one layer after the other anyway.
    fn parallel_image(&mut self) {
        let layers = self.image_layers();
        let own = |cli: &Cli, ext: &str| Cli {
            bin: cli.bin.clone(),
            graph: cli.graph.with_extension(ext),
            run: cli.run.with_extension(ext),
            driver: cli.driver.clone(),
            conf: cli.conf.clone(),
        };
        let serial = own(&self.cli, "serial");
        let main = std::mem::replace(&mut self.cli, serial);
        let (mut secs, mut rss) = (0f64, 0u64);
        let mut ids: Vec<String> = Vec::new();
        let mut failure = None;
        // One call, its time and peak RSS added to the sample; Err: why it failed.
        let mut call = |cli: &Cli, args: &[String]| -> Result<Outcome, String> {
            let o = measure(&mut cli.cmd(args), None, Sink::Capture).map_err(|e| e.to_string())?;
            if !o.status.success() {
                return Err(format!("{}: {}", args[0], o.reason()));
            }
            secs += o.secs;
            rss = rss.max(o.rss_kib);
            Ok(o)
        };
        for (_, file) in &layers {
            let mut create = vec!["create-layer".to_string()];
            create.extend(ids.last().cloned());
            let created = call(&self.cli, &create).map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            });
            let applied = created.and_then(|id| {
                let apply = vec!["applydiff".to_string(), "-f".into(), s(file), id.clone()];
                call(&self.cli, &apply).map(|_| id)
            });
            match applied {
                Ok(id) => ids.push(id),
                Err(why) => {
                    failure = Some(why);
                    break;
                }
            }
        }
        match failure {
            Some(why) => self.error(PARALLEL_SERIAL, why),
            None => {
                eprintln!(
                    "bench: {:>6.1}s  {PARALLEL_SERIAL}: {}",
                    self.started.elapsed().as_secs_f64(),
                    report::secs(secs)
                );
                let c = self.cell(PARALLEL_SERIAL);
                c.secs.push(secs);
                c.rss_kib.push(rss);
                for (id, (ds, _)) in ids.iter().zip(&layers) {
                    self.check(PARALLEL_SERIAL, id, ds, None);
                }
            }
        }
        let _ = self
            .cli
            .untimed(&["shutdown".into(), "-f".into()], Sink::Capture);
        self.cli = main;
        if self.imp != Imp::Ours {
            return;
        }
        let parallel = own(&self.cli, "parallel");
        let main = std::mem::replace(&mut self.cli, parallel);
        let mut args = vec!["import-layers".to_string()];
        args.extend(layers.iter().map(|(_, f)| s(f)));
        if let Ok(o) = self.timed(PARALLEL_IMPORT, &args, None, Sink::Capture) {
            let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.starts_with('\t') && !l.trim().is_empty())
                .map(|l| l.trim().to_string())
                .collect();
            if ids.len() != layers.len() {
                self.fail(
                    PARALLEL_IMPORT,
                    format!(
                        "{} layer IDs printed for {} layers",
                        ids.len(),
                        layers.len()
                    ),
                );
            }
            for (id, (ds, _)) in ids.iter().zip(&layers) {
                self.check(PARALLEL_IMPORT, id, ds, None);
            }
        }
        let _ = self
            .cli
            .untimed(&["shutdown".into(), "-f".into()], Sink::Capture);
        self.cli = main;
    }

    /// [`READERS_APPLY`] and [`READERS_WAIT`]: `import-layer` of the large `.tar.gz` runs in
    /// the background while `layers`, `images --json` and `layers --json` run one after
    /// another (with a short pause between rounds, so that the readers do not take the
    /// apply's CPU); the round's sample of [`READERS_WAIT`] is the longest of those calls.
    /// Ours extracts outside the store lock, so the readers do not wait for the data; Go
    /// holds the layers lock for the whole apply. The layer is checked like every apply.
    fn readers_during_apply(&mut self) {
        use std::process::Stdio;
        use std::time::{Duration, Instant};
        let ds = self.data.large.clone();
        let args = vec!["import-layer".to_string(), "-f".into(), s(&ds.gz)];
        let _ = Command::new("sync").status();
        let start = Instant::now();
        let spawned = self
            .cli
            .cmd(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                self.error(READERS_APPLY, e.to_string());
                self.error(READERS_WAIT, e.to_string());
                return;
            }
        };
        let readers: [&[&str]; 3] = [&["layers"], &["images", "--json"], &["layers", "--json"]];
        let mut longest = 0f64;
        let mut calls = 0usize;
        let mut failure = None;
        while matches!(child.try_wait(), Ok(None)) {
            for r in readers {
                let a: Vec<String> = r.iter().map(|x| x.to_string()).collect();
                let t = Instant::now();
                let o = self.cli.cmd(&a).stdin(Stdio::null()).output();
                let secs = t.elapsed().as_secs_f64();
                match o {
                    Ok(o) if o.status.success() => {
                        longest = longest.max(secs);
                        calls += 1;
                    }
                    Ok(o) => {
                        failure.get_or_insert(format!(
                            "{}: {}",
                            r.join(" "),
                            String::from_utf8_lossy(&o.stderr).trim()
                        ));
                    }
                    Err(e) => {
                        failure.get_or_insert(format!("{}: {e}", r.join(" ")));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output();
        let apply_secs = start.elapsed().as_secs_f64();
        let id = match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
            Ok(o) => {
                let why = String::from_utf8_lossy(&o.stderr).trim().to_string();
                self.error(READERS_APPLY, why.clone());
                self.error(READERS_WAIT, why);
                return;
            }
            Err(e) => {
                self.error(READERS_APPLY, e.to_string());
                self.error(READERS_WAIT, e.to_string());
                return;
            }
        };
        eprintln!(
            "bench: {:>6.1}s  {READERS_APPLY}: {}; {calls} reader calls, longest {}",
            self.started.elapsed().as_secs_f64(),
            report::secs(apply_secs),
            report::secs(longest)
        );
        self.cell(READERS_APPLY).secs.push(apply_secs);
        match (failure, calls) {
            (Some(why), _) => self.error(READERS_WAIT, why),
            (None, 0) => self.error(READERS_WAIT, "the apply ended before a reader ran".into()),
            (None, _) => self.cell(READERS_WAIT).secs.push(longest),
        }
        self.check(READERS_APPLY, &id, &ds, None);
    }

    /// `import-image` of the small layer's OCI layout into a store of its own (in the
    /// sequence's store the layer's content is already there and would be copied from it),
    /// checked like an apply: the layer (ID = its diff ID's hex) must diff back to the tar.
    pub(super) fn import_image(&mut self) {
        let Some(layout) = self.data.oci_small.clone() else {
            self.error(IMPORT_IMAGE, "no OCI layout of the small layer".into());
            return;
        };
        let own = Cli {
            bin: self.cli.bin.clone(),
            graph: self.cli.graph.with_extension("import"),
            run: self.cli.run.with_extension("import"),
            driver: self.cli.driver.clone(),
            conf: self.cli.conf.clone(),
        };
        let main = std::mem::replace(&mut self.cli, own);
        let args = vec![
            "import-image".to_string(),
            format!("oci:{}:small", layout.display()),
        ];
        if self.timed(IMPORT_IMAGE, &args, None, Sink::Capture).is_ok() {
            let layer = self.data.small.sha256.clone();
            let ds = self.data.small.clone();
            self.check(IMPORT_IMAGE, &layer, &ds, None);
        }
        self.cli = main;
    }

    /// The measured deletions left for after the last round, then `shutdown -f`.
    pub(super) fn deletions(&mut self) {
        if let Some(id) = self.later.small.take() {
            let args = vec!["delete-layer".to_string(), id];
            let _ = self.timed("delete-layer small", &args, None, Sink::Capture);
        }
        if let Some(id) = self.later.child.take() {
            let args = vec!["delete-layer".to_string(), id];
            let _ = self.timed("delete-layer child", &args, None, Sink::Capture);
        }
        let _ = self
            .cli
            .untimed(&["shutdown".into(), "-f".into()], Sink::Capture);
    }

    pub(super) fn child(&mut self, small: Option<&str>) {
        let ws = [
            "create-layer child of small",
            "mount child",
            "unmount child",
            "delete-layer child",
        ];
        let Some(small) = small else {
            for w in ws {
                self.error(
                    w,
                    "needs the small layer, which could not be applied".into(),
                );
            }
            return;
        };
        let child = self
            .timed(
                ws[0],
                &["create-layer".into(), small.into()],
                None,
                Sink::Capture,
            )
            .and_then(|o| first_id(&o).inspect_err(|e| self.fail(ws[0], e.clone())));
        let Ok(child) = child else {
            for w in &ws[1..] {
                self.error(
                    w,
                    "needs the child layer, which could not be created".into(),
                );
            }
            return;
        };
        match self.timed(ws[1], &["mount".into(), child.clone()], None, Sink::Capture) {
            Ok(o) => {
                let mnt = String::from_utf8_lossy(&o.stdout).trim().to_string();
                // The child shows its parent's content.
                let first_dir = Path::new(&mnt).join("d0001");
                if !first_dir.is_dir() {
                    self.fail(ws[1], format!("{} does not show the parent's files", mnt));
                }
                let unmount = vec!["unmount".to_string(), child.clone()];
                if let Ok(o) = self.timed(ws[2], &unmount, None, Sink::Capture)
                    && !String::from_utf8_lossy(&o.stdout).contains("unmounted")
                {
                    self.fail(ws[2], "no \"mountpoint unmounted\" line".into());
                }
            }
            Err(_) => self.error(ws[2], "needs a mounted layer".into()),
        }
        self.later.child = Some(child);
    }

    pub(super) fn images_and_containers(&mut self) {
        let n = self.scale.images;
        let k = self.scale.per_call;
        let m = self.scale.containers;
        let w_total = format!("create-image ×{n} (total)");
        let w_call = format!("create-image per call @{n}");
        let w_images = format!("images @{n}");
        let w_json = format!("images --json @{n}");
        let w_image = format!("image NAME @{n}");
        let w_del = format!("delete-image ×{} (one call)", n + k - 1);
        let w_ctr = format!("create-container ×{m} (total)");
        let w_ctr_call = "create-container per call".to_string();
        let all = [
            &w_total,
            &w_call,
            &w_images,
            &w_json,
            &w_image,
            &w_del,
            &w_ctr,
            &w_ctr_call,
        ];
        let base = self
            .cli
            .untimed(&["create-layer".into()], Sink::Capture)
            .and_then(|o| first_id(&o));
        let base = match base {
            Ok(b) => b,
            Err(e) => {
                for w in all {
                    self.error(w, format!("needs a base layer: {e}"));
                }
                return;
            }
        };
        let name = |i: usize| format!("localhost/bench/img-{i:04}:latest");
        let mut total = 0.0;
        let mut peak = 0;
        let mut created = 0;
        let mut failed = None;
        for i in 0..n + k {
            let args = vec![
                "create-image".to_string(),
                "-n".into(),
                name(i),
                base.clone(),
            ];
            let o = match measure(&mut self.cli.cmd(&args), None, Sink::Capture) {
                Ok(o) if o.status.success() => o,
                Ok(o) => {
                    failed = Some(o.reason());
                    break;
                }
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            };
            created += 1;
            if i < n {
                total += o.secs;
                peak = peak.max(o.rss_kib);
            } else {
                let c = self.cell(&w_call);
                c.secs.push(o.secs);
                c.rss_kib.push(o.rss_kib);
            }
        }
        if let Some(e) = failed {
            for w in all {
                self.error(w, format!("create-image: {e}"));
            }
            return;
        }
        let c = self.cell(&w_total);
        c.secs.push(total);
        c.rss_kib.push(peak);
        if self.want("images") {
            if let Ok(o) = self.timed_reps(&w_images, &["images".into()], k) {
                let ids = o
                    .stdout
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty() && l[0] != b'\t')
                    .count();
                if ids != created {
                    self.fail(&w_images, format!("{ids} images listed, {created} created"));
                }
            }
            if let Ok(o) = self.timed_reps(&w_json, &["images".into(), "--json".into()], k) {
                let len = serde_json::from_slice::<serde_json::Value>(&o.stdout)
                    .ok()
                    .and_then(|v| v.as_array().map(Vec::len));
                if len != Some(created) {
                    self.fail(
                        &w_json,
                        format!("JSON has {len:?} images, {created} created"),
                    );
                }
            }
            let image = vec!["image".to_string(), name(n / 2)];
            if let Ok(o) = self.timed_reps(&w_image, &image, k)
                && !String::from_utf8_lossy(&o.stdout).contains(&name(n / 2))
            {
                self.fail(&w_image, "the image's name is not shown".into());
            }
            let mut args = vec!["delete-image".to_string()];
            args.extend((1..n + k).map(name));
            let quiet = vec!["images".to_string(), "-q".into()];
            if self.timed(&w_del, &args, None, Sink::Capture).is_ok()
                && let Ok(o) = self.cli.untimed(&quiet, Sink::Capture)
            {
                let left = o
                    .stdout
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count();
                if left != 1 {
                    self.fail(&w_del, format!("{left} images left, expected 1"));
                }
            }
        }
        if self.want("containers") {
            let mut total = 0.0;
            let mut peak = 0;
            let mut failed = None;
            for i in 0..m {
                let args = vec![
                    "create-container".to_string(),
                    "-n".into(),
                    format!("bench-ctr-{i:04}"),
                    name(0),
                ];
                match self.timed(&w_ctr_call, &args, None, Sink::Capture) {
                    Ok(o) => {
                        total += o.secs;
                        peak = peak.max(o.rss_kib);
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                Some(e) => self.error(&w_ctr, e),
                None => {
                    let c = self.cell(&w_ctr);
                    c.secs.push(total);
                    c.rss_kib.push(peak);
                }
            }
        }
    }
}

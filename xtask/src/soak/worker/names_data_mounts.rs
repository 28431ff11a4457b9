//! The worker's steps on names, big data and mounts.

use super::*;

impl<'a> Worker<'a> {
    pub(super) fn add_name(&mut self) {
        let Some((kind, id)) = self.own_item() else {
            return;
        };
        let name = self.fresh("n");
        let x = self.run(
            "add-names",
            vec!["add-names".into(), "-n".into(), name.clone(), id.clone()],
        );
        if x.ok {
            if let Some(i) = self.item_mut(kind, &id) {
                i.names.insert(name);
            }
        } else {
            self.out.uncertain.insert(name);
        }
    }

    pub(super) fn remove_name(&mut self) {
        let Some((kind, id)) = self.own_item() else {
            return;
        };
        let names: Vec<String> = self
            .item_mut(kind, &id)
            .map(|i| i.names.iter().cloned().collect())
            .unwrap_or_default();
        // Go 1.43 has no remove-names: set-names with the others (never to none).
        let min = if self.tool == Tool::Go { 2 } else { 1 };
        if names.len() < min {
            return;
        }
        let Some(gone) = self.rng.pick(&names).cloned() else {
            return;
        };
        let (op, args): (&'static str, Vec<String>) = if self.tool == Tool::Go {
            let mut a = vec!["set-names".to_string()];
            for n in names.iter().filter(|n| **n != gone) {
                a.push("-n".into());
                a.push(n.clone());
            }
            a.push(id.clone());
            ("set-names", a)
        } else {
            (
                "remove-names",
                vec!["remove-names".into(), "-n".into(), gone.clone(), id.clone()],
            )
        };
        let x = self.run(op, args);
        if x.ok {
            if let Some(i) = self.item_mut(kind, &id) {
                i.names.remove(&gone);
            }
            self.out.gone_names.insert(gone);
        } else {
            self.out.uncertain.insert(gone);
        }
    }

    pub(super) fn add_shared_name(&mut self) {
        let (item, name, op, args): (String, String, &'static str, Vec<String>) =
            if self.tool == Tool::Podman {
                let Some(img) = self.rng.pick(&self.env.shared.images).cloned() else {
                    return;
                };
                let tag = self.fresh("t");
                let args = vec!["tag".into(), img.clone(), tag.clone()];
                (img, tag, "tag", args)
            } else {
                let all = self.env.shared.all();
                let Some((_, item)) = self.rng.pick(&all).cloned() else {
                    return;
                };
                let name = self.fresh("s");
                let args = vec!["add-names".into(), "-n".into(), name.clone(), item.clone()];
                (item, name, "add-names", args)
            };
        let x = self.run(op, args);
        self.out.name_ops.push(NameOp {
            item: item.clone(),
            name: name.clone(),
            add: true,
            // podman 4.3's libimage tags with SetNames(names read before + new).
            rmw: self.tool != Tool::Ours,
            tool: self.tool,
            ok: x.ok,
            missing: false,
            start: x.start,
            end: x.end,
            worker: self.idx,
        });
        if x.ok {
            self.out.shared_names.insert((item, name));
        } else {
            self.out.uncertain.insert(name);
        }
    }

    pub(super) fn remove_shared_name(&mut self) {
        // Go 1.43 has no remove-names, and a set-names of a shared item would drop the other
        // workers' names: Go workers only add names to shared items.
        if self.tool == Tool::Go {
            return self.add_shared_name();
        }
        let held: Vec<(String, String)> = self.out.shared_names.iter().cloned().collect();
        let Some((item, name)) = self.rng.pick(&held).cloned() else {
            return;
        };
        let (op, args): (&'static str, Vec<String>) = if self.tool == Tool::Podman {
            ("untag", vec!["untag".into(), item.clone(), name.clone()])
        } else {
            (
                "remove-names",
                vec![
                    "remove-names".into(),
                    "-n".into(),
                    name.clone(),
                    item.clone(),
                ],
            )
        };
        // podman refuses to untag a name that is gone; the verification looks for the
        // read-then-set update that took it.
        const GONE: &str = "tag not known";
        let x = self.run_tolerating(op, args, Some(GONE));
        let missing = !x.ok && x.stderr.contains(GONE);
        self.out.name_ops.push(NameOp {
            item: item.clone(),
            name: name.clone(),
            add: false,
            // podman 4.3's untag is SetNames(names read before - removed).
            rmw: self.tool == Tool::Podman,
            tool: self.tool,
            ok: x.ok,
            missing,
            start: x.start,
            end: x.end,
            worker: self.idx,
        });
        self.out.shared_names.remove(&(item, name.clone()));
        if !x.ok && !missing {
            self.out.uncertain.insert(name);
        }
    }

    pub(super) fn set_data(&mut self) {
        let Some((kind, id)) = self.own_item() else {
            return;
        };
        let keys: Vec<String> = self
            .item_mut(kind, &id)
            .map(|i| i.data.keys().cloned().collect())
            .unwrap_or_default();
        let key = match self.rng.pick(&keys) {
            Some(k) if self.rng.chance(0.3) => k.clone(),
            _ => format!("k{}", self.rng.below(1000)),
        };
        // Mostly small, sometimes up to 1 MiB.
        let len = if self.rng.chance(0.1) {
            self.rng.below(1 << 20)
        } else {
            self.rng.below(64 << 10)
        };
        self.seq += 1;
        let data = content(&format!("{}/{id}/{key}/{}", self.idx, self.seq), len);
        let file = self.scratch.join("data");
        if let Err(e) = fs::write(&file, &data) {
            self.fail(format!("writing {}: {e}", file.display()));
            return;
        }
        let op: &'static str = match kind {
            Kind::Layer => "set-layer-data",
            Kind::Image => "set-image-data",
            Kind::Container => "set-container-data",
        };
        let x = self.run(
            op,
            vec![
                op.into(),
                "-f".into(),
                file.to_string_lossy().into_owned(),
                id.clone(),
                key.clone(),
            ],
        );
        let d = digest(&data);
        let ok = x.ok;
        if let Some(i) = self.item_mut(kind, &id) {
            if ok {
                i.data.insert(key.clone(), d);
            } else {
                i.data.remove(&key);
            }
        }
        if !ok {
            self.out.uncertain.insert(format!("{id}/{key}"));
        }
    }

    pub(super) fn read_back(&mut self) {
        let Some((kind, id)) = self.own_item() else {
            return;
        };
        let data: Vec<(String, String)> = self
            .item_mut(kind, &id)
            .map(|i| i.data.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let Some((key, want)) = self.rng.pick(&data).cloned() else {
            return;
        };
        let op: &'static str = match kind {
            Kind::Layer => "get-layer-data",
            Kind::Image => "get-image-data",
            Kind::Container => "get-container-data",
        };
        let x = self.run(op, vec![op.into(), id.clone(), key.clone()]);
        if x.ok && digest(&x.stdout) != want {
            self.fail(format!(
                "{op} {id} {key}: read back {} bytes with digest {}, expected {want}",
                x.stdout.len(),
                digest(&x.stdout)
            ));
        }
    }

    pub(super) fn mount(&mut self) {
        // Containers (a file is written into each mount), own layers, or the shared child
        // layer that every worker mounts.
        let r = self.rng.below(10);
        let (kind, id) = if self.tool == Tool::Podman || r < 6 {
            let ids: Vec<String> = self
                .out
                .containers
                .iter()
                .filter(|(_, c)| self.tool != Tool::Podman || c.mounts == 0)
                .map(|(k, _)| k.clone())
                .collect();
            match self.rng.pick(&ids) {
                Some(i) => (Kind::Container, i.clone()),
                None => return,
            }
        } else if r < 9 {
            let ids: Vec<String> = self.out.layers.keys().cloned().collect();
            match self.rng.pick(&ids) {
                Some(i) => (Kind::Layer, i.clone()),
                None => return,
            }
        } else {
            match self.env.shared.layers.last() {
                Some(i) => (Kind::Layer, i.clone()),
                None => return,
            }
        };
        let x = self.run("mount", vec!["mount".into(), id.clone()]);
        if !x.ok {
            self.out.uncertain.insert(id);
            return;
        }
        let shared = self.env.shared.layers.contains(&id);
        if shared {
            *self.out.shared_mounts.entry(id.clone()).or_default() += 1;
        } else if let Some(i) = self.item_mut(kind, &id) {
            i.mounts += 1;
        }
        if kind != Kind::Container {
            return;
        }
        let mp = PathBuf::from(x.first_line());
        self.seq += 1;
        let file = format!("soak-w{:02}-f{}", self.idx, self.seq);
        let data = content(&file, self.rng.below(16 << 10));
        match fs::write(mp.join(&file), &data) {
            Ok(()) => {
                if let Some(i) = self.item_mut(kind, &id) {
                    i.files.insert(file, digest(&data));
                }
            }
            Err(e) => self.fail(format!(
                "writing {file} into the mount {} of container {id}: {e}",
                mp.display()
            )),
        }
    }

    pub(super) fn unmount(&mut self) {
        let mut held: Vec<(Kind, String)> = Vec::new();
        held.extend(
            self.out
                .layers
                .iter()
                .filter(|(_, i)| i.mounts > 0)
                .map(|(k, _)| (Kind::Layer, k.clone())),
        );
        held.extend(
            self.out
                .containers
                .iter()
                .filter(|(_, i)| i.mounts > 0)
                .map(|(k, _)| (Kind::Container, k.clone())),
        );
        held.extend(
            self.out
                .shared_mounts
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, _)| (Kind::Layer, k.clone())),
        );
        if let Some((kind, id)) = self.rng.pick(&held).cloned() {
            self.unmount_one(kind, &id);
        }
    }

    pub(super) fn list(&mut self) {
        let what = ["layers", "images", "containers"][self.rng.below(3)];
        self.run("list", vec![what.into()]);
    }

    pub(super) fn unmount_all(&mut self) {
        let layers: Vec<String> = self.out.layers.keys().cloned().collect();
        for l in layers {
            self.unmount_fully(Kind::Layer, &l);
        }
        let ctrs: Vec<String> = self.out.containers.keys().cloned().collect();
        for c in ctrs {
            self.unmount_fully(Kind::Container, &c);
        }
        let shared: Vec<String> = self.out.shared_mounts.keys().cloned().collect();
        for l in shared {
            while self.out.shared_mounts.get(&l).copied().unwrap_or(0) > 0 {
                if !self.unmount_one(Kind::Layer, &l) {
                    break;
                }
            }
        }
    }
}

//! ID-mapped layers and containers through the `Store` API, as Go 1.60 makes them, on vfs,
//! btrfs (a loop-mounted file system), overlay with idmapped mounts (shifting) and overlay
//! without them (the driver's cached `idmapped-lower-dir-false` probe): which maps layers
//! record, how their content is owned, the mapped copies of an image's top layer
//! (`mapped-layers`, made once and reused), `mount_image` and the parent owners.
//! Needs root (chown, mounts); fails without it when CI=true, skipped loudly otherwise.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use storage_testsupport::owner;

use containers_storage::{ContainerOptions, CreateLayerOptions, NewImage, Store};
use storage_config::StoreOptions;
use storage_drivers::MountOpts;
use storage_testsupport::{LoopFs, is_root, require, unmount_all_under};
use storage_types::{ErrorKind, IdMap};

fn map(host: u32) -> Vec<IdMap> {
    vec![IdMap::new(0, host, 6)]
}

/// `./` 0:0, `etc/` 0:0, `d/` 3:4, `fN` owned `N:N` (N=1..5), plus `extra` files.
fn base_tar(extra: &[(&str, u64)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, dir: bool, id: (u64, u64)| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_uid(id.0);
        h.set_gid(id.1);
        h.set_mtime(1_700_000_000);
        let data: &[u8] = if dir { b"" } else { b"x\n" };
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).expect("tar entry");
    };
    add("./", true, (0, 0));
    add("etc/", true, (0, 0));
    add("d/", true, (3, 4));
    for n in 1..=5 {
        add(&format!("f{n}"), false, (n, n));
    }
    for (name, id) in extra {
        add(name, false, (*id, *id));
    }
    b.into_inner().expect("tar")
}

#[track_caller]
fn assert_files(root: &Path, uid: u32, gid: u32, what: &str) {
    for n in 1..=5u32 {
        let f = root.join(format!("f{n}"));
        assert_eq!(owner(&f), (uid + n, gid + n), "{what}: f{n}");
    }
    assert_eq!(owner(&root.join("d")), (uid + 3, gid + 4), "{what}: d");
}

/// A scratch store; unmounts everything below it on drop.
struct Scratch {
    store: Option<Store>,
    dir: tempfile::TempDir,
    _fs: Option<LoopFs>,
}

impl Scratch {
    /// `None` after a loud skip (outside CI) when the driver cannot run here.
    fn new(driver: &str, no_idmap: bool) -> Option<Scratch> {
        if !require(is_root(), "root (chown to mapped IDs, mounts)") {
            return None;
        }
        let fs = if driver == "btrfs" {
            match LoopFs::new("mkfs.btrfs", 300) {
                Ok(fs) => Some(fs),
                Err(e) => {
                    require(false, &format!("a loop-mounted btrfs: {e}"));
                    return None;
                }
            }
        } else {
            None
        };
        let dir = match &fs {
            Some(fs) => tempfile::tempdir_in(fs.path()),
            None => tempfile::tempdir(),
        }
        .expect("tempdir");
        if no_idmap {
            // The overlay driver caches its probes in the run root, as Go's does.
            let probes = dir.path().join("run/overlay");
            std::fs::create_dir_all(&probes).expect("mkdir");
            std::fs::write(probes.join("idmapped-lower-dir-false"), b"").expect("probe");
        }
        let store = Store::open(&StoreOptions {
            graph_root: dir.path().join("root"),
            run_root: dir.path().join("run"),
            driver: driver.into(),
            ..StoreOptions::default()
        })
        .expect("open store");
        Some(Scratch {
            store: Some(store),
            dir,
            _fs: fs,
        })
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("open")
    }

    fn import(
        &self,
        parent: Option<&str>,
        tar: Vec<u8>,
        maps: Option<u32>,
    ) -> storage_types::Result<String> {
        let opts = CreateLayerOptions {
            parent: parent.map(str::to_string),
            uid_map: maps.map(map).unwrap_or_default(),
            gid_map: maps.map(map).unwrap_or_default(),
            ..CreateLayerOptions::default()
        };
        let (l, _) = self
            .store()
            .create_layer(&opts, Some(Box::new(Cursor::new(tar))))?;
        Ok(l.id)
    }

    fn mapped(&self, parent: &str, uid: Option<u32>, gid: Option<u32>) -> String {
        let opts = CreateLayerOptions {
            parent: Some(parent.to_string()),
            uid_map: uid.map(map).unwrap_or_default(),
            gid_map: gid.map(map).unwrap_or_default(),
            ..CreateLayerOptions::default()
        };
        self.store().create_layer(&opts, None).expect("create").0.id
    }

    fn layer(&self, id: &str) -> storage_types::Layer {
        self.store().layer(id).expect("layer").0
    }

    fn with_mount<R>(&self, key: &str, maps: Option<u32>, f: impl FnOnce(&Path) -> R) -> R {
        let opts = MountOpts {
            uid_map: maps.map(map).unwrap_or_default(),
            gid_map: maps.map(map).unwrap_or_default(),
            ..MountOpts::default()
        };
        let p: PathBuf = self.store().mount(key, &opts).expect("mount");
        let r = f(&p);
        self.store().unmount(key, false).expect("unmount");
        r
    }

    fn container(&self, image: &str, maps: Option<u32>) -> storage_types::Container {
        self.store()
            .create_container(&ContainerOptions {
                image: image.into(),
                uid_map: maps.map(map).unwrap_or_default(),
                gid_map: maps.map(map).unwrap_or_default(),
                ..ContainerOptions::default()
            })
            .expect("create container")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(s) = self.store.take() {
            let _ = s.shutdown(true);
        }
        unmount_all_under(self.dir.path());
    }
}

fn store_checklist(driver: &str, no_idmap: bool) {
    let Some(s) = Scratch::new(driver, no_idmap) else {
        return;
    };
    let st = s.store();
    let shifts = st
        .status()
        .expect("status")
        .iter()
        .any(|(k, v)| k == "Supports shifting" && v == "true");
    assert_eq!(
        shifts,
        driver == "overlay" && !no_idmap,
        "shifting on {driver}"
    );

    let b = s.import(None, base_tar(&[]), None).expect("base");
    let vfs_dir = st.graph_root().join("vfs/dir");
    let u = s.mapped(&b, Some(100_000), Some(200_000));
    let ul = s.layer(&u);
    if shifts {
        // Checklist 8: a shifting driver gets the layer without maps.
        assert!(ul.uidmap.is_empty() && ul.gidmap.is_empty());
        s.with_mount(&u, None, |p| assert_files(p, 0, 0, "shifted layer"));
    } else {
        // Checklist 1.
        assert_eq!(
            (ul.uidmap.clone(), ul.gidmap.clone()),
            (map(100_000), map(200_000))
        );
        assert!(ul.uidset.is_empty());
        s.with_mount(&u, None, |p| {
            assert_files(p, 100_000, 200_000, "mapped layer");
            // 1.47+ vfs re-owns the root dir (1.43: 0:0); btrfs' naive walk skips it.
            let root = if driver == "btrfs" {
                (0, 0)
            } else {
                (100_000, 200_000)
            };
            assert_eq!(owner(p), root, "root dir");
        });
    }
    if driver == "vfs" {
        // Checklist 5 (1.55+): vfs/dir keeps its owner.
        assert_eq!(owner(&vfs_dir), (0, 0));
    }
    // Checklist 4.
    let u1 = s.mapped(&b, Some(100_000), None);
    let l1 = s.layer(&u1);
    assert!(l1.gidmap.is_empty());
    if !shifts {
        assert_eq!(l1.uidmap, map(100_000));
        s.with_mount(&u1, None, |p| {
            assert_eq!(owner(&p.join("f2")), (100_002, 2))
        });
    }
    // Checklist 2 and 3.
    let b7 = s.import(None, base_tar(&[("f7", 7)]), None).expect("base7");
    let u7 = s.mapped(&b7, Some(100_000), Some(200_000));
    s.with_mount(&u7, None, |p| {
        let want = if shifts { (7, 7) } else { (65534, 65534) };
        assert_eq!(owner(&p.join("f7")), want, "overflow ID");
    });
    let bad = s.import(None, base_tar(&[("f7", 7)]), Some(100_000));
    if shifts {
        bad.expect("map-less layer: nothing to map");
    } else {
        let e = bad.expect_err("unmappable owner");
        assert!(
            e.to_string()
                .contains("container ID 7 cannot be mapped to a host ID"),
            "{e}"
        );
    }

    let img = st
        .create_image(NewImage {
            layer: u.clone(),
            names: vec!["img".into()],
            ..NewImage::default()
        })
        .expect("image");
    // Checklist 6: mount_image makes (once) a map-less copy of a mapped top layer.
    let mnt = st
        .mount_image("img", &MountOpts::default())
        .expect("mount image");
    assert_files(&mnt, 0, 0, "mount_image");
    assert!(!st.unmount_image("img", false).expect("unmount image"));
    let mapped = st.image("img").expect("image").mapped_layers;
    if shifts {
        assert!(mapped.is_empty());
    } else {
        assert_eq!(mapped.len(), 1);
        let c0 = s.layer(&mapped[0]);
        assert_eq!(c0.parent, b);
        assert!(c0.uidmap.is_empty() && c0.gidmap.is_empty() && c0.names.is_empty());
    }
    let mnt2 = st
        .mount_image(&img.id, &MountOpts::default())
        .expect("again");
    assert_eq!(st.image("img").expect("image").mapped_layers, mapped);
    assert_eq!(st.mounted(mapped.first().unwrap_or(&u)).expect("count"), 1);
    assert!(!st.unmount_image("img", false).expect("unmount"));
    let _ = mnt2;
    let e = st
        .mount_image(
            "img",
            &MountOpts {
                options: vec!["rw".into()],
                ..MountOpts::default()
            },
        )
        .expect_err("rw");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    // A container without maps uses the canonical copy.
    let c0 = s.container("img", None);
    let l0 = s.layer(&c0.layer);
    assert_eq!(&l0.parent, mapped.first().unwrap_or(&u));
    assert!(c0.uidmap.is_empty() && l0.uidmap.is_empty());
    // Checklist 7.
    let c3 = s.container("img", Some(300_000));
    assert_eq!(c3.uidmap, map(300_000));
    let l3 = s.layer(&c3.layer);
    let after = st.image("img").expect("image").mapped_layers;
    if shifts {
        assert!(after.is_empty());
        assert_eq!(l3.parent, u);
        assert!(l3.uidmap.is_empty());
    } else {
        assert_eq!(after.len(), 2);
        assert_eq!(l3.parent, after[1]);
        assert_eq!(s.layer(&after[1]).uidmap, map(300_000));
        assert_eq!(l3.uidmap, map(300_000));
    }
    s.with_mount(&c3.id, None, |p| {
        assert_files(p, 300_000, 300_000, "container")
    });
    let again = s.container("img", Some(300_000));
    assert_eq!(st.image("img").expect("image").mapped_layers, after);
    assert_eq!(s.layer(&again.layer).parent, l3.parent);

    // Checklist 9.
    assert_eq!(
        st.layer_parent_owners(&b).expect("unmapped"),
        (vec![], vec![])
    );
    assert_eq!(
        st.container_parent_owners(&c0.id).expect("no maps"),
        (vec![], vec![])
    );
    if shifts {
        // The container has maps, its layer none: nothing to report.
        assert_eq!(
            st.container_parent_owners(&c3.id).expect("shifted"),
            (vec![], vec![])
        );
        return;
    }
    let e = st.layer_parent_owners(&u).expect_err("not mounted");
    assert_eq!(e.kind(), ErrorKind::LayerNotMounted);
    s.with_mount(&u, None, |_| {
        assert_eq!(
            st.layer_parent_owners(&u).expect("mounted"),
            (vec![0], vec![0])
        );
    });
    s.with_mount(&c3.id, None, |_| {
        assert_eq!(
            st.container_parent_owners(&c3.id).expect("mounted"),
            (vec![0], vec![0])
        );
    });
}

#[test]
fn checklist_vfs() {
    store_checklist("vfs", false);
}

#[test]
fn checklist_btrfs() {
    store_checklist("btrfs", false);
}

#[test]
fn checklist_overlay_idmapped() {
    store_checklist("overlay", false);
}

#[test]
fn checklist_overlay_without_idmap() {
    store_checklist("overlay", true);
}

/// A container from an image in a read-only store: no copy, the container layer is re-owned
/// to the container's maps (or inherits the top layer's); `mount_image` of such an image
/// cannot make its canonical copy.
#[test]
fn read_only_image_store() {
    let Some(mut ro) = Scratch::new("vfs", false) else {
        return;
    };
    let b = ro.import(None, base_tar(&[]), None).expect("base");
    let u = ro.mapped(&b, Some(100_000), Some(200_000));
    ro.store()
        .create_image(NewImage {
            layer: u.clone(),
            names: vec!["img".into()],
            ..NewImage::default()
        })
        .expect("image");
    let ro_root = ro.store().graph_root().to_path_buf();
    // One process holds one lock object per file: close the writer before reading it as an
    // additional store.
    if let Some(st) = ro.store.take() {
        st.shutdown(true).expect("shutdown");
    }
    let ro_images = std::fs::read(ro_root.join("vfs-images/images.json")).expect("images.json");
    let dir = tempfile::tempdir().expect("tempdir");
    let st = Store::open(&StoreOptions {
        graph_root: dir.path().join("root"),
        run_root: dir.path().join("run"),
        driver: "vfs".into(),
        driver_options: vec![format!("vfs.imagestore={}", ro_root.display())],
        ..StoreOptions::default()
    })
    .expect("open");
    let e = st
        .mount_image("img", &MountOpts::default())
        .expect_err("read-only");
    assert_eq!(
        e.to_string(),
        "cannot create an image with canonical UID/GID mappings in a read-only store"
    );
    let c = st
        .create_container(&ContainerOptions {
            image: "img".into(),
            uid_map: map(300_000),
            gid_map: map(300_000),
            ..ContainerOptions::default()
        })
        .expect("container");
    let l = st.layer(&c.layer).expect("layer").0;
    assert_eq!(
        (l.parent.clone(), l.uidmap.clone()),
        (u.clone(), map(300_000))
    );
    let p = st.mount(&c.id, &MountOpts::default()).expect("mount");
    assert_files(&p, 300_000, 300_000, "re-owned container layer");
    st.unmount(&c.id, false).expect("unmount");
    let plain = st
        .create_container(&ContainerOptions {
            image: "img".into(),
            ..ContainerOptions::default()
        })
        .expect("container");
    // Without maps the container layer takes the top layer's (Go's CreateContainer), as
    // no map-less copy can be added to a read-only image.
    let pl = st.layer(&plain.layer).expect("layer").0;
    assert_eq!(
        (pl.parent.clone(), pl.uidmap.clone()),
        (u.clone(), map(100_000))
    );
    assert!(plain.uidmap.is_empty(), "the record has no maps");
    let p = st.mount(&plain.id, &MountOpts::default()).expect("mount");
    assert_files(
        &p,
        100_000,
        200_000,
        "container layer with the top layer's maps",
    );
    st.unmount(&plain.id, false).expect("unmount");
    assert_eq!(
        std::fs::read(ro_root.join("vfs-images/images.json")).expect("images.json"),
        ro_images,
        "the read-only store is not written"
    );
    let _ = st.shutdown(true);
}

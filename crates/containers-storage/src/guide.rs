//! A short guide to using the library without the CLI.
//!
//! The [`Store`](crate::Store) is the front door: every operation of the `containers-storage`
//! tool is one method call on it, and it takes the same locks, in the same order, as Go's
//! containers/storage, so a program using it can share a store with podman at the same moment.
//!
//! # Open a store, build an image from a tar, run a container on it
//!
//! ```
//! use containers_storage::{ContainerOptions, CreateLayerOptions, NewImage, Store};
//! use storage_config::StoreOptions;
//!
//! # let tmp = tempfile::tempdir()?;
//! // 1. Open (creating it if needed) a store. `storage_config::load_default_options()`
//! //    instead reads storage.conf like podman does and so opens podman's own store.
//! let store = Store::open(&StoreOptions {
//!     graph_root: tmp.path().join("root"),
//!     run_root: tmp.path().join("run"),
//!     driver: "vfs".into(),
//!     ..StoreOptions::default()
//! })?;
//!
//! // 2. A layer from a tar stream: plain, gzip, bzip2, xz or zstd, detected by magic bytes.
//! //    Digests, sizes and the tar-split data that reproduces the tar are recorded.
//! let mut tar = tar::Builder::new(Vec::new());
//! let mut header = tar::Header::new_gnu();
//! header.set_size(6);
//! header.set_mode(0o644);
//! tar.append_data(&mut header, "etc/hello", &b"hello\n"[..])?;
//! let tar = tar.into_inner()?;
//! let diff = Box::new(std::io::Cursor::new(tar.clone()));
//! let (layer, _size) = store.create_layer(&CreateLayerOptions::default(), Some(diff))?;
//! assert_eq!(layer.diff_size, tar.len() as i64);
//!
//! // 3. An image whose top layer it is, with a name and a manifest ("big data" item).
//! let image = store.create_image(NewImage {
//!     names: vec!["localhost/hello:latest".into()],
//!     layer: layer.id.clone(),
//!     ..NewImage::default()
//! })?;
//! store.set_image_big_data(&image.id, "manifest", br#"{"schemaVersion":2}"#)?;
//! assert_eq!(store.image("localhost/hello:latest")?.digests.len(), 1);
//!
//! // 4. A container: a read-write layer on top of the image's layers.
//! let ctr = store.create_container(&ContainerOptions {
//!     names: vec!["hello-ctr".into()],
//!     image: "localhost/hello:latest".into(),
//!     ..ContainerOptions::default()
//! })?;
//! let rootfs = store.mount("hello-ctr", &Default::default())?;
//! assert_eq!(std::fs::read_to_string(rootfs.join("etc/hello"))?, "hello\n");
//! std::fs::write(rootfs.join("etc/new"), "written by the container\n")?;
//! store.unmount("hello-ctr", false)?;
//!
//! // 5. What the container changed, as Go's `changes` reports it.
//! let changes = store.changes(None, &ctr.layer)?;
//! assert!(changes.iter().any(|c| c.path == "/etc/new"));
//!
//! // 6. Clean up: the container, then the image and the layers only it used.
//! store.delete_container("hello-ctr")?;
//! let removed_layers = store.delete_image("localhost/hello:latest", true)?;
//! assert_eq!(removed_layers, vec![layer.id.clone()]);
//! store.shutdown(false)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Images in and out in OCI form
//!
//! The [`oci`](crate::oci) module sits on top of the `Store` and moves whole images: it reads an OCI
//! image layout, an `oci-archive` or a `docker-archive` and stores the image exactly as
//! podman's own pulls do (same layer IDs, image ID, big data and names), and writes images
//! back out in the same three formats. Its documentation has the runnable example
//! ([`oci::import_image`](crate::oci::import_image), [`oci::export_image`](crate::oci::export_image));
//! it uses only the `Store`'s public API, as any user of this crate could.

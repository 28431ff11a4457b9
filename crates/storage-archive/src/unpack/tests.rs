use super::*;

fn hdr(typeflag: u8, mode: i64) -> Header {
    Header {
        typeflag,
        mode,
        uid: 1,
        gid: 2,
        devmajor: 8,
        devminor: 1,
        ..Default::default()
    }
}

#[test]
fn override_stat_values() {
    assert_eq!(override_stat(&hdr(b'0', 0o4755)), "1:2:4755:file");
    assert_eq!(override_stat(&hdr(b'5', 0o40700)), "1:2:0700:dir");
    assert_eq!(override_stat(&hdr(b'3', 0o666)), "1:2:0666:char-8-1");
    assert_eq!(override_stat(&hdr(b'4', 0o660)), "1:2:0660:block-8-1");
    assert_eq!(override_stat(&hdr(b'6', 0o600)), "1:2:0600:pipe");
    assert_eq!(override_stat(&hdr(b'2', 0o777)), "1:2:0777:symlink");
}

#[test]
fn chtimes_clamping() {
    let t = |secs| Some(TarTime { secs, nanos: 5 });
    assert_eq!(chtimes_clamp(None).tv_sec, 0);
    assert_eq!(chtimes_clamp(t(-1)).tv_sec, 0);
    assert_eq!(chtimes_clamp(t(-1)).tv_nsec, 0);
    assert_eq!(chtimes_clamp(t(10)).tv_sec, 10);
    assert_eq!(chtimes_clamp(t(10)).tv_nsec, 5);
    assert_eq!(chtimes_clamp(t(MAX_SECS + 1)).tv_sec, 0);
}

#[test]
fn base_names() {
    assert_eq!(go_base(b".wh..wh.plnk/123"), b"123");
    assert_eq!(go_base(b"/a/b/"), b"b");
    assert_eq!(go_base(b"x"), b"x");
    assert_eq!(go_base(b"/"), b"/");
}

#[test]
fn remap_maps_or_fails() {
    let maps = vec![IdMap {
        container_id: 0,
        host_id: 1000,
        size: 10,
    }];
    let opts = UnpackOptions {
        uid_map: maps.clone(),
        gid_map: maps,
        ..Default::default()
    };
    let mut h = hdr(b'0', 0o644);
    remap(&opts, &mut h).unwrap();
    assert_eq!((h.uid, h.gid), (1001, 1002));
    let mut h = hdr(b'0', 0o644);
    h.gid = 10;
    assert_eq!(
        remap(&opts, &mut h).unwrap_err().to_string(),
        "container ID 10 cannot be mapped to a host ID"
    );
    let mut h = hdr(b'0', 0o644);
    h.uid = -1;
    assert!(remap(&opts, &mut h).is_err());
    // No maps: identity.
    let mut h = hdr(b'0', 0o644);
    remap(&UnpackOptions::default(), &mut h).unwrap();
    assert_eq!((h.uid, h.gid), (1, 2));
}

#[test]
fn missing_root_is_an_error() {
    let err = unpack(
        &mut &[0u8; 1024][..],
        Path::new("/nonexistent/root"),
        &UnpackOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "open /nonexistent/root: no such file or directory"
    );
}

use super::*;

#[test]
fn absolute_clean_is_lexical_like_go_filepath_abs() {
    assert_eq!(
        absolute_clean(Path::new("/a/./b//c/../d")).unwrap(),
        PathBuf::from("/a/b/d")
    );
    assert_eq!(
        absolute_clean(Path::new("/../x")).unwrap(),
        PathBuf::from("/x")
    );
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        absolute_clean(Path::new("rel/f")).unwrap(),
        cwd.join("rel/f")
    );
}

#[test]
fn os_errors_render_in_go_words() {
    let e = LockError::Open {
        path: PathBuf::from("/x/layers.lock"),
        source: io::Error::from_raw_os_error(libc::EACCES),
    };
    assert_eq!(e.to_string(), "open /x/layers.lock: permission denied");
    let e = LockError::WriteToken {
        path: PathBuf::from("/y"),
        source: io::Error::from_raw_os_error(libc::ENOSPC),
    };
    assert_eq!(e.to_string(), "write /y: no space left on device");
    assert_eq!(
        e.os_error().and_then(io::Error::raw_os_error),
        Some(libc::ENOSPC)
    );
}

#[test]
fn generated_tokens_follow_go_layout_and_are_unique() {
    let a = Token::generate().unwrap();
    let b = Token::generate().unwrap();
    assert_eq!(a.as_bytes().len(), TOKEN_SIZE);
    assert_ne!(a, b);
    let ca = u64::from_le_bytes(a.as_bytes()[8..16].try_into().unwrap());
    let cb = u64::from_le_bytes(b.as_bytes()[8..16].try_into().unwrap());
    assert!(cb > ca, "per-process counter must increase");
    let pid = u32::from_le_bytes(a.as_bytes()[16..20].try_into().unwrap());
    assert_eq!(pid, std::process::id());
    let nanos = u64::from_le_bytes(a.as_bytes()[0..8].try_into().unwrap());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    assert!(nanos <= now && now - nanos < 60_000_000_000);
}

//! The current user, as Go's `os/user` pure-Go lookup finds it in `/etc/passwd`.

/// The user the namespace is built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The real UID (`getuid()`).
    pub uid: u32,
    /// The primary GID from `/etc/passwd` (the real GID when the user has no entry).
    pub gid: u32,
    /// The user name from `/etc/passwd` (`$USER` when the user has no entry).
    pub name: String,
}

const PASSWD: &str = "/etc/passwd";

/// `(name, uid, gid)` of each well-formed `/etc/passwd` entry.
fn passwd_entries() -> Vec<(String, u32, u32)> {
    let text = std::fs::read_to_string(PASSWD).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || f[0].is_empty() || line.starts_with('#') {
                return None;
            }
            Some((f[0].to_string(), f[2].parse().ok()?, f[3].parse().ok()?))
        })
        .collect()
}

/// The UID of user `name` in `/etc/passwd`.
pub(crate) fn lookup_user_id(name: &str) -> Option<u32> {
    passwd_entries()
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, uid, _)| uid)
}

/// The user running this process (Go's `user.Current()`).
pub fn current_user() -> User {
    let uid = rustix::process::getuid().as_raw();
    match passwd_entries().into_iter().find(|(_, u, _)| *u == uid) {
        Some((name, _, gid)) => User { uid, gid, name },
        None => User {
            uid,
            gid: rustix::process::getgid().as_raw(),
            name: std::env::var("USER").unwrap_or_default(),
        },
    }
}

//! Random IDs.

/// A new random ID: 32 bytes from the OS CSPRNG as 64 lower-case hex digits,
/// regenerated while its first 12 characters are all decimal digits (Go's rule,
/// so a short ID never looks like a number).
///
/// If the OS random source fails (practically impossible on Linux ≥ 3.17) the
/// ID is derived from the clock, the process ID and a counter, hashed.
pub fn generate_id() -> String {
    loop {
        let id = hex::encode(random_32());
        if !id.as_bytes()[..12].iter().all(u8::is_ascii_digit) {
            return id;
        }
    }
}

/// Like [`generate_id`], also regenerating while `taken(id)` says the ID is in use.
pub fn generate_unique_id(taken: impl Fn(&str) -> bool) -> String {
    loop {
        let id = generate_id();
        if !taken(&id) {
            return id;
        }
    }
}

/// Whether `s` has the format of a generated ID (64 lower-case hex digits).
pub fn is_full_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn random_32() -> [u8; 32] {
    let mut buf = [0u8; 32];
    if getrandom::fill(&mut buf).is_ok() {
        return buf;
    }
    use sha2::Digest as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut h = sha2::Sha256::new();
    h.update(now.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    buf.copy_from_slice(&h.finalize());
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_go_format() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let id = generate_id();
            assert!(is_full_id(&id), "{id}");
            assert!(!id[..12].bytes().all(|b| b.is_ascii_digit()), "{id}");
            assert!(seen.insert(id));
        }
        assert!(!is_full_id("ABCDEF"));
        assert!(!is_full_id(&"A".repeat(64)));
        assert!(is_full_id(&"0a".repeat(32)));
    }

    #[test]
    fn unique_ids_skip_taken_ones() {
        let calls = std::cell::Cell::new(0);
        let id = generate_unique_id(|_| {
            calls.set(calls.get() + 1);
            calls.get() < 3
        });
        assert_eq!(calls.get(), 3);
        assert!(is_full_id(&id));
    }
}

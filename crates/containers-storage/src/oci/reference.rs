//! Image references: skopeo's transport syntax (`oci:DIR[:REF]`, `oci-archive:FILE[:REF]`,
//! `docker-archive:FILE[:REF]`) and the normalization of image names that containers/image
//! applies before storing them (`foo` → `docker.io/library/foo:latest`).

use std::fmt;
use std::path::PathBuf;

use crate::types::{Error, ErrorKind, Result, go_quote};

/// The transports this crate reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// An OCI image layout directory (`oci:`).
    Oci,
    /// An OCI image layout in a tar file (`oci-archive:`).
    OciArchive,
    /// A `docker save` / `podman save` tar file (`docker-archive:`).
    DockerArchive,
}

impl Transport {
    /// The transport's name in references (`oci`, `oci-archive`, `docker-archive`).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Oci => "oci",
            Transport::OciArchive => "oci-archive",
            Transport::DockerArchive => "docker-archive",
        }
    }

    /// The transport called `name`, if it is one of ours.
    pub fn from_name(name: &str) -> Option<Transport> {
        match name {
            "oci" => Some(Transport::Oci),
            "oci-archive" => Some(Transport::OciArchive),
            "docker-archive" => Some(Transport::DockerArchive),
            _ => None,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which image of a layout or archive a reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// None given: the layout or archive must hold exactly one image.
    Only,
    /// `@N`: the N-th entry of `index.json` or `manifest.json`.
    Index(usize),
    /// `oci:`/`oci-archive:`: the `org.opencontainers.image.ref.name` annotation;
    /// `docker-archive:`: a `NAME:TAG` compared with the normalized `RepoTags`.
    Name(String),
}

/// A parsed `TRANSPORT:PATH[:REF]` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The transport.
    pub transport: Transport,
    /// The directory (`oci:`) or file (archives).
    pub path: PathBuf,
    /// Which image inside it.
    pub selector: Selector,
}

impl ImageRef {
    /// Parses skopeo's syntax: the transport, then the path, then (after the first `:` of the
    /// rest) the optional reference.
    pub fn parse(s: &str) -> Result<ImageRef> {
        let Some((transport, rest)) = s.split_once(':') else {
            return Err(invalid(format!(
                "Invalid image name {}, expected colon-separated transport:reference",
                go_quote(s)
            )));
        };
        let Some(transport) = Transport::from_name(transport) else {
            return Err(invalid(format!(
                "Invalid image name {}, unknown transport {}",
                go_quote(s),
                go_quote(transport)
            )));
        };
        Self::parse_with(transport, rest)
    }

    /// Parses `PATH[:REF]` for `transport`.
    pub fn parse_with(transport: Transport, rest: &str) -> Result<ImageRef> {
        let (path, reference) = match rest.split_once(':') {
            Some((p, r)) => (p, Some(r)),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(invalid(format!(
                "Invalid image name {}: empty path",
                go_quote(&format!("{transport}:{rest}"))
            )));
        }
        let selector = match reference {
            None | Some("") => Selector::Only,
            Some(r) => match r.strip_prefix('@') {
                Some(n) => Selector::Index(n.parse().map_err(|_| {
                    invalid(format!("Invalid source index @{n}, expected a number"))
                })?),
                None => {
                    if transport == Transport::DockerArchive {
                        let named = normalize_name(r)?;
                        if named.contains('@') {
                            return Err(invalid(format!(
                                "docker-archive doesn't support digest references: {}",
                                go_quote(r)
                            )));
                        }
                        Selector::Name(named)
                    } else {
                        Selector::Name(r.to_string())
                    }
                }
            },
        };
        Ok(ImageRef {
            transport,
            path: PathBuf::from(path),
            selector,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.path.display())?;
        match &self.selector {
            Selector::Only => Ok(()),
            Selector::Index(n) => write!(f, ":@{n}"),
            Selector::Name(n) => write!(f, ":{n}"),
        }
    }
}

fn invalid(text: String) -> Error {
    Error::msg(ErrorKind::InvalidInput, text)
}

const DEFAULT_DOMAIN: &str = "docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// One path component: `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
fn valid_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A domain: dot-separated labels of `[a-zA-Z0-9-]` (no leading/trailing `-`) or a bracketed
/// IPv6 address, then an optional `:port`.
fn valid_domain(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.is_empty() || !addr.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return false;
        }
        match after.strip_prefix(':') {
            Some(p) => ("", Some(p)),
            None if after.is_empty() => ("", None),
            None => return false,
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()))
    {
        return false;
    }
    if s.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// A tag: `[\w][\w.-]{0,127}`.
fn valid_tag(s: &str) -> bool {
    let b = s.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// Normalizes an image name as containers/image stores it (`reference.ParseNormalizedNamed`
/// plus `TagNameOnly`): a missing domain becomes `docker.io` (with `library/` for one-component
/// names), a name without tag or digest gets `:latest`. `localhost/t:1` stays as it is.
///
/// ```
/// use containers_storage::oci::normalize_name;
/// assert_eq!(normalize_name("foo").unwrap(), "docker.io/library/foo:latest");
/// assert_eq!(normalize_name("localhost/t:1").unwrap(), "localhost/t:1");
/// assert_eq!(normalize_name("quay.io/a/b").unwrap(), "quay.io/a/b:latest");
/// assert!(normalize_name("Foo").is_err());
/// ```
pub fn normalize_name(s: &str) -> Result<String> {
    let bad = |why: &str| invalid(format!("parsing image name {}: {why}", go_quote(s)));
    if s.is_empty() {
        return Err(bad("repository name must have at least one component"));
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => {
            crate::types::Digest::validate(d).map_err(bad)?;
            (r, Some(d))
        }
        None => (s, None),
    };
    // The tag follows the last ':' after the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag
        && !valid_tag(t)
    {
        return Err(bad("invalid reference format"));
    }
    let (domain, remainder) = match name.find('/') {
        Some(i)
            if name[..i].contains(['.', ':'])
                || &name[..i] == "localhost"
                || name[..i].to_lowercase() != name[..i] =>
        {
            (&name[..i], name[i + 1..].to_string())
        }
        _ => (DEFAULT_DOMAIN, name.to_string()),
    };
    let domain = if domain == "index.docker.io" {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    if remainder.to_lowercase() != remainder {
        return Err(bad("repository name must be lowercase"));
    }
    let remainder = if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{remainder}")
    } else {
        remainder
    };
    if !valid_domain(domain) || !remainder.split('/').all(valid_path_component) {
        return Err(bad("invalid reference format"));
    }
    let full_name = format!("{domain}/{remainder}");
    if full_name.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(bad("repository name must not be more than 255 characters"));
    }
    let mut out = full_name;
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_containers_image() {
        for (input, want) in [
            ("foo", "docker.io/library/foo:latest"),
            ("foo:1", "docker.io/library/foo:1"),
            ("three:1", "docker.io/library/three:1"),
            ("user/foo", "docker.io/user/foo:latest"),
            ("index.docker.io/foo", "docker.io/library/foo:latest"),
            ("localhost/t:1", "localhost/t:1"),
            ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
            ("Quay.IO/a:x", "Quay.IO/a:x"),
            (
                "example.com/a__b/c-d.e:v1.2_3",
                "example.com/a__b/c-d.e:v1.2_3",
            ),
            ("[::1]:5000/x", "[::1]:5000/x:latest"),
        ] {
            assert_eq!(normalize_name(input).unwrap(), want, "{input}");
        }
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            normalize_name(&format!("foo@{d}")).unwrap(),
            format!("docker.io/library/foo@{d}")
        );
        for bad in [
            "",
            "Foo",
            "foo/Bar",
            "foo:",
            "foo:-x",
            "a//b",
            "-a",
            "a-",
            "a..b",
            "foo@sha256:12",
            "a___b",
        ] {
            assert!(normalize_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parses_transports() {
        let r = ImageRef::parse("oci:/tmp/x:v1").unwrap();
        assert_eq!(r.transport, Transport::Oci);
        assert_eq!(r.path, PathBuf::from("/tmp/x"));
        assert_eq!(r.selector, Selector::Name("v1".into()));
        // The reference may itself hold colons.
        let r = ImageRef::parse("oci-archive:a.tar:localhost/x:1").unwrap();
        assert_eq!(r.path, PathBuf::from("a.tar"));
        assert_eq!(r.selector, Selector::Name("localhost/x:1".into()));
        let r = ImageRef::parse("docker-archive:a.tar:three:1").unwrap();
        assert_eq!(
            r.selector,
            Selector::Name("docker.io/library/three:1".into())
        );
        let r = ImageRef::parse("docker-archive:a.tar:@2").unwrap();
        assert_eq!(r.selector, Selector::Index(2));
        assert_eq!(ImageRef::parse("oci:d").unwrap().selector, Selector::Only);
        assert_eq!(ImageRef::parse("oci:d:v1").unwrap().to_string(), "oci:d:v1");
        for bad in ["nothing", "docker://x", "oci:", "oci::x", "oci:d:@x"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}

//! Choosing an image from an index or manifest list for a platform, as containers/image does.

use std::fmt;

use crate::types::{Error, ErrorKind, Result, go_quote};

use crate::oci::manifest::{Desc, ZSTD_INSTANCE};

/// A platform: OS, architecture and (optional) variant, in Go's names (`linux`, `amd64`,
/// `arm64`, `v8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `GOOS`.
    pub os: String,
    /// `GOARCH`.
    pub architecture: String,
    /// CPU variant; empty for none.
    pub variant: String,
}

impl Platform {
    /// This host's platform (OS, architecture and, on arm, the CPU variant).
    pub fn host() -> Platform {
        let architecture = go_arch(std::env::consts::ARCH).to_string();
        let variant = host_variant(&architecture);
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture,
            variant,
        }
    }

    /// Parses `OS/ARCH[/VARIANT]`.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(Error::msg(
                ErrorKind::InvalidInput,
                format!(
                    "invalid platform {}: expected OS/ARCH[/VARIANT]",
                    go_quote(s)
                ),
            ));
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()).unwrap_or_default(),
        })
    }

    /// The platforms accepted for this one, best first (containers/image's
    /// `WantedPlatforms`): with a variant, it and the lower compatible ones, then none;
    /// without, none first, then the architecture's variants.
    fn wanted(&self) -> Vec<(String, String, String)> {
        let compatible: &[&str] = match self.architecture.as_str() {
            "arm" => &["v8", "v7", "v6", "v5"],
            "arm64" => &["v8"],
            _ => &[],
        };
        let mut variants: Vec<String> = Vec::new();
        if self.variant.is_empty() {
            variants.push(String::new());
            variants.extend(compatible.iter().map(|v| v.to_string()));
        } else {
            match compatible.iter().position(|v| *v == self.variant) {
                Some(i) => variants.extend(compatible[i..].iter().map(|v| v.to_string())),
                None => variants.push(self.variant.clone()),
            }
            variants.push(String::new());
        }
        variants
            .into_iter()
            .map(|v| (self.os.clone(), self.architecture.clone(), v))
            .collect()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// Rust's architecture name → Go's `GOARCH`.
fn go_arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        "mips" if cfg!(target_endian = "little") => "mipsle",
        other => other,
    }
}

/// The CPU variant of an arm host from `/proc/cpuinfo` (`CPU architecture: 7` → `v7`);
/// arm64 hosts are `v8`; other architectures have none.
fn host_variant(arch: &str) -> String {
    match arch {
        "arm64" => "v8".into(),
        "arm" => {
            let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            let n = info
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == "CPU architecture").then(|| v.trim().to_string())
                })
                .unwrap_or_default();
            match n.as_str() {
                "5" | "6" | "7" | "8" => format!("v{n}"),
                "AArch64" => "v8".into(),
                _ => "v7".into(),
            }
        }
        _ => String::new(),
    }
}

/// Picks the instance of an index (`oci`: true) or Docker manifest list for `want`.
pub fn choose(entries: &[Desc], want: &Platform, oci: bool) -> Result<usize> {
    let wanted = want.wanted();
    let rank = |d: &Desc| -> Option<usize> {
        match &d.platform {
            // Entries without a platform rank after every match (OCI indexes only).
            None => oci.then_some(wanted.len()),
            Some((os, arch, variant)) => wanted
                .iter()
                .position(|(o, a, v)| o == os && a == arch && v == variant),
        }
    };
    let mut best: Option<(usize, bool, usize)> = None; // (rank, not zstd, position)
    for (i, d) in entries.iter().enumerate() {
        let Some(r) = rank(d) else { continue };
        let not_zstd = d.annotations.get(ZSTD_INSTANCE).map(String::as_str) != Some("true");
        let key = (r, oci && not_zstd, i);
        if best.is_none_or(|b| key < b) {
            best = Some(key);
        }
    }
    match best {
        Some((_, _, i)) => Ok(i),
        None => Err(Error::msg(
            ErrorKind::InvalidInput,
            format!(
                "no image found in {} for architecture {}, variant {}, OS {}",
                if oci { "image index" } else { "manifest list" },
                go_quote(&want.architecture),
                go_quote(&want.variant),
                go_quote(&want.os)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn desc(n: u8, plat: Option<(&str, &str, &str)>, zstd: bool) -> Desc {
        let mut annotations = BTreeMap::new();
        if zstd {
            annotations.insert(ZSTD_INSTANCE.to_string(), "true".to_string());
        }
        Desc {
            media_type: crate::oci::manifest::OCI_MANIFEST.into(),
            digest: format!("sha256:{}", hex::encode([n; 32])).parse().unwrap(),
            size: 1,
            annotations,
            urls: vec![],
            platform: plat.map(|(o, a, v)| (o.into(), a.into(), v.into())),
        }
    }

    #[test]
    fn picks_like_containers_image() {
        let linux = |arch: &str, variant: &str| Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.into(),
        };
        let entries = vec![
            desc(1, Some(("linux", "arm64", "v8")), false),
            desc(2, Some(("linux", "amd64", "")), false),
            desc(3, Some(("linux", "amd64", "")), true),
            desc(4, Some(("linux", "arm", "v6")), false),
            desc(5, None, false),
        ];
        // Ties go to the zstd instance in an OCI index, to list order in a Docker list.
        assert_eq!(choose(&entries, &linux("amd64", ""), true).unwrap(), 2);
        assert_eq!(choose(&entries, &linux("amd64", ""), false).unwrap(), 1);
        assert_eq!(choose(&entries, &linux("arm64", ""), true).unwrap(), 0);
        // arm v7 accepts v6 (a lower compatible variant).
        assert_eq!(choose(&entries, &linux("arm", "v7"), true).unwrap(), 3);
        // No platform match: the entry without platform (OCI only).
        assert_eq!(choose(&entries, &linux("s390x", ""), true).unwrap(), 4);
        let err = choose(&entries, &linux("s390x", ""), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no image found in manifest list for architecture \"s390x\", variant \"\", OS \"linux\""
        );
        assert_eq!(Platform::parse("linux/arm/v7").unwrap(), linux("arm", "v7"));
        assert!(Platform::parse("linux").is_err());
        assert_eq!(Platform::host().os, "linux");
    }
}

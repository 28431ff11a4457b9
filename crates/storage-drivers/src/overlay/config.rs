//! The overlay driver's options (`overlay.*`, `overlay2.*` or `.*` keys of
//! `storage.conf`'s `mountopt`-style list), parsed like Go's `parseOptions`.

use std::path::PathBuf;

use storage_types::{Error, ErrorKind, Result};

use crate::common::{invalid, parse_bool, parse_key_value, ram_in_bytes};

/// Parsed `overlay.*` options.
#[derive(Debug, Default, Clone)]
pub(super) struct Config {
    pub(super) mount_options: Vec<String>,
    pub(super) quota_size: Option<u64>,
    pub(super) quota_inodes: Option<u64>,
    pub(super) image_stores: Vec<PathBuf>,
    pub(super) mount_program: Option<PathBuf>,
    pub(super) skip_mount_home: bool,
    pub(super) ignore_chown_errors: bool,
    pub(super) force_mask: Option<u32>,
}

pub(super) fn parse_config(options: &[String]) -> Result<Config> {
    let mut c = Config::default();
    for option in options {
        let (key, val) = parse_key_value(option)?;
        let lower = key.to_lowercase();
        let trimmed = lower
            .strip_prefix("overlay2.")
            .or_else(|| lower.strip_prefix("overlay."))
            .or_else(|| lower.strip_prefix('.'))
            .unwrap_or(&lower);
        match trimmed {
            "override_kernel_check" => {}
            "mountopt" => {
                c.mount_options = val
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "size" => c.quota_size = Some(ram_in_bytes(&val)?),
            "inodes" => {
                c.quota_inodes = Some(val.parse().map_err(|_| {
                    invalid(format!(
                        "strconv.ParseUint: parsing {val:?}: invalid syntax"
                    ))
                })?)
            }
            "imagestore" | "additionalimagestore" => {
                for store in val.split(',').filter(|s| !s.is_empty()) {
                    let p = PathBuf::from(store);
                    if !p.is_absolute() {
                        return Err(invalid(format!(
                            "overlay: image path {store:?} is not absolute.  Can not be relative"
                        )));
                    }
                    let md = std::fs::metadata(&p).map_err(|e| {
                        invalid(format!(
                            "overlay: can't stat imageStore dir {store}: {}",
                            Error::io("stat", &p, e).message()
                        ))
                    })?;
                    if !md.is_dir() {
                        return Err(invalid(format!(
                            "overlay: image path {store:?} must be a directory"
                        )));
                    }
                    c.image_stores.push(p);
                }
            }
            "additionallayerstore" => {
                return Err(Error::msg(
                    ErrorKind::NotSupported,
                    "overlay: additionallayerstore is not supported by this implementation",
                ));
            }
            "use_composefs" => {
                if parse_bool(&val)? {
                    return Err(Error::msg(
                        ErrorKind::NotSupported,
                        "overlay: use_composefs is not supported by this implementation",
                    ));
                }
            }
            "mount_program" => {
                if !val.is_empty() {
                    let p = PathBuf::from(&val);
                    std::fs::metadata(&p).map_err(|e| {
                        invalid(format!(
                            "overlay: can't stat program {val:?}: {}",
                            Error::io("stat", &p, e).message()
                        ))
                    })?;
                    c.mount_program = Some(p);
                }
            }
            "skip_mount_home" => c.skip_mount_home = parse_bool(&val)?,
            "ignore_chown_errors" => c.ignore_chown_errors = parse_bool(&val)?,
            "force_mask" => {
                c.force_mask = Some(match val.as_str() {
                    "shared" => 0o755,
                    "private" => 0o700,
                    v => u32::from_str_radix(v, 8).map_err(|_| {
                        invalid(format!("strconv.ParseUint: parsing {v:?}: invalid syntax"))
                    })?,
                });
            }
            _ => return Err(invalid(format!("overlay: unknown option {key}"))),
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_case_insensitive_with_prefixes() {
        let c = parse_config(&[
            "overlay.MountOpt=nodev,metacopy=on".into(),
            "overlay2.skip_mount_home=true".into(),
            ".ignore_chown_errors=1".into(),
            "overlay.force_mask=shared".into(),
            "overlay.override_kernel_check=whatever".into(),
        ])
        .unwrap();
        assert_eq!(c.mount_options, vec!["nodev", "metacopy=on"]);
        assert!(c.skip_mount_home && c.ignore_chown_errors);
        assert_eq!(c.force_mask, Some(0o755));
        assert_eq!(
            parse_config(&["overlay.force_mask=750".into()])
                .unwrap()
                .force_mask,
            Some(0o750)
        );
        let e = parse_config(&["overlay.bogus=1".into()]).unwrap_err();
        assert_eq!(e.message(), "overlay: unknown option overlay.bogus");
        let e = parse_config(&["overlay.imagestore=relative/x".into()]).unwrap_err();
        assert!(e.message().contains("is not absolute"), "{e}");
        let e = parse_config(&["overlay.mount_program=/nonexistent/prog".into()]).unwrap_err();
        assert!(
            e.message().starts_with("overlay: can't stat program"),
            "{e}"
        );
        assert!(parse_config(&["overlay.size=12x".into()]).is_err());
    }
}

//! Big-data key → file name.

use base64::Engine as _;

use crate::error::{Error, ErrorKind, Result};

/// The file name Go uses for a big-data item: the key itself when every byte is
/// in `[.0-9a-z]`, else `=` + standard base64 (with padding) of the key.
///
/// Like Go's path joining, a trailing `/` of the encoding is dropped (key `???`
/// → `=Pz8`). Keys whose encoding has an interior `/` cannot be stored by Go
/// either; they are rejected with [`ErrorKind::InvalidBigDataName`], as is the
/// empty key. So are `.` and `..`: as file names they would name the record's own
/// directory or its parent (Go joins them and then fails to write over a directory).
pub fn big_data_file_name(key: &str) -> Result<String> {
    if key.is_empty() {
        return Err(Error::new(ErrorKind::InvalidBigDataName));
    }
    if key == "." || key == ".." {
        return Err(Error::msg(
            ErrorKind::InvalidBigDataName,
            format!(
                "{}: big data key {} names a directory",
                ErrorKind::InvalidBigDataName.go_text(),
                crate::go_quote(key)
            ),
        ));
    }
    if key
        .bytes()
        .all(|b| b == b'.' || b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        return Ok(key.to_owned());
    }
    let enc = format!(
        "={}",
        base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
    );
    let trimmed = enc.trim_end_matches('/');
    if trimmed.contains('/') {
        return Err(Error::msg(
            ErrorKind::InvalidBigDataName,
            format!(
                "{}: big data key {} encodes to {enc:?}, which contains \"/\"",
                ErrorKind::InvalidBigDataName.go_text(),
                crate::go_quote(key)
            ),
        ));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_table() {
        let nines = format!("sha256:{}", "9".repeat(64));
        let table: &[(&str, &str)] = &[
            ("manifest", "manifest"),
            ("config.json", "config.json"),
            ("manifest-sha256:abcd", "=bWFuaWZlc3Qtc2hhMjU2OmFiY2Q="),
            ("lower.case-key.1", "=bG93ZXIuY2FzZS1rZXkuMQ=="),
            ("Manifest", "=TWFuaWZlc3Q="),
            ("ConfigX", "=Q29uZmlnWA=="),
            ("zstd-chunked-manifest", "=enN0ZC1jaHVua2VkLW1hbmlmZXN0"),
            ("???", "=Pz8"),
            ("é", "=w6k="),
        ];
        for (key, want) in table {
            assert_eq!(big_data_file_name(key).expect(key), *want, "{key}");
        }
        let n = big_data_file_name(&nines).expect("sha key");
        assert!(n.starts_with("=c2hhMjU2Ojk5") && n.ends_with("OTk="), "{n}");
        assert_eq!(
            big_data_file_name("").expect_err("empty").kind(),
            ErrorKind::InvalidBigDataName
        );
        assert_eq!(
            big_data_file_name("").expect_err("empty").to_string(),
            "not a valid name for a big data item"
        );
        for dots in [".", ".."] {
            let e = big_data_file_name(dots).expect_err(dots);
            assert_eq!(e.kind(), ErrorKind::InvalidBigDataName);
            assert!(e.to_string().ends_with("names a directory"), "{e}");
        }
        assert_eq!(big_data_file_name("...").expect("three dots"), "...");
        let e = big_data_file_name("???a").expect_err("interior slash");
        assert_eq!(e.kind(), ErrorKind::InvalidBigDataName);
        assert!(e.to_string().contains("=Pz8/YQ=="), "{e}");
    }
}

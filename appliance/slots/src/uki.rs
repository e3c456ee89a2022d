//! What systemd-boot reads out of a UKI to list it: the `.osrel` section.
//!
//! systemd-boot 252 skips a file in `/EFI/Linux/` that has no `.osrel` section or whose os-release
//! names nothing (no `PRETTY_NAME`, `IMAGE_ID`, `NAME` or `ID`), and it sorts by the sort key and
//! version taken from it *before* the file name. So the slot code must read the same fields the
//! same way to predict the boot order.

use std::fs::File;
use std::path::Path;

use object::read::ReadCache;
use object::read::pe::PeFile64;
use object::{Object, ObjectSection, ReadRef};

use crate::limits::OSREL_SIZE_BYTES_MAX;

/// The os-release fields systemd-boot 252 uses (`config_entry_add_unified`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub pretty_name: Option<String>,
    pub image_id: Option<String>,
    pub name: Option<String>,
    pub id: Option<String>,
    pub image_version: Option<String>,
    pub version: Option<String>,
    pub version_id: Option<String>,
    pub build_id: Option<String>,
}

impl OsRelease {
    /// Parses like `line_get_key_value(content, "=", …)`: the text ends at the first NUL, lines
    /// split on CR or LF, blanks and `#` lines skipped, space/tab trimmed around the line, the
    /// key is everything before the first `=`, further `=` after it are skipped, and a value is
    /// unquoted only for double quotes. A later key overrides an earlier one.
    pub fn parse(bytes: &[u8]) -> Self {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let text = String::from_utf8_lossy(bytes.get(..end).unwrap_or_default());
        let mut out = Self::default();
        for raw in text.split(['\n', '\r']) {
            let line = raw.trim_matches([' ', '\t']);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim_start_matches('=');
            let value = match value.strip_prefix('"') {
                // The C checks the first char of the value and the last char of the line.
                Some(rest) if line.ends_with('"') => rest.strip_suffix('"').unwrap_or(rest),
                _ => value,
            };
            let slot = match key {
                "PRETTY_NAME" => &mut out.pretty_name,
                "IMAGE_ID" => &mut out.image_id,
                "NAME" => &mut out.name,
                "ID" => &mut out.id,
                "IMAGE_VERSION" => &mut out.image_version,
                "VERSION" => &mut out.version,
                "VERSION_ID" => &mut out.version_id,
                "BUILD_ID" => &mut out.build_id,
                _ => continue,
            };
            *slot = Some(value.to_owned());
        }
        out
    }

    /// The menu title (`good_name`); None means systemd-boot does not list the UKI at all.
    pub fn title(&self) -> Option<&str> {
        self.pretty_name
            .as_deref()
            .or(self.image_id.as_deref())
            .or(self.name.as_deref())
            .or(self.id.as_deref())
    }

    /// `good_version`: compared (newest first) before the file name when both entries have a sort key.
    pub fn version(&self) -> Option<&str> {
        self.image_version
            .as_deref()
            .or(self.version.as_deref())
            .or(self.version_id.as_deref())
            .or(self.build_id.as_deref())
    }

    /// `good_sort_key`: `IMAGE_ID`, else `ID`.
    pub fn sort_key(&self) -> Option<&str> {
        self.image_id.as_deref().or(self.id.as_deref())
    }
}

/// Why a UKI's `.osrel` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OsrelError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{what} is not a PE32+ image: {reason}")]
    NotPe { what: String, reason: String },
    #[error("{what}: .osrel section is {size_bytes} bytes, more than {OSREL_SIZE_BYTES_MAX}")]
    TooLarge { what: String, size_bytes: u64 },
    #[error("{what}: cannot read the .osrel section: {reason}")]
    Read { what: String, reason: String },
}

fn osrel_from_pe<'data, R: ReadRef<'data>>(
    data: R,
    what: &str,
) -> Result<Option<OsRelease>, OsrelError> {
    let pe = PeFile64::parse(data).map_err(|e| OsrelError::NotPe {
        what: what.to_owned(),
        reason: e.to_string(),
    })?;
    let Some(section) = pe.section_by_name(".osrel") else {
        return Ok(None);
    };
    if section.size() > OSREL_SIZE_BYTES_MAX {
        return Err(OsrelError::TooLarge {
            what: what.to_owned(),
            size_bytes: section.size(),
        });
    }
    let bytes = section.data().map_err(|e| OsrelError::Read {
        what: what.to_owned(),
        reason: e.to_string(),
    })?;
    if bytes.len() as u64 > OSREL_SIZE_BYTES_MAX {
        return Err(OsrelError::TooLarge {
            what: what.to_owned(),
            size_bytes: bytes.len() as u64,
        });
    }
    Ok(Some(OsRelease::parse(bytes)))
}

/// Reads the `.osrel` of a UKI held in memory. `Ok(None)`: a PE without `.osrel`.
pub fn osrel_from_bytes(image: &[u8], what: &str) -> Result<Option<OsRelease>, OsrelError> {
    osrel_from_pe(image, what)
}

/// Reads the `.osrel` of a UKI on disk, touching only the headers and that section (status runs
/// on every CLI call; a UKI is tens of MiB).
pub fn osrel_from_file(path: &Path) -> Result<Option<OsRelease>, OsrelError> {
    let what = path.display().to_string();
    let file = File::open(path).map_err(|source| OsrelError::Open {
        path: what.clone(),
        source,
    })?;
    let cache = ReadCache::new(file);
    osrel_from_pe(&cache, &what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_mirrors_line_get_key_value() {
        let text = b"# comment\n  NAME=\"Metanode\"  \r\nID=metanode\nVERSION_ID==7\nIMAGE_VERSION='x'\nNOEQ\n\
                     PRETTY_NAME=\"unterminated\nBUILD_ID=\"\"\nID=second\0ID=after-nul\n";
        let o = OsRelease::parse(text);
        assert_eq!(o.name.as_deref(), Some("Metanode"));
        assert_eq!(o.id.as_deref(), Some("second"));
        assert_eq!(o.version_id.as_deref(), Some("7"));
        assert_eq!(o.image_version.as_deref(), Some("'x'"));
        assert_eq!(o.pretty_name.as_deref(), Some("\"unterminated"));
        assert_eq!(o.build_id.as_deref(), Some(""));
        assert_eq!(o.title(), Some("\"unterminated"));
        assert_eq!(o.version(), Some("'x'"));
        assert_eq!(o.sort_key(), Some("second"));
    }

    #[test]
    fn no_name_means_not_listed() {
        let o = OsRelease::parse(b"VERSION=1\n");
        assert_eq!(o.title(), None);
        assert_eq!(o.sort_key(), None);
    }

    #[test]
    fn a_single_quote_char_value_becomes_empty() {
        // `KEY="` : value[0] is '"' and so is the last char of the line.
        assert_eq!(OsRelease::parse(b"NAME=\"\n").name.as_deref(), Some(""));
    }

    #[test]
    fn not_a_pe_is_an_error() {
        let err = osrel_from_bytes(b"MZ but not really", "blob").unwrap_err();
        assert!(matches!(err, OsrelError::NotPe { .. }), "{err}");
    }
}

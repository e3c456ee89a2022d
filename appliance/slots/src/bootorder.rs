//! A mirror of how systemd-boot 252 orders Type #2 entries and picks the default one.
//!
//! The slot logic is only correct if our idea of "which UKI boots next" equals systemd-boot's, so
//! this module ports the three pieces of `src/boot/efi/boot.c` (tag v252) that decide it, as
//! literally as Rust allows: `strverscmp_improved` (src/fundamental/string-util-fundamental.c),
//! `config_entry_compare`, and the `default` pattern match (`efi_fnmatch`, reduced to `*` and `?`).
//! The research notes with line references are at the top of `esp.rs`.
//!
//! Strings are compared as UTF-16 code units because systemd-boot holds them as `char16_t`.

use std::cmp::Ordering;

/// One boot menu entry as `config_entry_compare` sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryKey {
    /// The entry id: for a Type #2 entry, the file name in `/EFI/Linux/` lower-cased, including
    /// any `+LEFT-DONE` counter as it was when the loader read the directory.
    pub id: String,
    /// `IMAGE_ID=` or else `ID=` from the UKI's `.osrel` (None when neither is present).
    pub sort_key: Option<String>,
    /// Never set for Type #2 entries in 252; kept so the comparison reads like the C.
    pub machine_id: Option<String>,
    /// `IMAGE_VERSION=`, else `VERSION=`, else `VERSION_ID=`, else `BUILD_ID=`.
    pub version: Option<String>,
    /// `(tries_left, tries_done)` parsed from the file name, None without a counter.
    pub tries: Option<(u32, u32)>,
}

impl EntryKey {
    fn tries_left_is_zero(&self) -> bool {
        matches!(self.tries, Some((0, _)))
    }
}

fn units(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

fn is_digit(c: u16) -> bool {
    (u16::from(b'0')..=u16::from(b'9')).contains(&c)
}

fn is_alpha(c: u16) -> bool {
    (u16::from(b'a')..=u16::from(b'z')).contains(&c)
        || (u16::from(b'A')..=u16::from(b'Z')).contains(&c)
}

const TILDE: u16 = b'~' as u16;
const DASH: u16 = b'-' as u16;
const CARET: u16 = b'^' as u16;
const DOT: u16 = b'.' as u16;
const ZERO: u16 = b'0' as u16;

fn is_valid_version_char(c: u16) -> bool {
    is_digit(c) || is_alpha(c) || matches!(c, TILDE | DASH | CARET | DOT)
}

/// Unit at `i`, or NUL past the end (the C walks NUL-terminated strings).
fn at(s: &[u16], i: usize) -> u16 {
    s.get(i).copied().unwrap_or(0)
}

fn run_len(s: &[u16], start: usize, pred: fn(u16) -> bool) -> usize {
    s.get(start..)
        .map_or(0, |tail| tail.iter().take_while(|&&c| pred(c)).count())
}

/// `strncmp` over the `n` units starting at `i` and `j`, stopping at NUL.
fn strncmp(a: &[u16], i: usize, b: &[u16], j: usize, n: usize) -> Ordering {
    for k in 0..n {
        let (ca, cb) = (at(a, i + k), at(b, j + k));
        if ca == 0 || ca != cb {
            return ca.cmp(&cb);
        }
    }
    Ordering::Equal
}

/// Port of `strverscmp_improved` (`Less` means `a` is older). `None` is the empty string, as
/// `strempty()` makes it.
pub fn strverscmp_improved(a: Option<&str>, b: Option<&str>) -> Ordering {
    let a = units(a.unwrap_or(""));
    let b = units(b.unwrap_or(""));
    let (mut i, mut j) = (0usize, 0usize);
    loop {
        while at(&a, i) != 0 && !is_valid_version_char(at(&a, i)) {
            i += 1;
        }
        while at(&b, j) != 0 && !is_valid_version_char(at(&b, j)) {
            j += 1;
        }

        // '~' marks a pre-release: the side that has it is older.
        if at(&a, i) == TILDE || at(&b, j) == TILDE {
            let r = (at(&a, i) != TILDE).cmp(&(at(&b, j) != TILDE));
            if r != Ordering::Equal {
                return r;
            }
            i += 1;
            j += 1;
        }

        // One side ended: the longer one is newer.
        if at(&a, i) == 0 || at(&b, j) == 0 {
            return at(&a, i).cmp(&at(&b, j));
        }

        // '-', '^' and '.' prefixes, in this order; the side with the prefix is older.
        for sep in [DASH, CARET, DOT] {
            if at(&a, i) == sep || at(&b, j) == sep {
                let r = (at(&a, i) != sep).cmp(&(at(&b, j) != sep));
                if r != Ordering::Equal {
                    return r;
                }
                i += 1;
                j += 1;
            }
        }

        let (aa, bb);
        if is_digit(at(&a, i)) || is_digit(at(&b, j)) {
            aa = i + run_len(&a, i, is_digit);
            bb = j + run_len(&b, j, is_digit);
            // A numeric segment is newer than an alphabetic (or empty) one.
            let r = (aa != i).cmp(&(bb != j));
            if r != Ordering::Equal {
                return r;
            }
            while at(&a, i) == ZERO {
                i += 1;
            }
            while at(&b, j) == ZERO {
                j += 1;
            }
            // Longer number (after leading zeros) is newer, then digit by digit.
            let r = (aa - i).cmp(&(bb - j));
            if r != Ordering::Equal {
                return r;
            }
            let r = strncmp(&a, i, &b, j, aa - i);
            if r != Ordering::Equal {
                return r;
            }
        } else {
            aa = i + run_len(&a, i, is_alpha);
            bb = j + run_len(&b, j, is_alpha);
            let r = strncmp(&a, i, &b, j, (aa - i).min(bb - j));
            if r != Ordering::Equal {
                return r;
            }
            let r = (aa - i).cmp(&(bb - j));
            if r != Ordering::Equal {
                return r;
            }
        }
        i = aa;
        j = bb;
    }
}

/// `strcmp16` as 252 defines it: a NULL pointer sorts before any string.
fn strcmp16(a: Option<&str>, b: Option<&str>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => units(a).cmp(&units(b)),
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}

/// Port of `config_entry_compare`: `Less` means `a` is listed before `b` in the menu.
pub fn config_entry_compare(a: &EntryKey, b: &EntryKey) -> Ordering {
    // Entries with no tries left go to the end of the list.
    let r = a.tries_left_is_zero().cmp(&b.tries_left_is_zero());
    if r != Ordering::Equal {
        return r;
    }
    // New-style (sort key) entries before old-style ones.
    let r = a.sort_key.is_none().cmp(&b.sort_key.is_none());
    if r != Ordering::Equal {
        return r;
    }
    if a.sort_key.is_some() && b.sort_key.is_some() {
        let r = strcmp16(a.sort_key.as_deref(), b.sort_key.as_deref());
        if r != Ordering::Equal {
            return r;
        }
        let r = strcmp16(a.machine_id.as_deref(), b.machine_id.as_deref());
        if r != Ordering::Equal {
            return r;
        }
        let r = strverscmp_improved(a.version.as_deref(), b.version.as_deref()).reverse();
        if r != Ordering::Equal {
            return r;
        }
    }
    let r = strverscmp_improved(Some(&a.id), Some(&b.id)).reverse();
    if r != Ordering::Equal {
        return r;
    }
    let (Some((a_left, a_done)), Some((b_left, b_done))) = (a.tries, b.tries) else {
        return Ordering::Equal;
    };
    let r = a_left.cmp(&b_left).reverse();
    if r != Ordering::Equal {
        return r;
    }
    a_done.cmp(&b_done)
}

/// Sorts entries into menu order.
pub fn sort_entries(entries: &mut [EntryKey]) {
    entries.sort_by(config_entry_compare);
}

/// `efi_fnmatch` for the subset our patterns use: `*` (any run) and `?` (one unit). Patterns and
/// ids are compared case-folded, as systemd-boot lower-cases both before matching.
pub fn pattern_matches(pattern: &str, id: &str) -> bool {
    let p = units(&pattern.to_lowercase());
    let h = units(&id.to_lowercase());
    // Classic two-pointer glob with backtracking to the last '*' (linear for one '*').
    let (mut pi, mut hi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    let star_unit = u16::from(b'*');
    let any_unit = u16::from(b'?');
    while hi < h.len() {
        match p.get(pi) {
            Some(&c) if c == star_unit => {
                star = Some((pi, hi));
                pi += 1;
            }
            Some(&c) if c == any_unit || h.get(hi) == Some(&c) => {
                pi += 1;
                hi += 1;
            }
            _ => match star {
                Some((sp, sh)) => {
                    pi = sp + 1;
                    hi = sh + 1;
                    star = Some((sp, sh + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == star_unit))
}

/// The entry systemd-boot boots without a key press, given entry ids already in menu order:
/// the first one matching `LoaderEntryOneShot`, else `LoaderEntryDefault`, else the loader.conf
/// `default` pattern, else the first entry (`config_default_entry_select`).
pub fn select_default<'a>(
    sorted_ids: &'a [String],
    oneshot: Option<&str>,
    default_efivar: Option<&str>,
    default_config: Option<&str>,
) -> Option<&'a str> {
    for pattern in [oneshot, default_efivar, default_config]
        .into_iter()
        .flatten()
    {
        if let Some(id) = sorted_ids.iter().find(|id| pattern_matches(pattern, id)) {
            return Some(id);
        }
    }
    sorted_ids.first().map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(a: &str, b: &str) -> Ordering {
        strverscmp_improved(Some(a), Some(b))
    }

    #[test]
    fn verscmp_orders_the_documented_sequence() {
        // The ordering listed in the comment of strverscmp_improved, oldest first.
        let seq = [
            "122.1",
            "123~rc1-1",
            "123",
            "123-a",
            "123-a.1",
            "123-1",
            "123-1.1",
            "123^post1",
            "123.a-1",
            "123.1-1",
            "123a-1",
            "124-1",
        ];
        for w in seq.windows(2) {
            assert_eq!(cmp(w[0], w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
            assert_eq!(cmp(w[1], w[0]), Ordering::Greater, "{} > {}", w[1], w[0]);
        }
        assert_eq!(cmp("00123", "123"), Ordering::Equal);
        assert_eq!(cmp("123_a", "123a"), Ordering::Equal);
        assert_eq!(strverscmp_improved(None, Some("1")), Ordering::Less);
    }

    #[test]
    fn verscmp_on_slot_file_names() {
        assert_eq!(
            cmp("metanode-10-a.efi", "metanode-9-b.efi"),
            Ordering::Greater
        );
        assert_eq!(
            cmp("metanode-5-a+3.efi", "metanode-4-b.efi"),
            Ordering::Greater
        );
        assert_eq!(
            cmp("metanode-5-a+0-3.efi", "metanode-4-b.efi"),
            Ordering::Greater
        );
    }

    fn key(id: &str, tries: Option<(u32, u32)>) -> EntryKey {
        EntryKey {
            id: id.to_owned(),
            sort_key: None,
            machine_id: None,
            version: None,
            tries,
        }
    }

    #[test]
    fn zero_tries_left_sorts_last_even_when_newest() {
        let mut v = vec![
            key("metanode-5-a+0-3.efi", Some((0, 3))),
            key("metanode-4-b.efi", None),
        ];
        sort_entries(&mut v);
        assert_eq!(v[0].id, "metanode-4-b.efi");
    }

    #[test]
    fn sort_key_and_version_outrank_the_id() {
        let mut older_id_newer_version = key("metanode-4-b.efi", None);
        older_id_newer_version.sort_key = Some("metanode".into());
        older_id_newer_version.version = Some("2.0".into());
        let mut newer_id_older_version = key("metanode-5-a+3.efi", Some((3, 0)));
        newer_id_older_version.sort_key = Some("metanode".into());
        newer_id_older_version.version = Some("1.0".into());
        let mut v = vec![newer_id_older_version, older_id_newer_version];
        sort_entries(&mut v);
        assert_eq!(v[0].id, "metanode-4-b.efi");

        // One side with a sort key, the other without: the one with a key goes first.
        let mut with_key = key("a.efi", None);
        with_key.sort_key = Some("x".into());
        assert_eq!(
            config_entry_compare(&with_key, &key("z.efi", None)),
            Ordering::Less
        );
    }

    #[test]
    fn pattern_matching() {
        assert!(pattern_matches("metanode-*", "metanode-5-a+3.efi"));
        assert!(pattern_matches("METANODE-*", "metanode-5-a.efi"));
        assert!(!pattern_matches("metanode-*", "debian.efi"));
        assert!(pattern_matches("*-a*.efi", "metanode-5-a+3.efi"));
        assert!(pattern_matches("metanode-?-a.efi", "metanode-5-a.efi"));
        assert!(!pattern_matches("metanode-?-a.efi", "metanode-15-a.efi"));
        assert!(pattern_matches("metanode-5-a.efi", "metanode-5-a.efi"));
        assert!(!pattern_matches("metanode-5-a.efi", "metanode-5-a.efix"));
    }

    #[test]
    fn default_selection_prefers_oneshot_then_efivar_then_config() {
        let mut v = vec![
            key("zzz.efi", None),
            key("metanode-4-b.efi", None),
            key("metanode-5-a+2-1.efi", Some((2, 1))),
        ];
        sort_entries(&mut v);
        assert_eq!(v[0].id, "zzz.efi");
        let ids: Vec<String> = v.into_iter().map(|k| k.id).collect();
        let pick = |o, d, c| select_default(&ids, o, d, c).map(str::to_owned);
        assert_eq!(
            pick(None, None, Some("metanode-*")),
            Some("metanode-5-a+2-1.efi".into())
        );
        assert_eq!(
            pick(None, Some("metanode-4-b.efi"), Some("metanode-*")),
            Some("metanode-4-b.efi".into())
        );
        assert_eq!(
            pick(Some("zzz.efi"), Some("metanode-4-b.efi"), None),
            Some("zzz.efi".into())
        );
        // A default naming a file that no longer exists falls through to the next source.
        assert_eq!(
            pick(None, Some("metanode-3-b.efi"), Some("metanode-*")),
            Some("metanode-5-a+2-1.efi".into())
        );
        assert_eq!(pick(None, None, None), Some("zzz.efi".into()));
    }
}

//! A/B slots as Unified Kernel Images on the EFI system partition, ordered by systemd-boot 252.
//!
//! # Research: how systemd-boot 252 picks the UKI it boots
//!
//! Read from the systemd v252 tag (Debian bookworm ships 252.39, whose binary in
//! `systemd-boot-efi` carries `#### LoaderInfo: systemd-boot 252.39-1~deb12u2 ####`; the
//! functions below are unchanged between v252 and the v252.x stable tags we could diff).
//! Line numbers are `src/boot/efi/boot.c` at v252 unless named otherwise.
//!
//! 1. Discovery, `config_entry_add_unified` (l. 2094–2260). Every file in `\EFI\Linux` is
//!    considered unless its name starts with `.` (l. 2141), it is a directory, it does not end in
//!    `.efi` (case-insensitive, l. 2145) or it starts with `auto-`. The PE must have a non-empty
//!    `.osrel` section (l. 2152; section size = `VirtualSize`, `pe.c` `locate_sections`), parsed
//!    with `line_get_key_value(content, "=")`. `bootspec_pick_name_version_sort_key`
//!    (`src/fundamental/bootspec-fundamental.c` l. 45–50) derives
//!    `name = PRETTY_NAME ?: IMAGE_ID ?: NAME ?: ID` (the entry is *skipped* if none),
//!    `version = IMAGE_VERSION ?: VERSION ?: VERSION_ID ?: BUILD_ID`, `sort_key = IMAGE_ID ?: ID`.
//!    The entry **id is the file name, lower-cased** (`.id = xstrdup16(f->FileName)` l. 2226,
//!    `strtolower16(entry->id)` l. 2238) — including any boot counter.
//! 2. Boot counting, `config_entry_parse_tries` (l. 1301–1362): takes the text after the *last*
//!    `+`, parses `LEFT` and an optional `-DONE` (absent = 0), and requires that exactly `.efi`
//!    follows (l. 1349); `LEFT > INT_MAX` means "no counter" (l. 1341). `next_name` is the same
//!    prefix with `LEFT-1` (not below 0) and `DONE+1`. Entries without a counter have
//!    `tries_left = -1`.
//! 3. Order, `config_entry_compare` (l. 1681–1731), used by `sort_pointer_array` (l. 2609):
//!    - (a) `CMP(a->tries_left == 0, b->tries_left == 0)`: entries with no tries left go last;
//!    - (b) entries with a sort key before those without;
//!    - (c) if both have one: `strcmp16(sort_key)`, then `strcmp16(machine_id)` (never set for
//!      Type #2), then `-strverscmp_improved(version)` (newest version first);
//!    - (d) `-strverscmp_improved(id)`: the newest-looking file name first;
//!    - (e) only if both have counters: more `tries_left` first, then fewer `tries_done`.
//!
//!    `strverscmp_improved` (`src/fundamental/string-util-fundamental.c` l. 84) splits into
//!    numeric/alpha segments; characters other than alnum and `~-^.` are dropped (so `+` is a
//!    mere separator) and a longer number is newer (`10` > `9`).
//! 4. Default, `config_default_entry_select` (l. 1750–1789): the first entry *in sorted order*
//!    whose id `efi_fnmatch`es `LoaderEntryOneShot` (cleared when read, l. 1619–1622), else
//!    `LoaderEntryDefault` (l. 1624), else loader.conf `default` (l. 1204; `@saved` is the only
//!    special value), else the first entry (l. 1778). Patterns and ids are compared lower-cased
//!    (l. 1626). With `timeout 0` no menu is shown unless a key is pressed (l. 2699).
//! 5. Selection side effects, `real_main` (l. 2741–2742): `config_entry_bump_counters` renames the
//!    file to `next_name` (l. 1392) and sets `LoaderBootCountPath` to the *new* path (l. 1405),
//!    *then* `save_selected_entry` sets `LoaderEntrySelected` to `entry->id` (l. 2476), which the
//!    bump does not update. So **`LoaderEntrySelected` holds the id with the counter as it was
//!    before this boot's decrement** (e.g. `metanode-5-a+3.efi` while the file is now
//!    `metanode-5-a+2-1.efi`); it is a volatile variable (attributes 0 ⇒ BS|RT as seen by Linux)
//!    holding a NUL-terminated UTF-16LE string after efivarfs' 4-byte attribute header.
//!
//! # Naming that follows from it
//!
//! `metanode-<generation>-<a|b>[+LEFT[-DONE]].efi`, all lower case, generation a decimal without
//! leading zeros, strictly increasing across installs. With no sort key in play (or equal sort
//! keys and versions — [`Esp::install`] checks with the real comparison and refuses otherwise):
//! - a trial with tries left has the highest generation ⇒ rule (d) puts it first;
//! - the known-good slot (no counter) has the next generation ⇒ second;
//! - a trial that ran out (`+0-N`) is pushed last by rule (a), whatever its generation.
//!
//! loader.conf says `default metanode-*`, which picks the first of *our* entries in that order
//! and never a foreign UKI someone dropped into `\EFI\Linux`. A trial given N tries is booted N
//! times; after the N-th failed attempt systemd-boot boots the good slot with no hands on the
//! machine. `LoaderEntryDefault`/`LoaderEntryOneShot` override loader.conf; nothing of ours sets
//! them, and [`loader_overrides_from_efivars`] lets the CLI warn when something did.
//!
//! FAT has no atomic rename-over, so no step ever renames onto an existing name: an install
//! writes a dot-named temp file (ignored by rule 1), fsyncs it, renames it to a fresh generation's
//! name, fsyncs the directory, and only then removes the slot's previous UKI.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::bootorder::{self, EntryKey};
use crate::fsutil::{self, ReadBoundedError};
use crate::limits::{EFIVAR_SIZE_BYTES_MAX, TRIES_COUNT_MAX, UKI_SIZE_BYTES_MAX};
use crate::uki::{self, OsRelease};

/// Where Type #2 entries live, relative to the ESP root.
pub const LINUX_DIR: &str = "EFI/Linux";
/// Every slot UKI's file name starts with this.
pub const ENTRY_PREFIX: &str = "metanode-";
/// loader.conf `default`: the first of our entries in systemd-boot's order.
pub const DEFAULT_PATTERN: &str = "metanode-*";
/// Vendor GUID of the Boot Loader Interface variables.
pub const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

const TEMP_PREFIX: &str = ".metanode-";
const TEMP_SUFFIX: &str = ".tmp";

/// One of the two boot slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// The slot that is not `self`.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The letter used in file names.
    pub fn letter(self) -> char {
        match self {
            Slot::A => 'a',
            Slot::B => 'b',
        }
    }

    fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Slot::A => "A",
            Slot::B => "B",
        })
    }
}

/// systemd-boot's `+LEFT-DONE` file-name counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootCounter {
    pub left: u32,
    pub done: u32,
}

/// What a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// No UKI.
    Empty,
    /// Marked good by userspace (no counter in the name).
    Good,
    /// Being tried: systemd-boot still prefers it for `left` more boots.
    Trial { left: u32, done: u32 },
    /// Ran out of tries without being marked good: sorted last, i.e. rolled back.
    Bad { done: u32 },
}

/// A parsed slot file name: `metanode-<generation>-<a|b>[+LEFT[-DONE]].efi`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryName {
    pub generation: u64,
    pub slot: Slot,
    pub counter: Option<BootCounter>,
}

fn parse_decimal_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl EntryName {
    /// Parses one of our file names, or an entry id (the same, lower-cased by systemd-boot).
    /// Anything else — other case, leading zeros in the generation, extra text — is not ours.
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix(ENTRY_PREFIX)?.strip_suffix(".efi")?;
        let (generation, rest) = rest.split_once('-')?;
        if generation.starts_with('0') {
            return None;
        }
        let generation = parse_decimal_u64(generation)?;
        let mut chars = rest.chars();
        let slot = match chars.next()? {
            'a' => Slot::A,
            'b' => Slot::B,
            _ => return None,
        };
        let tail = chars.as_str();
        let counter = if tail.is_empty() {
            None
        } else {
            let counter = tail.strip_prefix('+')?;
            let (left, done) = match counter.split_once('-') {
                Some((left, done)) => (left, parse_decimal_u64(done)?),
                None => (counter, 0),
            };
            let left = parse_decimal_u64(left)?;
            // Above INT_MAX systemd-boot ignores the counter (l. 1341); such a name is not ours.
            let max = u64::from(i32::MAX.unsigned_abs());
            if left > max || done > max {
                return None;
            }
            Some(BootCounter {
                left: left as u32,
                done: done as u32,
            })
        };
        Some(Self {
            generation,
            slot,
            counter,
        })
    }

    /// The name without counter and extension, e.g. `metanode-5-a`.
    pub fn base(&self) -> String {
        format!("{ENTRY_PREFIX}{}-{}", self.generation, self.slot.letter())
    }

    /// The file name this entry has once marked good.
    pub fn good_file_name(&self) -> String {
        format!("{}.efi", self.base())
    }

    /// The file name, counter included.
    pub fn file_name(&self) -> String {
        match self.counter {
            None => self.good_file_name(),
            Some(BootCounter { left, done: 0 }) => format!("{}+{left}.efi", self.base()),
            Some(BootCounter { left, done }) => format!("{}+{left}-{done}.efi", self.base()),
        }
    }

    /// The state the counter encodes.
    pub fn state(&self) -> SlotState {
        match self.counter {
            None => SlotState::Good,
            Some(BootCounter { left: 0, done }) => SlotState::Bad { done },
            Some(BootCounter { left, done }) => SlotState::Trial { left, done },
        }
    }

    /// True if `other` names the same image (generation and slot), whatever the counters.
    pub fn same_image(&self, other: &EntryName) -> bool {
        self.generation == other.generation && self.slot == other.slot
    }
}

/// The `loader/loader.conf` the image builder writes onto the ESP.
///
/// `timeout 0` boots the default without a menu (a key held at boot still opens it);
/// `default metanode-*` makes the slot order of this module the boot order; `editor no` keeps a
/// console user from editing the kernel command line; `console-mode keep` leaves the firmware's
/// mode alone (changing it breaks some serial consoles).
pub fn loader_conf() -> String {
    format!(
        "# Written by the Metanode image builder; the slot order is explained in appliance/slots/src/esp.rs.\n\
         timeout 0\n\
         default {DEFAULT_PATTERN}\n\
         editor no\n\
         console-mode keep\n"
    )
}

/// Decodes an efivarfs file: a 4-byte little-endian attribute word, then a UTF-16LE string that
/// may be NUL-terminated. None for anything malformed or empty.
pub fn decode_efivar_string(bytes: &[u8]) -> Option<String> {
    let payload = bytes.get(4..)?;
    if payload.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = payload
        .chunks_exact(2)
        // chunks_exact(2) yields exactly two bytes per chunk; the odd tail was refused above.
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    let s = String::from_utf16(&units).ok()?;
    (!s.is_empty()).then_some(s)
}

/// Reads a Boot Loader Interface string variable (`<name>-<LOADER_GUID>`) from an efivarfs
/// mount (normally `/sys/firmware/efi/efivars`).
pub fn read_loader_efivar(efivars_dir: &Path, name: &str) -> Option<String> {
    let path = efivars_dir.join(format!("{name}-{LOADER_GUID}"));
    let bytes = fsutil::read_bounded(&path, EFIVAR_SIZE_BYTES_MAX).ok()?;
    decode_efivar_string(&bytes)
}

/// The id of the entry systemd-boot booted (`LoaderEntrySelected`): the file name lower-cased,
/// with the counter as it was *before* this boot decremented it.
pub fn booted_entry_from_efivars(efivars_dir: &Path) -> Option<String> {
    read_loader_efivar(efivars_dir, "LoaderEntrySelected")
}

/// EFI variables that override loader.conf's `default` when set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoaderOverrides {
    /// `LoaderEntryOneShot`: used once, then cleared by systemd-boot.
    pub entry_oneshot: Option<String>,
    /// `LoaderEntryDefault`: persistent; set by `bootctl set-default` or the menu's `d` key.
    pub entry_default: Option<String>,
}

/// Reads the variables that would override our boot order.
pub fn loader_overrides_from_efivars(efivars_dir: &Path) -> LoaderOverrides {
    LoaderOverrides {
        entry_oneshot: read_loader_efivar(efivars_dir, "LoaderEntryOneShot"),
        entry_default: read_loader_efivar(efivars_dir, "LoaderEntryDefault"),
    }
}

/// Why the ESP could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path} is not a directory (is the ESP mounted?)")]
    NoLinuxDir { path: String },
}

/// Why the ESP's `EFI/Linux` directory could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot list {path}: {source}")]
    ReadDir { path: String, source: io::Error },
}

/// One of our UKIs found on the ESP.
#[derive(Clone, Debug)]
struct Found {
    file_name: String,
    name: EntryName,
    osrel: Option<OsRelease>,
}

impl Found {
    fn listed(&self) -> bool {
        self.osrel.as_ref().and_then(OsRelease::title).is_some()
    }
}

/// A `.efi` in `EFI/Linux` that is not ours but that systemd-boot may list.
#[derive(Clone, Debug)]
struct Foreign {
    file_name: String,
    osrel: Option<OsRelease>,
}

#[derive(Debug, Default)]
struct Scan {
    ours: Vec<Found>,
    foreign: Vec<Foreign>,
    temps: Vec<String>,
}

fn entry_key(file_name: &str, osrel: &OsRelease, tries: Option<BootCounter>) -> EntryKey {
    EntryKey {
        id: file_name.to_lowercase(),
        sort_key: osrel.sort_key().map(str::to_owned),
        machine_id: None,
        version: osrel.version().map(str::to_owned),
        tries: tries.map(|c| (c.left, c.done)),
    }
}

/// systemd-boot's counter parse for a name that is not ours (rule 2 in the notes above).
fn foreign_counter(file_name: &str) -> Option<BootCounter> {
    let (_, counter) = file_name.rsplit_once('+')?;
    let counter = counter.strip_suffix(".efi")?;
    let (left, done) = match counter.split_once('-') {
        Some((left, done)) => (left, parse_decimal_u64(done)?),
        None => (counter, 0),
    };
    let left = parse_decimal_u64(left)?;
    let max = u64::from(i32::MAX.unsigned_abs());
    (left <= max && done <= max).then_some(BootCounter {
        left: left as u32,
        done: done as u32,
    })
}

/// Status of one slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotStatus {
    pub slot: Slot,
    /// The slot's current UKI (highest generation), if any.
    pub file: Option<String>,
    pub generation: Option<u64>,
    pub state: SlotState,
    /// The running system was booted from this slot.
    pub booted: bool,
    /// systemd-boot lists this UKI (it has an `.osrel` naming the OS); an unlisted UKI never boots.
    pub listed: bool,
    /// `.osrel` title and version, for display.
    pub title: Option<String>,
    pub version: Option<String>,
}

/// Both slots, which one booted and which one systemd-boot picks next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub slots: [SlotStatus; 2],
    /// `LoaderEntrySelected` as given to [`Esp::status`].
    pub booted_entry_id: Option<String>,
    /// The slot the id names, if it is one of ours.
    pub booted: Option<Slot>,
    /// Ids of every entry systemd-boot lists from `EFI/Linux`, in its menu order.
    pub boot_order: Vec<String>,
    /// The entry loader.conf's `default` selects next boot (absent overriding EFI variables).
    pub next_entry: Option<String>,
    /// The slot of `next_entry`, if it is ours.
    pub preferred_next: Option<Slot>,
    /// Older UKIs of a slot left by an interrupted install (removed by the next install/tidy).
    pub superseded: Vec<String>,
    /// Temp files of an interrupted install.
    pub temp_files: Vec<String>,
    /// `.efi` files that are not ours.
    pub foreign: Vec<String>,
}

impl Status {
    /// The status of one slot.
    pub fn slot(&self, slot: Slot) -> &SlotStatus {
        &self.slots[slot.index()]
    }

    /// The entry systemd-boot boots next when these EFI variables are taken into account.
    pub fn next_entry_with(&self, overrides: &LoaderOverrides) -> Option<&str> {
        bootorder::select_default(
            &self.boot_order,
            overrides.entry_oneshot.as_deref(),
            overrides.entry_default.as_deref(),
            Some(DEFAULT_PATTERN),
        )
    }
}

/// What [`Esp::mark_booted_good`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MarkGood {
    /// Dropped the counter: `from` was renamed to `to`.
    Renamed { from: String, to: String },
    /// The booted UKI already had no counter.
    AlreadyGood { file: String },
}

/// Why the booted entry could not be marked good.
#[derive(Debug, thiserror::Error)]
pub enum MarkGoodError {
    #[error("booted entry id {id:?} is not a metanode slot entry")]
    NotOurEntry { id: String },
    #[error("no UKI of generation {generation} in slot {slot} on the ESP (booted entry {id:?})")]
    BootedFileMissing {
        id: String,
        generation: u64,
        slot: Slot,
    },
    #[error(
        "both {good} and {counted} exist for the booted image; remove the one that is not intact"
    )]
    Conflict { good: String, counted: String },
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error("cannot rename {from} to {to}: {source}")]
    Rename {
        from: String,
        to: String,
        source: io::Error,
    },
    #[error("cannot fsync {path}: {source}")]
    Sync { path: String, source: io::Error },
}

/// What [`Esp::install_bytes`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub slot: Slot,
    pub generation: u64,
    /// The new file name, counter included; also the entry id systemd-boot will report.
    pub file_name: String,
    /// Previous UKIs of the slot and stale temp files that were removed.
    pub removed: Vec<String>,
}

/// Why an install failed. Nothing is left behind but (at worst) a dot-named temp file, which
/// systemd-boot ignores and the next install removes.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("tries must be 1..={TRIES_COUNT_MAX}, got {tries}")]
    TriesOutOfRange { tries: u32 },
    #[error("cannot read {path}: {source}")]
    ReadImage { path: String, source: io::Error },
    #[error("{what} is larger than {UKI_SIZE_BYTES_MAX} bytes")]
    TooLarge { what: String },
    #[error(transparent)]
    Osrel(#[from] uki::OsrelError),
    #[error(
        "{what} has no .osrel section naming the OS (PRETTY_NAME/IMAGE_ID/NAME/ID): systemd-boot would not list it"
    )]
    NotListable { what: String },
    #[error(
        "{new} would not boot first: systemd-boot orders {ahead} before it (check the .osrel ID/IMAGE_ID and version fields)"
    )]
    WouldNotBootFirst { new: String, ahead: String },
    #[error("generation counter overflow")]
    GenerationOverflow,
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: io::Error },
    #[error("cannot rename {from} to {to}: {source}")]
    Rename {
        from: String,
        to: String,
        source: io::Error,
    },
    #[error("cannot remove {path}: {source}")]
    Remove { path: String, source: io::Error },
    #[error("cannot fsync {path}: {source}")]
    Sync { path: String, source: io::Error },
}

/// Points in an install where a test can simulate a power cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InstallStep {
    TempDurable,
    Renamed,
}

/// The ESP, mounted at `root`.
#[derive(Clone, Debug)]
pub struct Esp {
    root: PathBuf,
    linux_dir: PathBuf,
}

impl Esp {
    /// Opens the ESP mounted at `root` (PID 1 mounts it at `/efi`). `EFI/Linux` must exist: the
    /// image builder creates it, and creating it here would hide an unmounted ESP.
    pub fn open(root: &Path) -> Result<Self, OpenError> {
        let linux_dir = root.join(LINUX_DIR);
        if !linux_dir.is_dir() {
            return Err(OpenError::NoLinuxDir {
                path: linux_dir.display().to_string(),
            });
        }
        Ok(Self {
            root: root.to_owned(),
            linux_dir,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn linux_dir(&self) -> &Path {
        &self.linux_dir
    }

    /// The slot an update goes to while `booted` runs.
    pub fn inactive_slot(&self, booted: Slot) -> Slot {
        booted.other()
    }

    fn scan(&self) -> Result<Scan, ScanError> {
        let read_err = |source| ScanError::ReadDir {
            path: self.linux_dir.display().to_string(),
            source,
        };
        let mut scan = Scan::default();
        for entry in fs::read_dir(&self.linux_dir).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            // Follow systemd-boot: it does not descend into directories.
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            if file_name.starts_with('.') {
                if file_name.starts_with(TEMP_PREFIX) && file_name.ends_with(TEMP_SUFFIX) {
                    scan.temps.push(file_name);
                }
                continue;
            }
            if !file_name.to_lowercase().ends_with(".efi") || file_name.starts_with("auto-") {
                continue;
            }
            // An unreadable or non-PE file is one systemd-boot skips too: record it as unlisted.
            let osrel = uki::osrel_from_file(&entry.path()).ok().flatten();
            match EntryName::parse(&file_name) {
                Some(name) => scan.ours.push(Found {
                    file_name,
                    name,
                    osrel,
                }),
                None => scan.foreign.push(Foreign { file_name, osrel }),
            }
        }
        scan.ours.sort_by(|a, b| a.file_name.cmp(&b.file_name));
        scan.foreign.sort_by(|a, b| a.file_name.cmp(&b.file_name));
        scan.temps.sort();
        Ok(scan)
    }

    /// Lists both slots, which one booted (from `LoaderEntrySelected`) and which one
    /// systemd-boot picks next.
    pub fn status(&self, booted_entry_id: Option<&str>) -> Result<Status, ScanError> {
        let scan = self.scan()?;
        Ok(build_status(&scan, booted_entry_id))
    }

    /// Drops the boot counter from the booted UKI's name, so systemd-boot keeps booting it
    /// without counting. Idempotent.
    pub fn mark_booted_good(&self, booted_entry_id: &str) -> Result<MarkGood, MarkGoodError> {
        let id = booted_entry_id.to_lowercase();
        let booted =
            EntryName::parse(&id).ok_or_else(|| MarkGoodError::NotOurEntry { id: id.clone() })?;
        let scan = self.scan()?;
        let matching: Vec<&Found> = scan
            .ours
            .iter()
            .filter(|f| f.name.same_image(&booted))
            .collect();
        let good = matching.iter().find(|f| f.name.counter.is_none());
        let counted = matching.iter().find(|f| f.name.counter.is_some());
        match (good, counted) {
            (Some(g), Some(c)) => Err(MarkGoodError::Conflict {
                good: g.file_name.clone(),
                counted: c.file_name.clone(),
            }),
            (Some(g), None) => Ok(MarkGood::AlreadyGood {
                file: g.file_name.clone(),
            }),
            (None, Some(c)) => {
                let to = c.name.good_file_name();
                let from_path = self.linux_dir.join(&c.file_name);
                fs::rename(&from_path, self.linux_dir.join(&to)).map_err(|source| {
                    MarkGoodError::Rename {
                        from: c.file_name.clone(),
                        to: to.clone(),
                        source,
                    }
                })?;
                fsutil::fsync_dir(&self.linux_dir).map_err(|source| MarkGoodError::Sync {
                    path: self.linux_dir.display().to_string(),
                    source,
                })?;
                Ok(MarkGood::Renamed {
                    from: c.file_name.clone(),
                    to,
                })
            }
            (None, None) => Err(MarkGoodError::BootedFileMissing {
                id,
                generation: booted.generation,
                slot: booted.slot,
            }),
        }
    }

    /// Installs the UKI at `uki_path` into `slot` with `tries` boot attempts. See
    /// [`Esp::install_bytes`]; prefer that one when the bytes were verified first, so the file
    /// cannot change between verification and install.
    pub fn install(
        &self,
        slot: Slot,
        uki_path: &Path,
        tries: u32,
    ) -> Result<Installed, InstallError> {
        let what = uki_path.display().to_string();
        let image = fsutil::read_bounded(uki_path, UKI_SIZE_BYTES_MAX).map_err(|e| match e {
            ReadBoundedError::Io(source) => InstallError::ReadImage {
                path: what.clone(),
                source,
            },
            ReadBoundedError::TooLarge => InstallError::TooLarge { what: what.clone() },
        })?;
        self.install_bytes(slot, &image, tries)
    }

    /// Writes `image` as `metanode-<next generation>-<slot>+<tries>.efi`: temp file, fsync,
    /// rename to the new name (which never exists yet: FAT cannot rename over a name atomically),
    /// fsync the directory, then remove the slot's previous UKI and fsync again. Refuses an image
    /// systemd-boot would not list or would not order first.
    pub fn install_bytes(
        &self,
        slot: Slot,
        image: &[u8],
        tries: u32,
    ) -> Result<Installed, InstallError> {
        match self.install_steps(slot, image, tries, None)? {
            Some(installed) => Ok(installed),
            None => unreachable!("install_steps stops early only when asked to"),
        }
    }

    /// The install, stoppable after `stop_after` to simulate a power cut (`Ok(None)`).
    pub(crate) fn install_steps(
        &self,
        slot: Slot,
        image: &[u8],
        tries: u32,
        stop_after: Option<InstallStep>,
    ) -> Result<Option<Installed>, InstallError> {
        if !(1..=TRIES_COUNT_MAX).contains(&tries) {
            return Err(InstallError::TriesOutOfRange { tries });
        }
        if image.len() as u64 > UKI_SIZE_BYTES_MAX {
            return Err(InstallError::TooLarge {
                what: "the image".into(),
            });
        }
        let osrel = uki::osrel_from_bytes(image, "the image")?
            .filter(|o| o.title().is_some())
            .ok_or_else(|| InstallError::NotListable {
                what: "the image".into(),
            })?;

        let scan = self.scan()?;
        let generation = scan
            .ours
            .iter()
            .map(|f| f.name.generation)
            .max()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or(InstallError::GenerationOverflow)?;
        let new_name = EntryName {
            generation,
            slot,
            counter: Some(BootCounter {
                left: tries,
                done: 0,
            }),
        };
        let file_name = new_name.file_name();

        // Predict the order after the install: the slot's old UKIs are gone, the new one is in.
        let mut keys: Vec<EntryKey> = scan
            .ours
            .iter()
            .filter(|f| f.name.slot != slot && f.listed())
            .filter_map(|f| {
                f.osrel
                    .as_ref()
                    .map(|o| entry_key(&f.file_name, o, f.name.counter))
            })
            .collect();
        // Foreign entries stay, and one named `metanode-…` matches the default pattern too.
        for f in &scan.foreign {
            if let Some(o) = f.osrel.as_ref().filter(|o| o.title().is_some()) {
                keys.push(entry_key(&f.file_name, o, foreign_counter(&f.file_name)));
            }
        }
        keys.push(entry_key(&file_name, &osrel, new_name.counter));
        bootorder::sort_entries(&mut keys);
        let ids: Vec<String> = keys.into_iter().map(|k| k.id).collect();
        match bootorder::select_default(&ids, None, None, Some(DEFAULT_PATTERN)) {
            Some(first) if first == file_name => {}
            Some(first) => {
                return Err(InstallError::WouldNotBootFirst {
                    new: file_name,
                    ahead: first.to_owned(),
                });
            }
            None => {
                return Err(InstallError::WouldNotBootFirst {
                    new: file_name,
                    ahead: "nothing".into(),
                });
            }
        }

        let dir = &self.linux_dir;
        let sync_dir = || {
            fsutil::fsync_dir(dir).map_err(|source| InstallError::Sync {
                path: dir.display().to_string(),
                source,
            })
        };
        let mut removed = Vec::new();
        for temp in &scan.temps {
            fsutil::remove_if_exists(&dir.join(temp)).map_err(|source| InstallError::Remove {
                path: temp.clone(),
                source,
            })?;
            removed.push(temp.clone());
        }

        let temp_name = format!(".{}{TEMP_SUFFIX}", new_name.base());
        let temp_path = dir.join(&temp_name);
        if let Err(source) = fsutil::write_new_durable(&temp_path, image) {
            // Best effort: a leftover dot file is ignored by systemd-boot and removed next time.
            let _ = fs::remove_file(&temp_path);
            return Err(InstallError::Write {
                path: temp_path.display().to_string(),
                source,
            });
        }
        if stop_after == Some(InstallStep::TempDurable) {
            return Ok(None);
        }

        let final_path = dir.join(&file_name);
        // A fresh generation's name cannot exist, but never let a rename land on a name on FAT.
        if final_path.exists() {
            return Err(InstallError::Rename {
                from: temp_name,
                to: file_name,
                source: io::Error::from(io::ErrorKind::AlreadyExists),
            });
        }
        fs::rename(&temp_path, &final_path).map_err(|source| InstallError::Rename {
            from: temp_name.clone(),
            to: file_name.clone(),
            source,
        })?;
        sync_dir()?;
        if stop_after == Some(InstallStep::Renamed) {
            return Ok(None);
        }

        for old in scan.ours.iter().filter(|f| f.name.slot == slot) {
            fs::remove_file(dir.join(&old.file_name)).map_err(|source| InstallError::Remove {
                path: old.file_name.clone(),
                source,
            })?;
            removed.push(old.file_name.clone());
        }
        sync_dir()?;
        Ok(Some(Installed {
            slot,
            generation,
            file_name,
            removed,
        }))
    }

    /// Removes what an interrupted install left: temp files and superseded UKIs (a slot's files
    /// older than its newest), never the booted one. Returns the removed names.
    pub fn tidy(&self, booted_entry_id: Option<&str>) -> Result<Vec<String>, InstallError> {
        let scan = self.scan()?;
        let status = build_status(&scan, booted_entry_id);
        let booted = booted_entry_id.and_then(|id| EntryName::parse(&id.to_lowercase()));
        let mut removed = Vec::new();
        for name in status.temp_files.iter().chain(status.superseded.iter()) {
            if let (Some(b), Some(n)) = (&booted, EntryName::parse(name))
                && b.same_image(&n)
            {
                continue;
            }
            fsutil::remove_if_exists(&self.linux_dir.join(name)).map_err(|source| {
                InstallError::Remove {
                    path: name.clone(),
                    source,
                }
            })?;
            removed.push(name.clone());
        }
        if !removed.is_empty() {
            fsutil::fsync_dir(&self.linux_dir).map_err(|source| InstallError::Sync {
                path: self.linux_dir.display().to_string(),
                source,
            })?;
        }
        Ok(removed)
    }
}

fn build_status(scan: &Scan, booted_entry_id: Option<&str>) -> Status {
    let booted_name = booted_entry_id.and_then(|id| EntryName::parse(&id.to_lowercase()));

    // The newest generation of a slot is its current UKI; older ones are leftovers.
    let mut current: BTreeMap<Slot, &Found> = BTreeMap::new();
    for f in &scan.ours {
        let newer = current
            .get(&f.name.slot)
            .is_none_or(|c| f.name.generation > c.name.generation);
        if newer {
            current.insert(f.name.slot, f);
        }
    }
    let superseded: Vec<String> = scan
        .ours
        .iter()
        .filter(|f| {
            current
                .get(&f.name.slot)
                .is_some_and(|c| c.file_name != f.file_name)
        })
        .map(|f| f.file_name.clone())
        .collect();

    let slot_status = |slot: Slot| {
        let booted = booted_name.as_ref().is_some_and(|b| b.slot == slot);
        match current.get(&slot) {
            None => SlotStatus {
                slot,
                file: None,
                generation: None,
                state: SlotState::Empty,
                booted,
                listed: false,
                title: None,
                version: None,
            },
            Some(f) => SlotStatus {
                slot,
                file: Some(f.file_name.clone()),
                generation: Some(f.name.generation),
                state: f.name.state(),
                booted,
                listed: f.listed(),
                title: f.osrel.as_ref().and_then(|o| o.title()).map(str::to_owned),
                version: f
                    .osrel
                    .as_ref()
                    .and_then(|o| o.version())
                    .map(str::to_owned),
            },
        }
    };

    let mut keys: Vec<EntryKey> = Vec::new();
    for f in scan.ours.iter().filter(|f| f.listed()) {
        if let Some(o) = &f.osrel {
            keys.push(entry_key(&f.file_name, o, f.name.counter));
        }
    }
    for f in &scan.foreign {
        if let Some(o) = f.osrel.as_ref().filter(|o| o.title().is_some()) {
            keys.push(entry_key(&f.file_name, o, foreign_counter(&f.file_name)));
        }
    }
    bootorder::sort_entries(&mut keys);
    let boot_order: Vec<String> = keys.into_iter().map(|k| k.id).collect();
    let next_entry = bootorder::select_default(&boot_order, None, None, Some(DEFAULT_PATTERN))
        .map(str::to_owned);
    let preferred_next = next_entry
        .as_deref()
        .and_then(EntryName::parse)
        .map(|n| n.slot);

    Status {
        slots: [slot_status(Slot::A), slot_status(Slot::B)],
        booted_entry_id: booted_entry_id.map(str::to_owned),
        booted: booted_name.map(|n| n.slot),
        boot_order,
        next_entry,
        preferred_next,
        superseded,
        temp_files: scan.temps.clone(),
        foreign: scan.foreign.iter().map(|f| f.file_name.clone()).collect(),
    }
}

#[cfg(test)]
mod tests;

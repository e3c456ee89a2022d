//! A fake ESP and a simulated systemd-boot 252 power-on, for tests.

use std::fs;

use crate::esp::{BootCounter, EntryName, Esp, LINUX_DIR, Slot};
use crate::testpe::{PLAIN_OSREL, uki};

pub(crate) fn fake_esp() -> (tempfile::TempDir, Esp) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join(LINUX_DIR)).unwrap();
    let esp = Esp::open(dir.path()).unwrap();
    (dir, esp)
}

/// What systemd-boot 252 does at power-on, per the notes in esp.rs: pick the default entry,
/// bump its counter by renaming the file, and report the pre-bump id as LoaderEntrySelected.
pub(crate) fn simulate_boot(esp: &Esp) -> String {
    let status = esp.status(None).unwrap();
    let id = status.next_entry.clone().expect("something to boot");
    if let Some(name) = EntryName::parse(&id)
        && let Some(c) = name.counter
    {
        let next = EntryName {
            counter: Some(BootCounter {
                left: c.left.saturating_sub(1),
                done: c.done + 1,
            }),
            ..name.clone()
        };
        fs::rename(
            esp.linux_dir().join(name.file_name()),
            esp.linux_dir().join(next.file_name()),
        )
        .unwrap();
    }
    id
}

/// The names in `EFI/Linux`, sorted.
pub(crate) fn files(esp: &Esp) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(esp.linux_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// An ESP whose slot A holds generation 1, marked good, as after the first boot of an image.
pub(crate) fn esp_with_good_a() -> (tempfile::TempDir, Esp) {
    let (dir, esp) = fake_esp();
    esp.install_bytes(Slot::A, &uki(PLAIN_OSREL), 1).unwrap();
    let id = simulate_boot(&esp);
    assert_eq!(id, "metanode-1-a+1.efi");
    esp.mark_booted_good(&id).unwrap();
    assert_eq!(files(&esp), vec!["metanode-1-a.efi"]);
    (dir, esp)
}

use std::fs;

use super::*;
use crate::testboot::{esp_with_good_a, fake_esp, files, simulate_boot};
use crate::testpe::{PLAIN_OSREL, pe_with_sections, uki};

#[test]
fn names_round_trip_and_non_canonical_names_are_not_ours() {
    for name in [
        "metanode-1-a.efi",
        "metanode-12-b+3.efi",
        "metanode-7-a+2-1.efi",
        "metanode-7-a+0-3.efi",
    ] {
        assert_eq!(EntryName::parse(name).unwrap().file_name(), name);
    }
    let n = EntryName::parse("metanode-7-a+2-1.efi").unwrap();
    assert_eq!(n.generation, 7);
    assert_eq!(n.slot, Slot::A);
    assert_eq!(n.state(), SlotState::Trial { left: 2, done: 1 });
    assert_eq!(n.good_file_name(), "metanode-7-a.efi");
    assert_eq!(
        EntryName::parse("metanode-7-b+0-3.efi").unwrap().state(),
        SlotState::Bad { done: 3 }
    );
    // "+3" alone means DONE = 0, as systemd-boot reads it.
    assert_eq!(
        EntryName::parse("metanode-7-b+3.efi").unwrap().counter,
        Some(BootCounter { left: 3, done: 0 })
    );
    for bad in [
        "metanode-07-a.efi",
        "metanode-0x-a.efi",
        "metanode--a.efi",
        "metanode-1-c.efi",
        "metanode-1-ab.efi",
        "Metanode-1-a.efi",
        "metanode-1-a+.efi",
        "metanode-1-a+1-.efi",
        "metanode-1-a+1-2-3.efi",
        "metanode-1-a+3000000000.efi",
        "metanode-1-a.conf",
        "debian.efi",
    ] {
        assert_eq!(EntryName::parse(bad), None, "{bad}");
    }
}

#[test]
fn open_requires_the_linux_directory() {
    let dir = tempfile::tempdir().unwrap();
    let err = Esp::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("EFI/Linux"), "{err}");
}

#[test]
fn empty_esp_has_two_empty_slots() {
    let (_dir, esp) = fake_esp();
    let s = esp.status(None).unwrap();
    for slot in Slot::ALL {
        assert_eq!(s.slot(slot).state, SlotState::Empty);
        assert_eq!(s.slot(slot).file, None);
    }
    assert_eq!(s.next_entry, None);
    assert_eq!(s.preferred_next, None);
    assert!(s.boot_order.is_empty());
}

#[test]
fn trial_first_then_three_failed_boots_fall_back_to_the_good_slot() {
    let (_dir, esp) = esp_with_good_a();
    let installed = esp.install_bytes(Slot::B, &uki(PLAIN_OSREL), 3).unwrap();
    assert_eq!(installed.file_name, "metanode-2-b+3.efi");
    assert_eq!(installed.generation, 2);
    assert!(installed.removed.is_empty());

    let s = esp.status(Some("metanode-1-a.efi")).unwrap();
    assert_eq!(s.booted, Some(Slot::A));
    assert_eq!(s.slot(Slot::A).state, SlotState::Good);
    assert!(s.slot(Slot::A).booted);
    assert_eq!(s.slot(Slot::B).state, SlotState::Trial { left: 3, done: 0 });
    assert_eq!(s.boot_order, vec!["metanode-2-b+3.efi", "metanode-1-a.efi"]);
    assert_eq!(s.preferred_next, Some(Slot::B));

    // Three boot attempts of the trial; userspace never marks it good.
    let expected = [
        ("metanode-2-b+3.efi", SlotState::Trial { left: 2, done: 1 }),
        (
            "metanode-2-b+2-1.efi",
            SlotState::Trial { left: 1, done: 2 },
        ),
        ("metanode-2-b+1-2.efi", SlotState::Bad { done: 3 }),
    ];
    for (want_id, want_state) in expected {
        let id = simulate_boot(&esp);
        assert_eq!(id, want_id);
        let s = esp.status(Some(&id)).unwrap();
        assert_eq!(s.booted, Some(Slot::B));
        assert_eq!(s.slot(Slot::B).state, want_state);
    }

    // Out of tries: the bad entry sorts last, the good slot is booted.
    let s = esp.status(None).unwrap();
    assert_eq!(
        s.boot_order,
        vec!["metanode-1-a.efi", "metanode-2-b+0-3.efi"]
    );
    assert_eq!(s.preferred_next, Some(Slot::A));
    let id = simulate_boot(&esp);
    assert_eq!(id, "metanode-1-a.efi");
    let s = esp.status(Some(&id)).unwrap();
    assert_eq!(s.booted, Some(Slot::A));
    assert_eq!(s.slot(Slot::B).state, SlotState::Bad { done: 3 });
    // And it stays that way on every later boot.
    assert_eq!(simulate_boot(&esp), "metanode-1-a.efi");

    // The next update replaces the bad image in the inactive slot and is tried first again.
    let next = esp
        .install_bytes(esp.inactive_slot(Slot::A), &uki(PLAIN_OSREL), 3)
        .unwrap();
    assert_eq!(next.file_name, "metanode-3-b+3.efi");
    assert_eq!(next.removed, vec!["metanode-2-b+0-3.efi"]);
    assert_eq!(files(&esp), vec!["metanode-1-a.efi", "metanode-3-b+3.efi"]);
    assert_eq!(simulate_boot(&esp), "metanode-3-b+3.efi");
}

#[test]
fn install_then_mark_good_makes_the_new_slot_the_default() {
    let (_dir, esp) = esp_with_good_a();
    esp.install_bytes(Slot::B, &uki(PLAIN_OSREL), 3).unwrap();
    let id = simulate_boot(&esp);
    assert_eq!(id, "metanode-2-b+3.efi");

    // LoaderEntrySelected still carries the pre-bump counter; the file is now +2-1.
    let done = esp.mark_booted_good(&id).unwrap();
    assert_eq!(
        done,
        MarkGood::Renamed {
            from: "metanode-2-b+2-1.efi".into(),
            to: "metanode-2-b.efi".into()
        }
    );
    assert_eq!(
        esp.mark_booted_good(&id).unwrap(),
        MarkGood::AlreadyGood {
            file: "metanode-2-b.efi".into()
        }
    );
    assert_eq!(
        esp.mark_booted_good("metanode-2-b.efi").unwrap(),
        MarkGood::AlreadyGood {
            file: "metanode-2-b.efi".into()
        }
    );

    let s = esp.status(Some(&id)).unwrap();
    assert_eq!(s.slot(Slot::A).state, SlotState::Good);
    assert_eq!(s.slot(Slot::B).state, SlotState::Good);
    assert_eq!(s.boot_order, vec!["metanode-2-b.efi", "metanode-1-a.efi"]);
    assert_eq!(s.preferred_next, Some(Slot::B));
    // Boots of a good entry rename nothing.
    assert_eq!(simulate_boot(&esp), "metanode-2-b.efi");
    assert_eq!(simulate_boot(&esp), "metanode-2-b.efi");
    assert_eq!(files(&esp), vec!["metanode-1-a.efi", "metanode-2-b.efi"]);

    // The update after that goes to A, replacing generation 1 only once generation 3 is durable.
    let next = esp
        .install_bytes(esp.inactive_slot(Slot::B), &uki(PLAIN_OSREL), 2)
        .unwrap();
    assert_eq!(next.file_name, "metanode-3-a+2.efi");
    assert_eq!(next.removed, vec!["metanode-1-a.efi"]);
    let s = esp.status(Some("metanode-2-b.efi")).unwrap();
    assert_eq!(s.boot_order, vec!["metanode-3-a+2.efi", "metanode-2-b.efi"]);
}

#[test]
fn generations_past_nine_still_sort_newest_first() {
    let (_dir, esp) = esp_with_good_a();
    let mut booted = Slot::A;
    for generation in 2..=12u64 {
        let target = esp.inactive_slot(booted);
        let installed = esp.install_bytes(target, &uki(PLAIN_OSREL), 1).unwrap();
        assert_eq!(installed.generation, generation);
        let id = simulate_boot(&esp);
        assert_eq!(
            id, installed.file_name,
            "generation {generation} must be tried first"
        );
        esp.mark_booted_good(&id).unwrap();
        booted = target;
    }
    let s = esp.status(None).unwrap();
    assert_eq!(s.boot_order, vec!["metanode-12-b.efi", "metanode-11-a.efi"]);
}

#[test]
fn mark_good_errors_name_the_problem() {
    let (_dir, esp) = esp_with_good_a();
    let err = esp.mark_booted_good("debian-6.1.efi").unwrap_err();
    assert!(matches!(err, MarkGoodError::NotOurEntry { .. }), "{err}");
    let err = esp.mark_booted_good("metanode-9-b+3.efi").unwrap_err();
    assert!(
        matches!(
            err,
            MarkGoodError::BootedFileMissing {
                generation: 9,
                slot: Slot::B,
                ..
            }
        ),
        "{err}"
    );

    // Both names of one image: refuse rather than guess which directory entry is intact.
    fs::write(
        esp.linux_dir().join("metanode-1-a+2-1.efi"),
        uki(PLAIN_OSREL),
    )
    .unwrap();
    let err = esp.mark_booted_good("metanode-1-a+3.efi").unwrap_err();
    assert!(matches!(err, MarkGoodError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("metanode-1-a.efi"), "{err}");
}

#[test]
fn mark_good_accepts_an_upper_case_id_and_a_bad_counter() {
    let (_dir, esp) = esp_with_good_a();
    fs::write(
        esp.linux_dir().join("metanode-2-b+0-3.efi"),
        uki(PLAIN_OSREL),
    )
    .unwrap();
    // Someone picked the bad entry from the menu and it came up fine: it may be blessed.
    let done = esp.mark_booted_good("METANODE-2-B+1-2.EFI").unwrap();
    assert_eq!(
        done,
        MarkGood::Renamed {
            from: "metanode-2-b+0-3.efi".into(),
            to: "metanode-2-b.efi".into()
        }
    );
}

#[test]
fn power_cut_after_the_temp_file_changes_nothing_systemd_boot_sees() {
    let (_dir, esp) = esp_with_good_a();
    let before = esp.status(Some("metanode-1-a.efi")).unwrap();
    let out = esp
        .install_steps(
            Slot::B,
            &uki(PLAIN_OSREL),
            3,
            Some(InstallStep::TempDurable),
        )
        .unwrap();
    assert_eq!(out, None);
    assert_eq!(files(&esp), vec![".metanode-2-b.tmp", "metanode-1-a.efi"]);

    let after = esp.status(Some("metanode-1-a.efi")).unwrap();
    assert_eq!(after.temp_files, vec![".metanode-2-b.tmp"]);
    assert_eq!(after.boot_order, before.boot_order);
    assert_eq!(after.slots, before.slots);
    assert_eq!(simulate_boot(&esp), "metanode-1-a.efi");

    // The retried install cleans up and lands normally.
    let installed = esp.install_bytes(Slot::B, &uki(PLAIN_OSREL), 3).unwrap();
    assert_eq!(installed.file_name, "metanode-2-b+3.efi");
    assert_eq!(installed.removed, vec![".metanode-2-b.tmp"]);
    assert_eq!(files(&esp), vec!["metanode-1-a.efi", "metanode-2-b+3.efi"]);
}

#[test]
fn power_cut_after_the_rename_keeps_both_images_and_tries_the_new_one() {
    let (_dir, esp) = esp_with_good_a();
    esp.install_bytes(Slot::B, &uki(PLAIN_OSREL), 1).unwrap();
    let id = simulate_boot(&esp);
    esp.mark_booted_good(&id).unwrap();
    // B (gen 2) is booted and good; update A, cut power before gen 1 is removed.
    let out = esp
        .install_steps(Slot::A, &uki(PLAIN_OSREL), 3, Some(InstallStep::Renamed))
        .unwrap();
    assert_eq!(out, None);
    assert_eq!(
        files(&esp),
        vec!["metanode-1-a.efi", "metanode-2-b.efi", "metanode-3-a+3.efi"]
    );

    let s = esp.status(Some("metanode-2-b.efi")).unwrap();
    assert_eq!(s.slot(Slot::A).file.as_deref(), Some("metanode-3-a+3.efi"));
    assert_eq!(s.slot(Slot::A).state, SlotState::Trial { left: 3, done: 0 });
    assert_eq!(s.superseded, vec!["metanode-1-a.efi"]);
    assert_eq!(
        s.boot_order,
        vec!["metanode-3-a+3.efi", "metanode-2-b.efi", "metanode-1-a.efi"]
    );
    assert_eq!(s.preferred_next, Some(Slot::A));

    assert_eq!(
        esp.tidy(Some("metanode-2-b.efi")).unwrap(),
        vec!["metanode-1-a.efi"]
    );
    assert_eq!(files(&esp), vec!["metanode-2-b.efi", "metanode-3-a+3.efi"]);
    assert!(esp.tidy(Some("metanode-2-b.efi")).unwrap().is_empty());
}

#[test]
fn tidy_never_removes_the_booted_image() {
    let (_dir, esp) = esp_with_good_a();
    // A leftover newer A next to the booted gen 1 (as if the booted slot had been written to).
    fs::write(esp.linux_dir().join("metanode-5-a+3.efi"), uki(PLAIN_OSREL)).unwrap();
    let s = esp.status(Some("metanode-1-a.efi")).unwrap();
    assert_eq!(s.superseded, vec!["metanode-1-a.efi"]);
    assert!(esp.tidy(Some("metanode-1-a.efi")).unwrap().is_empty());
    assert!(esp.linux_dir().join("metanode-1-a.efi").exists());
}

#[test]
fn install_refuses_what_would_not_boot_and_writes_nothing() {
    let (_dir, esp) = esp_with_good_a();
    let before = files(&esp);
    let image = uki(PLAIN_OSREL);

    assert!(matches!(
        esp.install_bytes(Slot::B, &image, 0),
        Err(InstallError::TriesOutOfRange { tries: 0 })
    ));
    assert!(matches!(
        esp.install_bytes(Slot::B, &image, TRIES_COUNT_MAX + 1),
        Err(InstallError::TriesOutOfRange { .. })
    ));
    let err = esp
        .install_bytes(Slot::B, b"#!/bin/sh\necho not a PE\n", 3)
        .unwrap_err();
    assert!(
        matches!(err, InstallError::Osrel(uki::OsrelError::NotPe { .. })),
        "{err}"
    );
    let err = esp
        .install_bytes(Slot::B, &pe_with_sections(&[(".text", &[0xC3; 8])]), 3)
        .unwrap_err();
    assert!(matches!(err, InstallError::NotListable { .. }), "{err}");
    let err = esp
        .install_bytes(Slot::B, &uki("VERSION=1\n"), 3)
        .unwrap_err();
    assert!(matches!(err, InstallError::NotListable { .. }), "{err}");
    assert_eq!(files(&esp), before);
}

#[test]
fn install_refuses_an_image_whose_osrel_version_sorts_behind_the_good_one() {
    let (_dir, esp) = fake_esp();
    let newer = "ID=metanode\nNAME=Metanode\nVERSION_ID=2.0\n";
    let older = "ID=metanode\nNAME=Metanode\nVERSION_ID=1.0\n";
    esp.install_bytes(Slot::A, &uki(newer), 1).unwrap();
    esp.mark_booted_good(&simulate_boot(&esp)).unwrap();
    // With a sort key on both, systemd-boot compares VERSION_ID before the file name: a
    // "downgrade" would never be tried. Refuse instead of installing a trial that never runs.
    let err = esp.install_bytes(Slot::B, &uki(older), 3).unwrap_err();
    match &err {
        InstallError::WouldNotBootFirst { new, ahead } => {
            assert_eq!(new, "metanode-2-b+3.efi");
            assert_eq!(ahead, "metanode-1-a.efi");
        }
        other => panic!("expected WouldNotBootFirst, got {other}"),
    }
    assert_eq!(files(&esp), vec!["metanode-1-a.efi"]);
    // An equal or newer version is fine: the generation in the name decides.
    esp.install_bytes(Slot::B, &uki(newer), 3).unwrap();
    assert_eq!(simulate_boot(&esp), "metanode-2-b+3.efi");
}

#[test]
fn install_from_a_path_reads_the_file() {
    let (dir, esp) = fake_esp();
    let path = dir.path().join("new.efi");
    fs::write(&path, uki(PLAIN_OSREL)).unwrap();
    let installed = esp.install(Slot::A, &path, 3).unwrap();
    assert_eq!(
        fs::read(esp.linux_dir().join(&installed.file_name)).unwrap(),
        uki(PLAIN_OSREL)
    );
    let err = esp
        .install(Slot::B, &dir.path().join("missing.efi"), 3)
        .unwrap_err();
    assert!(matches!(err, InstallError::ReadImage { .. }), "{err}");
}

#[test]
fn foreign_and_unlisted_files_are_reported_but_never_chosen() {
    let (_dir, esp) = esp_with_good_a();
    // A foreign UKI whose name sorts before ours ('z' > 'm'), a non-PE .efi, a dot file.
    fs::write(
        esp.linux_dir().join("zz-rescue.efi"),
        uki("NAME=Rescue\nVERSION=1\n"),
    )
    .unwrap();
    fs::write(esp.linux_dir().join("notes.efi"), b"not a PE").unwrap();
    fs::write(esp.linux_dir().join(".hidden.efi"), uki(PLAIN_OSREL)).unwrap();
    // Our name, but no .osrel: systemd-boot would not list it.
    fs::write(
        esp.linux_dir().join("metanode-2-b+3.efi"),
        pe_with_sections(&[(".text", &[0xC3; 8])]),
    )
    .unwrap();

    let s = esp.status(None).unwrap();
    assert_eq!(s.foreign, vec!["notes.efi", "zz-rescue.efi"]);
    assert_eq!(s.boot_order, vec!["zz-rescue.efi", "metanode-1-a.efi"]);
    assert_eq!(s.next_entry.as_deref(), Some("metanode-1-a.efi"));
    assert_eq!(s.preferred_next, Some(Slot::A));
    assert_eq!(s.slot(Slot::B).state, SlotState::Trial { left: 3, done: 0 });
    assert!(!s.slot(Slot::B).listed);
    assert!(s.slot(Slot::A).listed);
    assert_eq!(s.slot(Slot::A).title.as_deref(), Some("Metanode appliance"));
}

#[test]
fn efivar_strings_decode_like_efivarfs_presents_them() {
    let mut bytes = vec![0x06, 0, 0, 0];
    for u in "metanode-2-b+3.efi".encode_utf16() {
        bytes.extend_from_slice(&u.to_le_bytes());
    }
    bytes.extend_from_slice(&[0, 0]);
    assert_eq!(
        decode_efivar_string(&bytes).as_deref(),
        Some("metanode-2-b+3.efi")
    );
    // Without the terminating NUL as well.
    assert_eq!(
        decode_efivar_string(&bytes[..bytes.len() - 2]).as_deref(),
        Some("metanode-2-b+3.efi")
    );
    assert_eq!(
        decode_efivar_string(&bytes[..bytes.len() - 1]),
        None,
        "odd length"
    );
    assert_eq!(
        decode_efivar_string(&[6, 0, 0]),
        None,
        "shorter than the attributes"
    );
    assert_eq!(
        decode_efivar_string(&[6, 0, 0, 0, 0, 0]),
        None,
        "empty string"
    );
    assert_eq!(
        decode_efivar_string(&[6, 0, 0, 0, 0x00, 0xd8]),
        None,
        "lone surrogate"
    );

    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path()
            .join(format!("LoaderEntrySelected-{LOADER_GUID}")),
        &bytes,
    )
    .unwrap();
    assert_eq!(
        booted_entry_from_efivars(dir.path()).as_deref(),
        Some("metanode-2-b+3.efi")
    );
    assert_eq!(
        loader_overrides_from_efivars(dir.path()),
        LoaderOverrides::default()
    );
    assert_eq!(booted_entry_from_efivars(&dir.path().join("missing")), None);
}

#[test]
fn loader_default_efivar_overrides_the_slot_order() {
    let (dir, esp) = esp_with_good_a();
    esp.install_bytes(Slot::B, &uki(PLAIN_OSREL), 3).unwrap();
    let mut bytes = vec![0x07, 0, 0, 0];
    for u in "metanode-1-a.efi".encode_utf16() {
        bytes.extend_from_slice(&u.to_le_bytes());
    }
    let vars = dir.path().join("efivars");
    fs::create_dir(&vars).unwrap();
    fs::write(
        vars.join(format!("LoaderEntryDefault-{LOADER_GUID}")),
        &bytes,
    )
    .unwrap();
    let overrides = loader_overrides_from_efivars(&vars);
    assert_eq!(overrides.entry_default.as_deref(), Some("metanode-1-a.efi"));

    let s = esp.status(None).unwrap();
    assert_eq!(s.next_entry.as_deref(), Some("metanode-2-b+3.efi"));
    assert_eq!(s.next_entry_with(&overrides), Some("metanode-1-a.efi"));
}

#[test]
fn loader_conf_has_exactly_the_four_settings() {
    let conf = loader_conf();
    let settings: Vec<&str> = conf.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        settings,
        vec![
            "timeout 0",
            "default metanode-*",
            "editor no",
            "console-mode keep"
        ]
    );
    assert!(conf.ends_with('\n'));
}

#[test]
fn install_refuses_when_a_foreign_metanode_named_entry_would_win() {
    let (_dir, esp) = esp_with_good_a();
    // Not one of our names (slot "x"), but it matches `default metanode-*` and looks newer.
    fs::write(esp.linux_dir().join("metanode-99-x.efi"), uki(PLAIN_OSREL)).unwrap();
    let err = esp
        .install_bytes(Slot::B, &uki(PLAIN_OSREL), 3)
        .unwrap_err();
    assert!(
        matches!(&err, InstallError::WouldNotBootFirst { ahead, .. } if ahead == "metanode-99-x.efi"),
        "{err}"
    );
    let s = esp.status(None).unwrap();
    assert_eq!(s.next_entry.as_deref(), Some("metanode-99-x.efi"));
    assert_eq!(s.preferred_next, None);
}

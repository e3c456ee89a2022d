use std::fs;

use super::*;

const OLD: &[u8] = b"node:\n  name: old\n";
const NEW: &[u8] = b"node:\n  name: new\n";
const T0: u64 = 1_700_000_000;
const WINDOW: Duration = Duration::from_secs(300);

fn dir_with_config(bytes: Option<&[u8]>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    if let Some(b) = bytes {
        fs::write(dir.path().join(CONFIG_FILE), b).unwrap();
    }
    dir
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != LOCK_FILE)
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<&str>) -> Vec<String> {
    v.sort_unstable();
    v.into_iter().map(str::to_owned).collect()
}

fn active(dir: &Path) -> Option<Vec<u8>> {
    read_active(dir).unwrap()
}

#[test]
fn try_then_commit_keeps_the_new_config() {
    let dir = dir_with_config(Some(OLD));
    let trial = try_apply(dir.path(), NEW, WINDOW, T0, "admin@console").unwrap();
    assert_eq!(trial.deadline_unix_s, T0 + 300);
    assert_eq!(trial.started_unix_s, T0);
    assert_eq!(trial.who, "admin@console");
    assert_eq!(trial.new_sha256, hex_sha256(NEW));
    assert_eq!(trial.prev_sha256, Some(hex_sha256(OLD)));
    assert_eq!(active(dir.path()).as_deref(), Some(NEW));
    assert_eq!(
        names(dir.path()),
        sorted(vec![CONFIG_FILE, PREV_FILE, TRIAL_FILE])
    );
    assert_eq!(
        check(dir.path(), T0 + 299).unwrap(),
        TrialState::Pending {
            deadline_unix_s: T0 + 300
        }
    );

    let committed = commit(dir.path(), T0 + 299).unwrap();
    assert_eq!(committed, trial);
    assert_eq!(check(dir.path(), T0 + 299).unwrap(), TrialState::None);
    assert_eq!(active(dir.path()).as_deref(), Some(NEW));
    assert_eq!(names(dir.path()), sorted(vec![CONFIG_FILE]));
}

#[test]
fn expired_trial_cannot_be_committed_and_reverts_to_the_old_config() {
    let dir = dir_with_config(Some(OLD));
    try_apply(dir.path(), NEW, WINDOW, T0, "admin").unwrap();
    assert_eq!(
        check(dir.path(), T0 + 300).unwrap(),
        TrialState::Expired {
            deadline_unix_s: T0 + 300
        }
    );
    let err = commit(dir.path(), T0 + 300).unwrap_err();
    assert!(
        matches!(err, CommitError::Expired { deadline_unix_s, now_unix_s } if deadline_unix_s == T0 + 300 && now_unix_s == T0 + 300)
    );
    // The failed commit changed nothing.
    assert_eq!(active(dir.path()).as_deref(), Some(NEW));

    let reverted = revert(dir.path()).unwrap();
    assert!(reverted.restored_previous);
    assert_eq!(reverted.trial.who, "admin");
    assert_eq!(active(dir.path()).as_deref(), Some(OLD));
    assert_eq!(check(dir.path(), T0 + 300).unwrap(), TrialState::None);
    assert_eq!(names(dir.path()), sorted(vec![CONFIG_FILE]));
}

#[test]
fn a_pending_trial_can_be_reverted_early() {
    let dir = dir_with_config(Some(OLD));
    try_apply(dir.path(), NEW, WINDOW, T0, "admin").unwrap();
    revert(dir.path()).unwrap();
    assert_eq!(active(dir.path()).as_deref(), Some(OLD));
    assert_eq!(check(dir.path(), T0).unwrap(), TrialState::None);
}

#[test]
fn first_config_trial_reverts_to_no_config() {
    let dir = dir_with_config(None);
    let trial = try_apply(dir.path(), NEW, WINDOW, T0, "bootstrap").unwrap();
    assert_eq!(trial.prev_sha256, None);
    assert_eq!(names(dir.path()), sorted(vec![CONFIG_FILE, TRIAL_FILE]));
    let reverted = revert(dir.path()).unwrap();
    assert!(!reverted.restored_previous);
    assert_eq!(active(dir.path()), None);
    assert!(names(dir.path()).is_empty());
}

#[test]
fn one_trial_at_a_time_and_nothing_to_commit_without_one() {
    let dir = dir_with_config(Some(OLD));
    assert!(matches!(commit(dir.path(), T0), Err(CommitError::NoTrial)));
    assert!(matches!(revert(dir.path()), Err(RevertError::NoTrial)));
    try_apply(dir.path(), NEW, WINDOW, T0, "alice").unwrap();
    let err = try_apply(dir.path(), b"other", WINDOW, T0 + 1, "bob").unwrap_err();
    match err {
        TryError::TrialInProgress {
            who,
            deadline_unix_s,
        } => {
            assert_eq!(who, "alice");
            assert_eq!(deadline_unix_s, T0 + 300);
        }
        other => panic!("expected TrialInProgress, got {other}"),
    }
    assert_eq!(active(dir.path()).as_deref(), Some(NEW));
    commit(dir.path(), T0 + 2).unwrap();
    assert!(matches!(
        commit(dir.path(), T0 + 3),
        Err(CommitError::NoTrial)
    ));
    // A new trial after the commit keeps the committed one as previous.
    try_apply(dir.path(), b"third", WINDOW, T0 + 4, "bob").unwrap();
    revert(dir.path()).unwrap();
    assert_eq!(active(dir.path()).as_deref(), Some(NEW));
}

#[test]
fn bad_requests_are_refused_without_changes() {
    let dir = dir_with_config(Some(OLD));
    let big = vec![b'x'; CONFIG_SIZE_BYTES_MAX as usize + 1];
    assert!(matches!(
        try_apply(dir.path(), &big, WINDOW, T0, "a"),
        Err(TryError::TooLarge { .. })
    ));
    assert!(matches!(
        try_apply(
            dir.path(),
            NEW,
            Duration::from_secs(TRIAL_TIMEOUT_S_MIN - 1),
            T0,
            "a"
        ),
        Err(TryError::TimeoutOutOfRange { .. })
    ));
    assert!(matches!(
        try_apply(
            dir.path(),
            NEW,
            Duration::from_secs(TRIAL_TIMEOUT_S_MAX + 1),
            T0,
            "a"
        ),
        Err(TryError::TimeoutOutOfRange { .. })
    ));
    assert!(matches!(
        try_apply(dir.path(), NEW, WINDOW, u64::MAX - 5, "a"),
        Err(TryError::TimeoutOutOfRange { .. })
    ));
    let who = "w".repeat(TRIAL_WHO_BYTES_MAX + 1);
    assert!(matches!(
        try_apply(dir.path(), NEW, WINDOW, T0, &who),
        Err(TryError::WhoTooLong { .. })
    ));
    assert_eq!(names(dir.path()), sorted(vec![CONFIG_FILE]));
    assert_eq!(active(dir.path()).as_deref(), Some(OLD));
}

#[test]
fn crash_before_the_marker_means_no_trial_happened() {
    for step in [Step::TryPrevWritten, Step::TryNextWritten] {
        let dir = dir_with_config(Some(OLD));
        assert_eq!(
            try_apply_steps(dir.path(), NEW, WINDOW, T0, "a", Some(step)).unwrap(),
            None
        );
        // Power is back: the old config is what runs, no trial is pending.
        assert_eq!(check(dir.path(), T0).unwrap(), TrialState::None, "{step:?}");
        assert_eq!(active(dir.path()).as_deref(), Some(OLD), "{step:?}");
        // Recovery removed the stale staging files.
        assert_eq!(names(dir.path()), sorted(vec![CONFIG_FILE]), "{step:?}");
        // And the operator can simply try again.
        try_apply(dir.path(), NEW, WINDOW, T0 + 10, "a").unwrap();
        assert_eq!(active(dir.path()).as_deref(), Some(NEW), "{step:?}");
    }
}

#[test]
fn crash_after_the_marker_rolls_the_trial_forward() {
    let dir = dir_with_config(Some(OLD));
    assert_eq!(
        try_apply_steps(
            dir.path(),
            NEW,
            WINDOW,
            T0,
            "a",
            Some(Step::TryMarkerWritten)
        )
        .unwrap(),
        None
    );
    assert_eq!(
        names(dir.path()),
        sorted(vec![CONFIG_FILE, NEXT_FILE, PREV_FILE, TRIAL_FILE])
    );
    // Before recovery the files still hold a complete config (the old one) ...
    assert_eq!(fs::read(dir.path().join(CONFIG_FILE)).unwrap(), OLD);
    assert_eq!(
        check(dir.path(), T0).unwrap(),
        TrialState::Pending {
            deadline_unix_s: T0 + 300
        }
    );
    // ... and recovery finishes the rename, so the trial runs the new config.
    recover(dir.path()).unwrap();
    assert_eq!(
        names(dir.path()),
        sorted(vec![CONFIG_FILE, PREV_FILE, TRIAL_FILE])
    );
    assert_eq!(active(dir.path()).as_deref(), Some(NEW));
    // Both ends still work from here.
    revert(dir.path()).unwrap();
    assert_eq!(active(dir.path()).as_deref(), Some(OLD));

    let dir = dir_with_config(Some(OLD));
    try_apply_steps(
        dir.path(),
        NEW,
        WINDOW,
        T0,
        "a",
        Some(Step::TryMarkerWritten),
    )
    .unwrap();
    commit(dir.path(), T0 + 1).unwrap();
    assert_eq!(active(dir.path()).as_deref(), Some(NEW));
    assert_eq!(names(dir.path()), sorted(vec![CONFIG_FILE]));
}

#[test]
fn crash_during_commit_leaves_it_committed() {
    let dir = dir_with_config(Some(OLD));
    try_apply(dir.path(), NEW, WINDOW, T0, "a").unwrap();
    assert_eq!(
        commit_steps(dir.path(), T0 + 1, Some(Step::CommitMarkerRemoved)).unwrap(),
        None
    );
    assert_eq!(check(dir.path(), T0 + 1000).unwrap(), TrialState::None);
    assert_eq!(active(dir.path()).as_deref(), Some(NEW));
    assert_eq!(names(dir.path()), sorted(vec![CONFIG_FILE]));
}

#[test]
fn crash_during_revert_is_finished_by_recovery() {
    let dir = dir_with_config(Some(OLD));
    try_apply(dir.path(), NEW, WINDOW, T0, "a").unwrap();
    assert_eq!(
        revert_steps(dir.path(), Some(Step::RevertRestored)).unwrap(),
        None
    );
    // The old config is already in place; the marker is still there.
    assert_eq!(fs::read(dir.path().join(CONFIG_FILE)).unwrap(), OLD);
    assert_eq!(names(dir.path()), sorted(vec![CONFIG_FILE, TRIAL_FILE]));
    // A commit now must not "commit" the old config as the trial's: recovery ends the revert.
    assert!(matches!(
        commit(dir.path(), T0 + 1),
        Err(CommitError::NoTrial)
    ));
    assert_eq!(check(dir.path(), T0 + 1).unwrap(), TrialState::None);
    assert_eq!(active(dir.path()).as_deref(), Some(OLD));
    assert_eq!(names(dir.path()), sorted(vec![CONFIG_FILE]));

    // Same with no previous config.
    let dir = dir_with_config(None);
    try_apply(dir.path(), NEW, WINDOW, T0, "a").unwrap();
    revert_steps(dir.path(), Some(Step::RevertRestored)).unwrap();
    assert_eq!(names(dir.path()), sorted(vec![TRIAL_FILE]));
    recover(dir.path()).unwrap();
    assert!(names(dir.path()).is_empty());
}

#[test]
fn damaged_state_is_reported_and_left_alone() {
    // A previous config that no longer matches the marker is not restored blindly.
    let dir = dir_with_config(Some(OLD));
    try_apply(dir.path(), NEW, WINDOW, T0, "a").unwrap();
    fs::write(dir.path().join(PREV_FILE), b"garbled").unwrap();
    let err = revert(dir.path()).unwrap_err();
    assert!(
        matches!(err, RevertError::State(StateError::HashMismatch { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(PREV_FILE), "{err}");
    assert_eq!(fs::read(dir.path().join(CONFIG_FILE)).unwrap(), NEW);

    // A marker that is not ours.
    let dir = dir_with_config(Some(OLD));
    fs::write(dir.path().join(TRIAL_FILE), b"{\"version\": 1}").unwrap();
    let err = check(dir.path(), T0).unwrap_err();
    assert!(matches!(err, StateError::BadMarker { .. }), "{err}");
    assert!(err.to_string().contains(TRIAL_FILE), "{err}");
    let mut trial = Trial {
        version: 2,
        started_unix_s: T0,
        deadline_unix_s: T0 + 1,
        who: "a".into(),
        new_sha256: hex_sha256(NEW),
        prev_sha256: None,
    };
    fs::write(
        dir.path().join(TRIAL_FILE),
        serde_json::to_vec(&trial).unwrap(),
    )
    .unwrap();
    let err = check(dir.path(), T0).unwrap_err();
    assert!(err.to_string().contains("unknown version 2"), "{err}");
    trial.version = MARKER_VERSION;
    fs::write(
        dir.path().join(TRIAL_FILE),
        serde_json::to_vec(&trial).unwrap(),
    )
    .unwrap();
    assert_eq!(
        check(dir.path(), T0).unwrap(),
        TrialState::Pending {
            deadline_unix_s: T0 + 1
        }
    );
    // The config on disk is not the one the marker says is being tried: commit refuses.
    let err = commit(dir.path(), T0).unwrap_err();
    assert!(
        matches!(err, CommitError::State(StateError::HashMismatch { .. })),
        "{err}"
    );
}

#[test]
fn marker_records_who_and_when_as_json() {
    let dir = dir_with_config(Some(OLD));
    try_apply(dir.path(), NEW, WINDOW, T0, "cn=ops-laptop").unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join(TRIAL_FILE)).unwrap()).unwrap();
    assert_eq!(v["deadline_unix_s"], T0 + 300);
    assert_eq!(v["started_unix_s"], T0);
    assert_eq!(v["who"], "cn=ops-laptop");
    assert_eq!(v["version"], 1);
}

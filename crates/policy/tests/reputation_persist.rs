//! Persistence of bans and offender histories: journal, snapshot, corruption handling.

use portcullis_policy::persist::{
    self, Journal, SyncPolicy, JOURNAL_FILE, ROTATED_JOURNAL_FILE, SNAPSHOT_FILE,
};
use portcullis_policy::reputation::{
    Event, Increment, OffenseKind, Reputation, ReputationSettings, Verdict,
};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

mod common;
use common::{ip, net, MIN, T0};

fn settings() -> ReputationSettings {
    ReputationSettings {
        maxretry: 1,
        bantime_ms: 10 * MIN,
        increment: Some(Increment {
            factor: 2.0,
            multipliers: vec![],
            maxtime_ms: 0,
            rndtime_ms: 0,
        }),
        ..ReputationSettings::default()
    }
}

/// Opens `dir`, restores into a fresh engine, and returns both plus the load report.
fn reopen(dir: &Path, now: u64) -> (Journal, Reputation, persist::LoadReport) {
    let (journal, state, report) = Journal::open(dir, now).unwrap();
    let rep = Reputation::new(settings());
    rep.restore(state, now);
    (journal, rep, report)
}

/// A run that bans a client automatically, one by hand, and a network, journaling each event.
fn populate(journal: &mut Journal, rep: &Reputation) -> Vec<Event> {
    let mut events = vec![
        rep.offense(ip("192.0.2.1"), OffenseKind::Probe, 1, T0)
            .unwrap(),
        rep.ban(net("192.0.2.2/32"), 60 * MIN, "by hand", T0)
            .unwrap(),
        rep.ban(net("198.51.100.0/24"), 30 * MIN, "network", T0)
            .unwrap(),
        rep.offense(ip("192.0.2.3"), OffenseKind::RateLimit, 1, T0)
            .unwrap(),
    ];
    events.push(rep.unban(net("192.0.2.3/32"), T0 + 1).unwrap());
    for event in &events {
        journal.append(event).unwrap();
    }
    events
}

fn banned(rep: &Reputation, client: &str, now: u64) -> bool {
    matches!(rep.check(ip(client), now), Verdict::Banned { .. })
}

#[test]
fn journal_round_trip_restores_the_same_bans() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, rep, report) = reopen(dir.path(), T0);
    assert!(report.is_clean(), "{report:?}");
    populate(&mut journal, &rep);
    drop(journal); // like kill -9: nothing else is flushed

    let (_journal, restored, report) = reopen(dir.path(), T0 + 2);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.journal_records, 5);
    assert_eq!(restored.bans(T0 + 2), rep.bans(T0 + 2));
    assert!(banned(&restored, "192.0.2.1", T0 + 2));
    assert!(banned(&restored, "198.51.100.9", T0 + 2));
    assert!(!banned(&restored, "192.0.2.3", T0 + 2), "unban replayed");
    // History survives too: the next automatic ban of 192.0.2.3 is its second.
    match restored.offense(ip("192.0.2.3"), OffenseKind::Probe, 1, T0 + 3) {
        Some(Event::Banned { ban, .. }) => {
            assert_eq!(ban.ban_count, 2);
            assert_eq!(ban.until_ms - ban.created_ms, 20 * MIN);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn expired_bans_are_dropped_at_load_but_history_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, rep, _) = reopen(dir.path(), T0);
    populate(&mut journal, &rep);
    drop(journal);

    // 40 minutes later only the 60-minute manual ban is left.
    let later = T0 + 40 * MIN;
    let (_journal, restored, report) = reopen(dir.path(), later);
    assert_eq!(report.bans_loaded, 1);
    assert_eq!(report.bans_expired, 2);
    let bans = restored.bans(later);
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].net, net("192.0.2.2/32"));
    assert_eq!(
        restored.history(ip("192.0.2.1"), later).unwrap().ban_count,
        1
    );
}

#[test]
fn truncated_journal_keeps_earlier_records_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, rep, _) = reopen(dir.path(), T0);
    populate(&mut journal, &rep);
    drop(journal);

    // Cut the last record in half, as a torn write would.
    let path = dir.path().join(JOURNAL_FILE);
    let bytes = fs::read(&path).unwrap();
    let last_line_start = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    let cut = last_line_start + (bytes.len() - last_line_start) / 2;
    fs::write(&path, &bytes[..cut]).unwrap();

    let (mut journal, restored, report) = reopen(dir.path(), T0 + 2);
    assert!(report.journal_corrupt);
    assert_eq!(report.journal_records, 4);
    assert!(report.errors[0].contains("truncated"), "{report:?}");
    // The lost record was the unban of 192.0.2.3: it is still banned, all else intact.
    assert!(banned(&restored, "192.0.2.3", T0 + 2));
    assert!(banned(&restored, "192.0.2.1", T0 + 2));
    assert!(banned(&restored, "198.51.100.1", T0 + 2));
    assert!(dir.path().join(format!("{JOURNAL_FILE}.corrupt")).exists());

    // Appends after recovery are not stranded behind the bad bytes.
    journal
        .append(&restored.unban(net("192.0.2.1/32"), T0 + 3).unwrap())
        .unwrap();
    drop(journal);
    let (_journal, again, report) = reopen(dir.path(), T0 + 4);
    assert!(report.is_clean(), "{report:?}");
    assert!(!banned(&again, "192.0.2.1", T0 + 4));
    assert!(banned(&again, "192.0.2.3", T0 + 4));
}

#[test]
fn garbage_in_the_journal_is_reported_and_does_not_stop_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, rep, _) = reopen(dir.path(), T0);
    populate(&mut journal, &rep);
    drop(journal);
    let mut file = OpenOptions::new()
        .append(true)
        .open(dir.path().join(JOURNAL_FILE))
        .unwrap();
    file.write_all(b"\x00\xffnot a record at all\n\x13\x37")
        .unwrap();
    drop(file);

    let (_journal, restored, report) = reopen(dir.path(), T0 + 2);
    assert!(report.journal_corrupt);
    assert_eq!(report.journal_records, 5);
    assert_eq!(report.errors.len(), 1);
    assert_eq!(restored.bans(T0 + 2).len(), 3);

    // A flipped byte inside a record body fails its checksum.
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, rep, _) = reopen(dir.path(), T0);
    populate(&mut journal, &rep);
    drop(journal);
    let path = dir.path().join(JOURNAL_FILE);
    let mut bytes = fs::read(&path).unwrap();
    let first_newline = bytes.iter().position(|&b| b == b'\n').unwrap();
    bytes[first_newline + 30] ^= 0x20;
    fs::write(&path, &bytes).unwrap();
    let (_journal, restored, report) = reopen(dir.path(), T0 + 2);
    assert_eq!(report.journal_records, 1);
    assert!(report.errors[0].contains("checksum"), "{report:?}");
    assert_eq!(restored.bans(T0 + 2).len(), 1);
}

#[test]
fn snapshot_and_compaction_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, rep, _) = reopen(dir.path(), T0);
    journal.set_sync_policy(SyncPolicy::Manual);
    populate(&mut journal, &rep);
    journal.sync().unwrap();
    assert!(journal.journal_bytes() > 0);
    journal.snapshot(&rep, T0 + 1).unwrap();
    assert_eq!(journal.journal_bytes(), 0);
    assert_eq!(
        fs::metadata(dir.path().join(JOURNAL_FILE)).unwrap().len(),
        0
    );
    // Events after the snapshot go to the fresh journal.
    journal
        .append(
            &rep.ban(net("203.0.113.0/24"), MIN, "later", T0 + 2)
                .unwrap(),
        )
        .unwrap();
    drop(journal);

    let (state, report) = persist::load(dir.path(), T0 + 3);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.journal_records, 1);
    assert!(report.snapshot_records >= 4);
    let restored = Reputation::new(settings());
    let restore = restored.restore(state, T0 + 3);
    assert_eq!(restore.bans_restored, 4);
    assert_eq!(restored.bans(T0 + 3), rep.bans(T0 + 3));
    for client in ["192.0.2.1", "192.0.2.3"] {
        assert_eq!(
            restored.history(ip(client), T0 + 3).unwrap().ban_count,
            1,
            "{client}"
        );
    }
    // Sequence numbers continue after the restored ones.
    let next = restored
        .ban(net("203.0.113.5/32"), MIN, "x", T0 + 3)
        .unwrap();
    let max_before = rep.export(T0 + 3).bans.iter().map(|b| b.seq).max().unwrap();
    assert!(next.seq() > max_before);
}

#[test]
fn corrupt_snapshot_falls_back_to_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, rep, _) = reopen(dir.path(), T0);
    rep.offense(ip("192.0.2.1"), OffenseKind::Probe, 1, T0)
        .unwrap();
    journal.snapshot(&rep, T0).unwrap();
    let later = rep
        .ban(net("192.0.2.2/32"), 60 * MIN, "after snapshot", T0 + 1)
        .unwrap();
    journal.append(&later).unwrap();
    drop(journal);
    fs::write(dir.path().join(SNAPSHOT_FILE), b"\xde\xad\xbe\xef garbage").unwrap();

    let (_journal, restored, report) = reopen(dir.path(), T0 + 2);
    assert!(report.snapshot_corrupt);
    assert!(!report.journal_corrupt);
    assert_eq!(report.snapshot_records, 0);
    assert!(banned(&restored, "192.0.2.2", T0 + 2));
    assert!(
        !banned(&restored, "192.0.2.1", T0 + 2),
        "lost with the snapshot"
    );
    assert!(dir.path().join(format!("{SNAPSHOT_FILE}.corrupt")).exists());
}

#[test]
fn truncated_snapshot_keeps_its_valid_prefix_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, rep, _) = reopen(dir.path(), T0);
    populate(&mut journal, &rep);
    journal.snapshot(&rep, T0 + 1).unwrap();
    drop(journal);
    let path = dir.path().join(SNAPSHOT_FILE);
    let bytes = fs::read(&path).unwrap();
    // Drop the end record only: every ban record is intact but the file is incomplete.
    let end_start = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    fs::write(&path, &bytes[..end_start]).unwrap();
    let (_journal, restored, report) = reopen(dir.path(), T0 + 2);
    assert!(report.snapshot_corrupt);
    assert!(report.errors[0].contains("end record"), "{report:?}");
    assert_eq!(restored.bans(T0 + 2), rep.bans(T0 + 2));
}

#[test]
fn replay_orders_by_sequence_not_by_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, rep, _) = reopen(dir.path(), T0);
    let ban = rep.ban(net("192.0.2.9/32"), MIN, "x", T0).unwrap();
    let unban = rep.unban(net("192.0.2.9/32"), T0 + 1).unwrap();
    // The writer thread received them in the wrong order.
    journal.append(&unban).unwrap();
    journal.append(&ban).unwrap();
    drop(journal);
    let (_journal, restored, _) = reopen(dir.path(), T0 + 2);
    assert!(!banned(&restored, "192.0.2.9", T0 + 2));
}

#[test]
fn missing_state_dir_is_created_and_empty() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("nested/state");
    let (_journal, state, report) = Journal::open(&state_dir, T0).unwrap();
    assert!(report.is_clean());
    assert!(state.bans.is_empty() && state.histories.is_empty());
    assert!(state_dir.join(SNAPSHOT_FILE).exists());
}

/// A populated journal in the middle of a compaction (rotated, snapshot not yet written), with
/// one more ban journaled after the rotation.
fn mid_compaction(dir: &Path) -> (Journal, Reputation, persist::Rotated) {
    let (mut journal, rep, _) = reopen(dir, T0);
    populate(&mut journal, &rep);
    let rotated = journal.rotate().unwrap();
    assert_eq!(
        journal.journal_bytes(),
        0,
        "the rotation starts a fresh journal"
    );
    assert!(dir.join(ROTATED_JOURNAL_FILE).exists());
    let event = rep
        .ban(net("203.0.113.0/24"), MIN, "later", T0 + 2)
        .unwrap();
    journal.append(&event).unwrap();
    (journal, rep, rotated)
}

#[test]
fn a_crash_between_rotation_and_snapshot_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, rep, rotated) = mid_compaction(dir.path());
    drop((journal, rotated)); // like kill -9 before the snapshot is written

    let (_journal, restored, report) = reopen(dir.path(), T0 + 3);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.journal_records, 6, "5 rotated + 1 fresh");
    assert_eq!(restored.bans(T0 + 3), rep.bans(T0 + 3));
    assert!(!banned(&restored, "192.0.2.3", T0 + 3), "unban replayed");
    // Opening compacted both files into the snapshot.
    assert!(!dir.path().join(ROTATED_JOURNAL_FILE).exists());
}

#[test]
fn appends_go_on_while_a_snapshot_is_written() {
    let dir = tempfile::tempdir().unwrap();
    // Appends between the halves (the writer thread holds no lock while it writes the
    // snapshot), then a state exported after the rotation.
    let (journal, rep, rotated) = mid_compaction(dir.path());
    let old = fs::read(dir.path().join(ROTATED_JOURNAL_FILE)).unwrap();
    rotated.finish(&rep.export(T0 + 2)).unwrap();
    assert!(!dir.path().join(ROTATED_JOURNAL_FILE).exists());
    drop(journal);

    let (state, report) = persist::load(dir.path(), T0 + 3);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        report.journal_records, 1,
        "only the append after the rotation"
    );
    let restored = Reputation::new(settings());
    restored.restore(state, T0 + 3);
    assert_eq!(restored.bans(T0 + 3), rep.bans(T0 + 3));

    // A crash after the snapshot but before the rotated file was removed replays it again,
    // harmlessly: sequence numbers keep the newer state.
    fs::write(dir.path().join(ROTATED_JOURNAL_FILE), old).unwrap();
    let (_journal, again, report) = reopen(dir.path(), T0 + 3);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(again.bans(T0 + 3), rep.bans(T0 + 3));
    assert!(!banned(&again, "192.0.2.3", T0 + 3));
}

#[test]
fn a_corrupt_rotated_journal_is_reported_and_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, rep, unfinished) = mid_compaction(dir.path());
    drop((journal, unfinished));
    let mut file = OpenOptions::new()
        .append(true)
        .open(dir.path().join(ROTATED_JOURNAL_FILE))
        .unwrap();
    file.write_all(b"garbage\n").unwrap();
    drop(file);

    let (_journal, restored, report) = reopen(dir.path(), T0 + 3);
    assert!(report.rotated_journal_corrupt, "{report:?}");
    assert!(!report.journal_corrupt);
    assert!(
        report.errors[0].starts_with("rotated journal:"),
        "{report:?}"
    );
    assert_eq!(
        restored.bans(T0 + 3),
        rep.bans(T0 + 3),
        "every valid record kept"
    );
    let aside = format!("{ROTATED_JOURNAL_FILE}.corrupt");
    assert!(dir.path().join(aside).exists());
}

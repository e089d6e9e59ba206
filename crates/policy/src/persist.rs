//! Persistence of bans and offender histories: a write-ahead journal plus periodic snapshots.
//!
//! # Files (under `state_dir`)
//!
//! * `reputation.journal`: append-only; one record per [`Event`].
//! * `reputation.journal.old`: during a compaction, the journal as it was when the compaction
//!   began; removed once a snapshot covering it is written.
//! * `reputation.snapshot`: the full state (active bans, offender histories) followed by an
//!   `end` record holding the record count, so a truncated snapshot is detected.
//!
//! A compaction has a quick half and a slow half. [`Journal::rotate`] renames the journal to
//! `reputation.journal.old` and opens a fresh one (two metadata operations: cheap enough to do
//! while appenders wait). [`Rotated::finish`] then writes the state, exported after the
//! rotation, as `reputation.snapshot.tmp`, fsyncs it, renames it over the old snapshot, fsyncs
//! the directory, and only then removes `reputation.journal.old`; appends to the fresh journal
//! go on meanwhile. Loading reads the snapshot, then `.old`, then the journal, so a crash at any
//! point leaves every record readable, and records a snapshot already holds replay
//! idempotently.
//!
//! # Record format
//!
//! One line per record: `LLLLLLLL CCCCCCCC {json}\n`, where `LLLLLLLL` is the byte length of
//! the JSON text and `CCCCCCCC` its CRC-32 (IEEE, via `crc32fast`), both as 8 lower-case hex
//! digits. JSON keeps the files greppable; the length and CRC catch torn writes and bit rot.
//!
//! # Replay
//!
//! Every mutation carries a global sequence number; per network (bans) and per client
//! (histories) the record with the highest sequence number wins. Events reach the writer
//! thread through a channel possibly out of order, and a snapshot may already contain some
//! journaled events: both are harmless under this rule.
//!
//! # Loading never fails start-up
//!
//! A bad record (short, bad header, bad CRC, bad JSON) stops reading that file: the records
//! before it are kept and the problem is reported in [`LoadReport`]. A corrupt snapshot keeps
//! its valid prefix and the journal is replayed over it. Corrupt files are kept aside as
//! `*.corrupt` for inspection and a fresh snapshot of what was loaded is written at once, so
//! new appends never land behind garbage. Expired bans are dropped at load.
//!
//! # Durability (fsync policy)
//!
//! [`Journal::append`] hands each record to the kernel with one `write` call before returning,
//! which is all a `kill -9` needs: data in the page cache survives the death of the process.
//! Against power loss, [`SyncPolicy::EveryRecord`] (the default) also calls `fdatasync` after
//! every record; bans are rare compared with requests, and the call happens on the writer
//! thread, never on the request path. [`SyncPolicy::Manual`] leaves syncing to the caller:
//! a writer that drains its channel, appends everything, then calls [`Journal::sync`] once
//! gets group commit with the same guarantee for everything it acknowledged.
//!
//! Export the state for [`Rotated::finish`] only after [`Journal::rotate`] returned, from
//! a reputation table that applies every event before the event is appended (so everything in
//! the rotated file is in the export). [`Journal::snapshot`] does both halves in one call.
//!
//! # Wiring (sketch)
//!
//! ```no_run
//! use portcullis_policy::persist::{Journal, SyncPolicy};
//! use portcullis_policy::reputation::{Event, Reputation, ReputationSettings};
//! use std::sync::{mpsc, Arc};
//!
//! # fn now_ms() -> u64 { 0 }
//! let (mut journal, state, report) = Journal::open("/var/lib/portcullis".as_ref(), now_ms())?;
//! for problem in &report.errors { eprintln!("reputation state: {problem}"); }
//! let reputation = Arc::new(Reputation::new(ReputationSettings::default()));
//! reputation.restore(state, now_ms());
//! let (events, inbox) = mpsc::channel::<Event>();
//! let rep = Arc::clone(&reputation);
//! std::thread::spawn(move || {
//!     journal.set_sync_policy(SyncPolicy::Manual);
//!     while let Ok(first) = inbox.recv() {
//!         // Group commit: append whatever is queued, then one fdatasync.
//!         for event in std::iter::once(first).chain(inbox.try_iter()) {
//!             let _ = journal.append(&event);
//!         }
//!         let _ = journal.sync();
//!         if journal.needs_compaction() {
//!             let _ = journal.snapshot(&rep, now_ms());
//!         }
//!     }
//! });
//! // Request path: `if let Some(e) = reputation.offense(..) { let _ = events.send(e); }`
//! # drop(events);
//! # Ok::<(), std::io::Error>(())
//! ```

use crate::reputation::{BanInfo, Event, PersistentState, Reputation, StoredBan, StoredHistory};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// File name of the journal inside the state directory.
pub const JOURNAL_FILE: &str = "reputation.journal";
/// File name of the journal being compacted (see [`Journal::rotate`]).
pub const ROTATED_JOURNAL_FILE: &str = "reputation.journal.old";
/// File name of the snapshot inside the state directory.
pub const SNAPSHOT_FILE: &str = "reputation.snapshot";
/// Temporary name the snapshot is written under before the atomic rename.
pub const SNAPSHOT_TMP_FILE: &str = "reputation.snapshot.tmp";
/// Journal size beyond which [`Journal::needs_compaction`] answers true.
const COMPACTION_BYTES: u64 = 16 * 1024 * 1024;
/// Length of `LLLLLLLL CCCCCCCC ` (two hex fields and two spaces).
const HEADER_LEN: usize = 18;

/// When the journal calls `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// After every appended record.
    #[default]
    EveryRecord,
    /// Only when [`Journal::sync`] is called.
    Manual,
}

/// One line of the journal or snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A ban was made; for a single client it also carries the client's ban count.
    Ban(StoredBan),
    /// A ban was lifted or expired.
    Unban {
        /// Sequence number of the mutation.
        seq: u64,
        /// The client or network.
        net: IpNet,
        /// When.
        at_ms: u64,
    },
    /// An offender's ban history (snapshots only).
    History(StoredHistory),
    /// Last record of a snapshot: how many records precede it.
    End {
        /// Number of records before this one.
        records: u64,
    },
}

impl From<&Event> for Record {
    fn from(event: &Event) -> Self {
        match event {
            Event::Banned { seq, ban } => Record::Ban(StoredBan {
                seq: *seq,
                ban: ban.clone(),
            }),
            Event::Unbanned {
                seq, net, at_ms, ..
            } => Record::Unban {
                seq: *seq,
                net: *net,
                at_ms: *at_ms,
            },
        }
    }
}

/// What loading found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Valid records read from the snapshot.
    pub snapshot_records: usize,
    /// Valid records read from the journal (and the rotated journal, if one was left).
    pub journal_records: usize,
    /// Active bans loaded.
    pub bans_loaded: usize,
    /// Bans dropped because they had expired.
    pub bans_expired: usize,
    /// Offender histories loaded.
    pub histories_loaded: usize,
    /// True when the snapshot was unreadable, corrupt or truncated.
    pub snapshot_corrupt: bool,
    /// True when the journal had a bad or truncated record.
    pub journal_corrupt: bool,
    /// True when the rotated journal of an unfinished compaction had a bad or truncated record.
    pub rotated_journal_corrupt: bool,
    /// Human-readable description of every problem.
    pub errors: Vec<String>,
}

impl LoadReport {
    /// True when nothing went wrong.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

/// The append side of the persistence: owned by one writer thread.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    file: File,
    sync: SyncPolicy,
    bytes: u64,
}

impl Journal {
    /// Opens (creating if needed) the state in `dir`, loads what can be read, compacts it into
    /// a fresh snapshot and returns the journal ready for appends. Only errors that make
    /// persisting impossible (cannot create or write the directory) are returned; corrupt
    /// content is reported in the [`LoadReport`].
    pub fn open(dir: &Path, now_ms: u64) -> io::Result<(Journal, PersistentState, LoadReport)> {
        fs::create_dir_all(dir)?;
        let (state, report) = load(dir, now_ms);
        if report.snapshot_corrupt {
            keep_aside(dir, SNAPSHOT_FILE)?;
        }
        if report.journal_corrupt {
            keep_aside(dir, JOURNAL_FILE)?;
        }
        if report.rotated_journal_corrupt {
            keep_aside(dir, ROTATED_JOURNAL_FILE)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(JOURNAL_FILE))?;
        let mut journal = Journal {
            dir: dir.to_path_buf(),
            file,
            sync: SyncPolicy::default(),
            bytes: 0,
        };
        // Start every run from a snapshot and an empty journal: bounded replay next time, and
        // appends never follow a bad record.
        journal.write_snapshot(&state)?;
        Ok((journal, state, report))
    }

    /// Chooses when to `fdatasync`.
    pub fn set_sync_policy(&mut self, sync: SyncPolicy) {
        self.sync = sync;
    }

    /// Appends `event` (one `write` call; survives `kill -9` once this returns) and syncs it
    /// according to the [`SyncPolicy`].
    pub fn append(&mut self, event: &Event) -> io::Result<()> {
        let line = encode(&Record::from(event))?;
        self.file.write_all(&line)?;
        self.bytes += line.len() as u64;
        if self.sync == SyncPolicy::EveryRecord {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Flushes appended records to stable storage (`fdatasync`).
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// A second handle on the journal file, to `fdatasync` it without holding whatever guards
    /// the appends (records appended through `self` before the sync are covered).
    pub fn sync_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Bytes appended since the last snapshot.
    pub fn journal_bytes(&self) -> u64 {
        self.bytes
    }

    /// True when the journal has grown enough to be worth compacting into a snapshot.
    pub fn needs_compaction(&self) -> bool {
        self.bytes >= COMPACTION_BYTES
    }

    /// Writes a snapshot of `reputation` and empties the journal: [`Journal::rotate`], then
    /// [`Rotated::finish`] with the state exported in between.
    pub fn snapshot(&mut self, reputation: &Reputation, now_ms: u64) -> io::Result<()> {
        let rotated = self.rotate()?;
        rotated.finish(&reputation.export(now_ms))
    }

    /// The quick half of a compaction: moves the records appended so far to
    /// `reputation.journal.old` and appends to a fresh journal from now on. If an earlier
    /// compaction did not finish, its `.old` file is kept and the journal is left as it is
    /// (the next snapshot still covers both; a later rotation moves the journal).
    pub fn rotate(&mut self) -> io::Result<Rotated> {
        let rotated = Rotated {
            dir: self.dir.clone(),
        };
        let old = self.dir.join(ROTATED_JOURNAL_FILE);
        if old.exists() {
            return Ok(rotated);
        }
        let path = self.dir.join(JOURNAL_FILE);
        fs::rename(&path, &old)?;
        match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(file) => {
                self.file = file;
                self.bytes = 0;
                Ok(rotated)
            }
            Err(e) => {
                // Keep appending where the records are: back to the old name.
                let _ = fs::rename(&old, &path);
                Err(e)
            }
        }
    }

    /// Writes `state` as the snapshot (atomically), truncates the journal and removes a
    /// rotated one.
    pub fn write_snapshot(&mut self, state: &PersistentState) -> io::Result<()> {
        write_snapshot_file(&self.dir, state)?;
        self.file.set_len(0)?;
        self.file.sync_all()?;
        remove_if_present(&self.dir.join(ROTATED_JOURNAL_FILE))?;
        self.bytes = 0;
        Ok(())
    }
}

/// A compaction between its halves: the journal has been rotated, the snapshot not yet
/// written. Dropping it without [`Rotated::finish`] loses nothing (loading reads the rotated
/// journal); the next compaction covers it.
#[derive(Debug)]
#[must_use = "a rotated journal is only removed by finish()"]
pub struct Rotated {
    dir: PathBuf,
}

impl Rotated {
    /// The slow half of a compaction, needing no lock on the journal: writes `state` as the
    /// snapshot (atomically, fsync'd) and removes the rotated journal. `state` must have been
    /// exported after [`Journal::rotate`] returned.
    pub fn finish(self, state: &PersistentState) -> io::Result<()> {
        write_snapshot_file(&self.dir, state)?;
        remove_if_present(&self.dir.join(ROTATED_JOURNAL_FILE))
    }
}

/// Writes `state` as the snapshot: temporary file, fsync, rename, directory fsync.
fn write_snapshot_file(dir: &Path, state: &PersistentState) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut records = 0u64;
    for history in &state.histories {
        buf.extend_from_slice(&encode(&Record::History(history.clone()))?);
        records += 1;
    }
    for ban in &state.bans {
        buf.extend_from_slice(&encode(&Record::Ban(ban.clone()))?);
        records += 1;
    }
    buf.extend_from_slice(&encode(&Record::End { records })?);
    let tmp = dir.join(SNAPSHOT_TMP_FILE);
    {
        let mut file = File::create(&tmp)?;
        file.write_all(&buf)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    sync_dir(dir)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Reads the state in `dir` without opening it for writing: the snapshot, then the journal
/// replayed over it. Never fails; problems are in the report.
pub fn load(dir: &Path, now_ms: u64) -> (PersistentState, LoadReport) {
    let mut report = LoadReport::default();
    let mut replay = Replay::default();

    match read_optional(&dir.join(SNAPSHOT_FILE)) {
        Ok(Some(bytes)) => {
            let parsed = parse(&bytes);
            let mut count = parsed.records.len();
            let mut ended = false;
            for record in parsed.records {
                if let Record::End { records } = record {
                    count -= 1;
                    ended = records as usize == count;
                    if !ended {
                        report.errors.push(format!(
                            "snapshot: end record counts {records} records, found {count}"
                        ));
                    }
                    break;
                }
                replay.apply(record);
            }
            report.snapshot_records = count;
            if let Some(err) = parsed.error {
                report.errors.push(format!("snapshot: {err}"));
            } else if !ended {
                report
                    .errors
                    .push("snapshot: missing end record (truncated)".to_string());
            }
            report.snapshot_corrupt = !ended || !report.errors.is_empty();
        }
        Ok(None) => {}
        Err(e) => {
            report.snapshot_corrupt = true;
            report.errors.push(format!("snapshot: {e}"));
        }
    }

    // An unfinished compaction's rotated journal holds older records than the journal.
    for (name, label) in [
        (ROTATED_JOURNAL_FILE, "rotated journal"),
        (JOURNAL_FILE, "journal"),
    ] {
        let problem = match read_optional(&dir.join(name)) {
            Ok(Some(bytes)) => {
                let parsed = parse(&bytes);
                report.journal_records += parsed.records.len();
                for record in parsed.records {
                    replay.apply(record);
                }
                parsed.error
            }
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        };
        if let Some(err) = problem {
            report.errors.push(format!("{label}: {err}"));
            if name == JOURNAL_FILE {
                report.journal_corrupt = true;
            } else {
                report.rotated_journal_corrupt = true;
            }
        }
    }

    let state = replay.finish(now_ms, &mut report);
    (state, report)
}

/// Last-writer-wins (by sequence number) accumulation of records.
#[derive(Default)]
struct Replay {
    bans: HashMap<IpNet, (u64, Option<BanInfo>)>,
    histories: HashMap<IpAddr, StoredHistory>,
}

impl Replay {
    fn apply(&mut self, record: Record) {
        match record {
            Record::Ban(StoredBan { seq, ban }) => {
                // Only client-key bans carry a ban count (CIDR bans have 0).
                if ban.ban_count > 0 {
                    self.history(StoredHistory {
                        seq,
                        client: ban.net.network(),
                        ban_count: ban.ban_count,
                        last_ban_end_ms: ban.until_ms,
                    });
                }
                self.ban(seq, ban.net, Some(ban));
            }
            // An early unban leaves the history's end at the planned ban end: remembering
            // the offender slightly longer is harmless.
            Record::Unban { seq, net, .. } => self.ban(seq, net, None),
            Record::History(h) => self.history(h),
            Record::End { .. } => {}
        }
    }

    fn ban(&mut self, seq: u64, net: IpNet, ban: Option<BanInfo>) {
        match self.bans.get(&net) {
            Some((existing, _)) if *existing > seq => {}
            _ => {
                self.bans.insert(net, (seq, ban));
            }
        }
    }

    fn history(&mut self, h: StoredHistory) {
        match self.histories.get(&h.client) {
            Some(existing) if existing.seq > h.seq => {}
            _ => {
                self.histories.insert(h.client, h);
            }
        }
    }

    fn finish(self, now_ms: u64, report: &mut LoadReport) -> PersistentState {
        let mut state = PersistentState::default();
        for (seq, ban) in self.bans.into_values() {
            match ban {
                Some(ban) if ban.until_ms > now_ms => state.bans.push(StoredBan { seq, ban }),
                Some(_) => report.bans_expired += 1,
                None => {}
            }
        }
        state.bans.sort_by_key(|b| b.seq);
        state.histories = self.histories.into_values().collect();
        state.histories.sort_by_key(|h| h.seq);
        report.bans_loaded = state.bans.len();
        report.histories_loaded = state.histories.len();
        state
    }
}

/// Records decoded from a file, and the first problem that stopped decoding.
struct Parsed {
    records: Vec<Record>,
    error: Option<String>,
}

/// Decodes records until the end or the first bad one.
fn parse(bytes: &[u8]) -> Parsed {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        match decode_at(bytes, pos) {
            Ok((record, next)) => {
                records.push(record);
                pos = next;
            }
            Err(problem) => {
                return Parsed {
                    records,
                    error: Some(format!(
                        "{problem} at byte {pos}; {} trailing bytes ignored",
                        bytes.len() - pos
                    )),
                }
            }
        }
    }
    Parsed {
        records,
        error: None,
    }
}

/// Decodes the record starting at `pos`; returns it and the position after it.
fn decode_at(bytes: &[u8], pos: usize) -> Result<(Record, usize), String> {
    let rest = &bytes[pos..];
    if rest.len() < HEADER_LEN {
        return Err("truncated record header".to_string());
    }
    let header = &rest[..HEADER_LEN];
    if header[8] != b' ' || header[17] != b' ' {
        return Err("malformed record header".to_string());
    }
    let len = hex_u32(&header[..8]).ok_or("malformed record length")? as usize;
    let crc = hex_u32(&header[9..17]).ok_or("malformed record checksum")?;
    let body_end = HEADER_LEN
        .checked_add(len)
        .ok_or("record length overflow")?;
    if rest.len() < body_end + 1 {
        return Err(format!("truncated record (needs {len} bytes of body)"));
    }
    let body = &rest[HEADER_LEN..body_end];
    if rest[body_end] != b'\n' {
        return Err("record not terminated by a newline".to_string());
    }
    if crc32fast::hash(body) != crc {
        return Err("record checksum mismatch".to_string());
    }
    let record = serde_json::from_slice(body).map_err(|e| format!("undecodable record: {e}"))?;
    Ok((record, pos + body_end + 1))
}

/// Parses exactly eight lower- or upper-case hex digits.
fn hex_u32(digits: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(digits).ok()?;
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

/// Encodes one record as a line.
fn encode(record: &Record) -> io::Result<Vec<u8>> {
    let body = serde_json::to_vec(record).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("record too large"))?;
    let mut line = format!("{len:08x} {:08x} ", crc32fast::hash(&body)).into_bytes();
    line.extend_from_slice(&body);
    line.push(b'\n');
    Ok(line)
}

/// The file's content, or `None` if it does not exist.
fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Renames a corrupt file to `<name>.corrupt` (replacing an older one) so it can be inspected.
fn keep_aside(dir: &Path, name: &str) -> io::Result<()> {
    match fs::rename(dir.join(name), dir.join(format!("{name}.corrupt"))) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_line_round_trips() {
        let record = Record::End { records: 3 };
        let line = encode(&record).unwrap();
        let (back, next) = decode_at(&line, 0).unwrap();
        assert_eq!(back, record);
        assert_eq!(next, line.len());
    }

    #[test]
    fn flipped_bit_is_detected() {
        let mut line = encode(&Record::End { records: 3 }).unwrap();
        let last = line.len() - 3;
        line[last] ^= 0x01;
        assert!(decode_at(&line, 0).unwrap_err().contains("checksum"));
    }
}

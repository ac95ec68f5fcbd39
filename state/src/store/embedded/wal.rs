//! The embedded store's write-ahead log: what makes a change durable.
//!
//! A commit appends one record (every change of its group) to the current segment file and
//! fsyncs it: a few sequential writes, where a redb transaction of the same changes walked and
//! copied B-tree pages for each key (20,000 runner records: ~35 ms of inserts before the fsync).
//! The redb file is brought up to date from the log later, off the writers' path: when a segment
//! has grown past [`SEGMENT_BYTES`] it is closed, a new one takes the appends, and a checkpoint
//! applies the closed segments to redb in one transaction each and deletes them. Opening the
//! store applies whatever segments a stop or a crash left, so memory is always loaded from redb.
//!
//! A segment is `fleet.wal.<sequence>`: a magic line, then records of
//! `[payload length: u32][crc32 of the payload: u32][payload]`. A payload is the group's batches,
//! each `[revision][ended lease or 0][writes]`, a write `[key][0: delete | 1: put, entry]`, an
//! entry as redb keeps it (see `super::encode`). Every batch carries its revision and redb keeps
//! the newest applied (`META.revision`), so a segment applied twice (a crash between a
//! checkpoint's commit and the segment's deletion) changes nothing the second time. A record cut
//! short or failing its checksum can only be the last one written (each append is fsynced before
//! the next begins, and the commit it carries was never acknowledged): replay stops there.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable};

use super::{Batch, KV, LEASES, META, REVISION, decode, encode_into, io};
use crate::store::{LeaseId, Revision, StoreError, StoreResult};

/// A segment past this size is closed at its next append and checkpointed into redb. Bounds what
/// an open replays and the disk the log holds (this, plus one segment being checkpointed).
pub(super) const SEGMENT_BYTES: u64 = 16 << 20;

const MAGIC: &[u8; 8] = b"FLEETWAL";
const PREFIX: &str = "fleet.wal.";

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{seq:020}"))
}

/// The segments in `dir`, oldest first.
fn segments(dir: &Path) -> StoreResult<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| StoreError::Io(format!("cannot list {}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(seq) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)).and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        found.push((seq, entry.path()));
    }
    found.sort();
    Ok(found)
}

fn sync_dir(dir: &Path) -> StoreResult<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::Io(format!("cannot sync {}: {e}", dir.display())))
}

/// The segment that takes the appends.
pub(super) struct Log {
    dir: PathBuf,
    file: File,
    seq: u64,
    len: u64,
    /// Set when a failed append could not be undone: the segment may end in bytes no commit owns,
    /// and anything appended after them would be lost to a replay. Every later commit fails.
    broken: Option<String>,
}

impl Log {
    /// Starts segment `seq` in `dir` (which must hold none of that number).
    pub(super) fn create(dir: &Path, seq: u64) -> StoreResult<Log> {
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", path.display())))?;
        file.write_all_at(MAGIC, 0).and_then(|()| file.sync_data()).map_err(io)?;
        // The new name must survive a crash as much as what is appended to it.
        sync_dir(dir)?;
        Ok(Log { dir: dir.to_path_buf(), file, seq, len: MAGIC.len() as u64, broken: None })
    }

    /// Appends the batches as one record and fsyncs it: durable when this returns `Ok`. On an
    /// error nothing of the record is kept (it is cut off again), or the log refuses every later
    /// append.
    pub(super) fn append(&mut self, batches: &[Batch]) -> StoreResult<()> {
        if let Some(why) = &self.broken {
            return Err(StoreError::Io(format!("the store's log cannot be written ({why}): restart fleetd")));
        }
        let record = record(batches);
        let written = self.file.write_all_at(&record, self.len).and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += record.len() as u64;
                Ok(())
            }
            Err(e) => {
                let undone = self.file.set_len(self.len).and_then(|()| self.file.sync_data());
                if let Err(u) = undone {
                    self.broken = Some(format!("{e}, then {u} cutting the record off"));
                }
                Err(StoreError::Io(format!("cannot write the store's log: {e}")))
            }
        }
    }

    /// Whether the segment is due to be closed and checkpointed.
    pub(super) fn full(&self) -> bool {
        self.len >= SEGMENT_BYTES
    }

    /// Closes this segment and starts the next; returns the number of the new one (every
    /// segment below it is closed: complete, nothing more appended).
    pub(super) fn rotate(&mut self) -> StoreResult<u64> {
        *self = Log::create(&self.dir, self.seq + 1)?;
        Ok(self.seq)
    }
}

/// The encoded record of a group of batches:
///
/// ```text
/// [u32 len][u32 crc32]  of the payload:
///   [u32 batches] then per batch [i64 revision][i64 lease ended, 0 = none][u32 writes]
///     then per write [u32 key len][key][u8 0 = delete | 1 = put, then [u32 entry len][entry]]
/// ```
fn record(batches: &[Batch]) -> Vec<u8> {
    // Only a capacity hint (a wrong one costs a reallocation, never a wrong record): the layout
    // above, with an entry being 24 bytes of revisions and lease before its value.
    let size: usize = batches
        .iter()
        .map(|b| {
            20 + b.writes.iter().map(|(k, e)| 5 + k.len() + e.as_ref().map_or(0, |e| 28 + e.value.len())).sum::<usize>()
        })
        .sum();
    let mut out = Vec::with_capacity(8 + 4 + size);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&(batches.len() as u32).to_le_bytes());
    for b in batches {
        out.extend_from_slice(&b.revision.to_le_bytes());
        out.extend_from_slice(&b.lease_end.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&(b.writes.len() as u32).to_le_bytes());
        for (key, e) in &b.writes {
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key.as_bytes());
            match e {
                None => out.push(0),
                Some(e) => {
                    out.push(1);
                    out.extend_from_slice(&(24 + e.value.len() as u32).to_le_bytes());
                    encode_into(e, &mut out);
                }
            }
        }
    }
    let payload = &out[8..];
    let (len, crc) = (payload.len() as u32, crc32fast::hash(payload));
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// One batch read back from the log; an entry as its encoded bytes (what redb keeps).
struct Replayed<'a> {
    revision: Revision,
    lease_end: Option<LeaseId>,
    writes: Vec<(&'a str, Option<&'a [u8]>)>,
}

/// Reads a record's payload; `None` if it is malformed.
fn parse<'a>(mut p: &'a [u8], out: &mut Vec<Replayed<'a>>) -> Option<()> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = p.split_at_checked(n)?;
        *p = rest;
        Some(head)
    }
    fn u32_(p: &mut &[u8]) -> Option<u32> {
        Some(u32::from_le_bytes(take(p, 4)?.try_into().ok()?))
    }
    fn i64_(p: &mut &[u8]) -> Option<i64> {
        Some(i64::from_le_bytes(take(p, 8)?.try_into().ok()?))
    }
    let p = &mut p;
    for _ in 0..u32_(p)? {
        let revision = i64_(p)?;
        let lease = i64_(p)?;
        let n = u32_(p)? as usize;
        let mut writes = Vec::with_capacity(n.min(p.len() / 5));
        for _ in 0..n {
            let klen = u32_(p)? as usize;
            let key = std::str::from_utf8(take(p, klen)?).ok()?;
            let entry = match take(p, 1)?[0] {
                0 => None,
                1 => {
                    let elen = u32_(p)? as usize;
                    Some(take(p, elen)?)
                }
                _ => return None,
            };
            writes.push((key, entry));
        }
        out.push(Replayed { revision, lease_end: (lease != 0).then_some(lease), writes });
    }
    p.is_empty().then_some(())
}

/// Applies the closed segments below `below` to redb, one transaction each, oldest first, and
/// deletes each once it is in. What redb already has (batches at or below its revision) is
/// skipped. `at_open`: the newest segment may end in a torn record (the crash cut its append
/// short): replay stops there. Anywhere else a bad record is corruption, and nothing after it is
/// applied. Returns the highest segment number seen (0: none).
pub(super) fn checkpoint(db: &Database, dir: &Path, below: u64, at_open: bool) -> StoreResult<u64> {
    let found: Vec<(u64, PathBuf)> = segments(dir)?.into_iter().filter(|(seq, _)| *seq < below).collect();
    let newest = found.last().map_or(0, |(seq, _)| *seq);
    for (seq, path) in &found {
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| StoreError::Io(format!("cannot read {}: {e}", path.display())))?;
        let corrupt = |detail: String| StoreError::Corrupt { key: path.display().to_string(), detail };
        if !bytes.starts_with(MAGIC) {
            // A crash between creating a segment and syncing its header leaves it empty.
            if at_open && *seq == newest && bytes.len() < MAGIC.len() && MAGIC.starts_with(&bytes) {
                std::fs::remove_file(path).map_err(io)?;
                continue;
            }
            return Err(corrupt("not a fleet store log segment".into()));
        }
        let mut batches = Vec::new();
        let mut at = MAGIC.len();
        while at < bytes.len() {
            let torn = |what: &str| format!("{what} at byte {at} of {}", bytes.len());
            let header = bytes.get(at..at + 8);
            let record = header.and_then(|h| {
                let len = u32::from_le_bytes(h[..4].try_into().expect("4 bytes")) as usize;
                let crc = u32::from_le_bytes(h[4..].try_into().expect("4 bytes"));
                // No record is empty (a payload holds at least its batch count): a zero length
                // is the zeros a crash can leave where an append had grown the file.
                bytes.get(at + 8..at + 8 + len).filter(|p| len > 0 && crc32fast::hash(p) == crc)
            });
            let before = batches.len();
            match record.map(|p| parse(p, &mut batches)) {
                Some(Some(())) => at += 8 + record.map_or(0, <[u8]>::len),
                Some(None) => {
                    batches.truncate(before);
                    return Err(corrupt(torn("a record that checks but does not parse")));
                }
                None if at_open && *seq == newest => {
                    tracing::warn!(segment = %path.display(), "{}: the last append was cut short by a stop; it was never acknowledged, so it is dropped",
                        torn("a torn record"));
                    break;
                }
                None => return Err(corrupt(torn("a torn or damaged record"))),
            }
        }
        apply(db, &batches)?;
        std::fs::remove_file(path).map_err(|e| StoreError::Io(format!("cannot remove {}: {e}", path.display())))?;
    }
    Ok(newest)
}

/// Writes the batches newer than redb's revision into redb in one transaction: each key's last
/// write, in key order (sorted inserts walk the B-tree far less: 20,000 records took 32 ms
/// instead of 47).
fn apply(db: &Database, batches: &[Replayed<'_>]) -> StoreResult<()> {
    let w = db.begin_write().map_err(io)?;
    {
        let mut meta = w.open_table(META).map_err(io)?;
        let applied = meta.get(REVISION).map_err(io)?.map_or(0, |v| v.value());
        let fresh: Vec<&Replayed<'_>> = batches.iter().filter(|b| b.revision > applied).collect();
        let Some(last) = fresh.last().map(|b| b.revision) else { return Ok(()) };
        let mut newest: std::collections::BTreeMap<&str, Option<&[u8]>> = std::collections::BTreeMap::new();
        let mut leases = w.open_table(LEASES).map_err(io)?;
        for b in &fresh {
            for (key, e) in &b.writes {
                if let Some(e) = e {
                    // Checked here, not on the next open: a bad entry fails the checkpoint.
                    decode(key, e)?;
                }
                newest.insert(key, *e);
            }
            if let Some(l) = b.lease_end {
                leases.remove(l).map_err(io)?;
            }
        }
        let mut kv = w.open_table(KV).map_err(io)?;
        for (key, e) in newest {
            match e {
                Some(e) => kv.insert(key, e).map(drop),
                None => kv.remove(key).map(drop),
            }
            .map_err(io)?;
        }
        meta.insert(REVISION, last).map_err(io)?;
    }
    w.commit().map_err(io)
}

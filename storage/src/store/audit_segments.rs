//! Sealed audit segments: the older part of the audit chain, many entries to a row.
//!
//! The newest entries stay one canonical-JSON row each in `audit_log`, where browsing,
//! forwarding and an operator's raw look read them. Once at least [`KEEP_ROWS`] newer
//! entries follow it and a signed checkpoint covers it, the oldest run of
//! [`SEGMENT_ENTRIES`] rows moves into one `audit_segments` row: a zstd frame holding, for
//! each entry, its position, its recorded sha256, its tenant, its time and its canonical
//! JSON byte for byte (or nothing once pruned). Nothing is re-encoded: every entry still
//! verifies on its own (its bytes against its recorded hash, its `prev_sha256` against the
//! entry before it), and the chain and checkpoints verify as before. One row per cycle's
//! four entries cost about 2,460 bytes on disk in the load bench; sealed, consecutive
//! entries share their field names, request ids and linking hashes.
//!
//! Every reader of the chain walks it through [`each_entry`] (segments, then rows, or the
//! reverse), so none of them knows where an entry is kept. A damaged frame is an integrity
//! error naming the segment's first entry.

use std::ops::ControlFlow;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::StoreError;
use crate::store::{exec, query_one, to_sql};

/// Entries kept as rows behind the newest checkpoint before any is sealed.
pub(crate) const KEEP_ROWS: u64 = 4096;

/// Entries per sealed segment.
pub(crate) const SEGMENT_ENTRIES: u64 = 256;

/// Segments sealed by one checkpoint at most: each checkpoint covers `checkpoint_every`
/// (256 by default) new entries, so two per checkpoint catch up with a backlog (a chain
/// from an earlier release) without making one commit long.
pub(crate) const SEALS_PER_CHECKPOINT: usize = 2;

/// Level of the segment frames, written once per 256 entries: on the load bench's entries
/// level 3 made frames about 5% larger than level 1 (34.2 against 32.5 KB), and slower.
const LEVEL: i32 = 1;

/// Bound on a segment frame's expanded size, checked before anything is allocated.
const MAX_EXPANDED_BYTES: u64 = 64 * 1024 * 1024;

/// One compression context for every seal, made at the first. zstd allocates through the C
/// allocator: with a context made and freed per seal, on whichever request thread led that
/// commit, sealing added about 4.2 MB to the daemon's RSS in the load bench's profile mode;
/// with one context kept, about 2.8 MB (sealing on against off, 20,000 cycles).
static COMPRESSOR: Mutex<Option<zstd::bulk::Compressor<'static>>> = Mutex::new(None);

/// A record's length field for a pruned entry (its hash kept, its body gone).
const PRUNED: u32 = u32::MAX;

/// One entry as stored, wherever it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredEntry {
    /// Its position.
    pub seq: u64,
    /// Its canonical JSON (`None` once pruned).
    pub json: Option<Vec<u8>>,
    /// The sha256 recorded for it (hex).
    pub sha256: String,
    /// Its tenant.
    pub tenant_id: Option<u64>,
    /// Its time (unix ms).
    pub time_ms: i64,
}

/// Which way a walk goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Walk {
    /// Entries at or after this position, oldest first.
    From(u64),
    /// Entries before this position, newest first.
    Before(u64),
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn damaged(first_seq: i64) -> StoreError {
    StoreError::Integrity { table: "audit_segments", key: first_seq.to_string() }
}

/// Encodes entries into a segment frame (uncompressed records, then one zstd frame).
/// `None` when an entry cannot be kept in this form (a recorded hash that is not 64 hex
/// digits: such a row stays a row, where verification reports it).
fn encode(entries: &[StoredEntry]) -> Option<Vec<u8>> {
    let mut records = Vec::with_capacity(entries.iter().map(|e| 64 + e.json.as_ref().map_or(0, Vec::len)).sum());
    for entry in entries {
        let mut sha = [0u8; 32];
        hex::decode_to_slice(&entry.sha256, &mut sha).ok()?;
        records.extend_from_slice(&entry.seq.to_le_bytes());
        records.extend_from_slice(&sha);
        records.push(u8::from(entry.tenant_id.is_some()));
        records.extend_from_slice(&entry.tenant_id.unwrap_or(0).to_le_bytes());
        records.extend_from_slice(&entry.time_ms.to_le_bytes());
        match &entry.json {
            Some(json) => {
                let len = u32::try_from(json.len()).ok().filter(|len| *len != PRUNED)?;
                records.extend_from_slice(&len.to_le_bytes());
                records.extend_from_slice(json);
            }
            None => records.extend_from_slice(&PRUNED.to_le_bytes()),
        }
    }
    let mut compressor = COMPRESSOR.lock().ok()?;
    if compressor.is_none() {
        *compressor = zstd::bulk::Compressor::new(LEVEL).ok();
    }
    compressor.as_mut()?.compress(&records).ok()
}

/// Reads a fixed-size field off the front of `rest`.
fn take<const N: usize>(rest: &mut &[u8]) -> Option<[u8; N]> {
    let (head, tail) = rest.split_first_chunk::<N>()?;
    *rest = tail;
    Some(*head)
}

/// Decodes a segment frame; any damage is an integrity error naming `first_seq`.
fn decode(first_seq: i64, frame: &[u8]) -> Result<Vec<StoredEntry>, StoreError> {
    let size = match zstd::zstd_safe::get_frame_content_size(frame).ok().flatten() {
        Some(size) if size <= MAX_EXPANDED_BYTES => usize::try_from(size).map_err(|_| damaged(first_seq))?,
        _ => return Err(damaged(first_seq)),
    };
    let records = zstd::bulk::decompress(frame, size).map_err(|_| damaged(first_seq))?;
    let mut rest = records.as_slice();
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let entry = (|| {
            let seq = u64::from_le_bytes(take(&mut rest)?);
            let sha: [u8; 32] = take(&mut rest)?;
            let has_tenant = take::<1>(&mut rest)?[0];
            let tenant = u64::from_le_bytes(take(&mut rest)?);
            let time_ms = i64::from_le_bytes(take(&mut rest)?);
            let len = u32::from_le_bytes(take(&mut rest)?);
            let json = if len == PRUNED {
                None
            } else {
                let len = usize::try_from(len).ok()?;
                let (json, tail) = rest.split_at_checked(len)?;
                rest = tail;
                Some(json.to_vec())
            };
            let tenant_id = match has_tenant {
                0 => None,
                1 => Some(tenant),
                _ => return None,
            };
            Some(StoredEntry { seq, json, sha256: hex::encode(sha), tenant_id, time_ms })
        })();
        entries.push(entry.ok_or_else(|| damaged(first_seq))?);
    }
    Ok(entries)
}

fn row_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEntry> {
    Ok(StoredEntry {
        seq: to_u64(row.get(0)?),
        json: row.get(1)?,
        sha256: row.get(2)?,
        tenant_id: row.get::<_, Option<i64>>(3)?.map(to_u64),
        time_ms: row.get(4)?,
    })
}

/// Walks the chain's entries in `walk`'s order, wherever each is kept, until `visit`
/// breaks. Reads one segment at a time.
///
/// # Errors
/// [`StoreError::Integrity`] for a damaged segment; SQLite errors; `visit`'s errors.
pub(crate) fn each_entry(
    conn: &Connection,
    walk: Walk,
    visit: &mut dyn FnMut(StoredEntry) -> Result<ControlFlow<()>, StoreError>,
) -> Result<(), StoreError> {
    match walk {
        Walk::From(_) => {
            if each_segment_entry(conn, walk, visit)?.is_continue() {
                each_row_entry(conn, walk, visit).map(drop)?;
            }
        }
        Walk::Before(_) => {
            if each_row_entry(conn, walk, visit)?.is_continue() {
                each_segment_entry(conn, walk, visit).map(drop)?;
            }
        }
    }
    Ok(())
}

fn each_row_entry(
    conn: &Connection,
    walk: Walk,
    visit: &mut dyn FnMut(StoredEntry) -> Result<ControlFlow<()>, StoreError>,
) -> Result<ControlFlow<()>, StoreError> {
    let (sql, bound) = match walk {
        Walk::From(start) => (
            "SELECT seq, entry_json, entry_sha256, tenant_id, time_ms FROM audit_log WHERE seq >= ?1 ORDER BY seq",
            to_sql(start),
        ),
        Walk::Before(end) => (
            "SELECT seq, entry_json, entry_sha256, tenant_id, time_ms FROM audit_log WHERE seq < ?1 ORDER BY seq DESC",
            to_sql(end),
        ),
    };
    let mut stmt = conn.prepare_cached(sql).map_err(StoreError::sqlite("read audit log"))?;
    let mut rows = stmt.query([bound]).map_err(StoreError::sqlite("read audit log"))?;
    while let Some(row) = rows.next().map_err(StoreError::sqlite("read audit log"))? {
        if visit(row_entry(row).map_err(StoreError::sqlite("read audit log"))?)?.is_break() {
            return Ok(ControlFlow::Break(()));
        }
    }
    Ok(ControlFlow::Continue(()))
}

fn each_segment_entry(
    conn: &Connection,
    walk: Walk,
    visit: &mut dyn FnMut(StoredEntry) -> Result<ControlFlow<()>, StoreError>,
) -> Result<ControlFlow<()>, StoreError> {
    let (sql, bound) = match walk {
        Walk::From(start) => {
            // Segments do not overlap: the one holding `start` is the last to begin at or before it
            // (read only if it reaches `start`: a walk from the rows, as forwarding's, decodes none).
            (
                "SELECT first_seq, frame FROM audit_segments WHERE first_seq >= (SELECT coalesce(max(first_seq), 0)
                 FROM audit_segments WHERE first_seq <= ?1) AND last_seq >= ?1 ORDER BY first_seq",
                to_sql(start),
            )
        }
        Walk::Before(end) => {
            ("SELECT first_seq, frame FROM audit_segments WHERE first_seq < ?1 ORDER BY first_seq DESC", to_sql(end))
        }
    };
    let mut stmt = conn.prepare_cached(sql).map_err(StoreError::sqlite("read audit segments"))?;
    let mut rows = stmt.query([bound]).map_err(StoreError::sqlite("read audit segments"))?;
    while let Some(row) = rows.next().map_err(StoreError::sqlite("read audit segments"))? {
        let first_seq: i64 = row.get(0).map_err(StoreError::sqlite("read audit segments"))?;
        let frame: Vec<u8> = row.get(1).map_err(StoreError::sqlite("read audit segments"))?;
        let mut entries = decode(first_seq, &frame)?;
        match walk {
            Walk::From(start) => entries.retain(|e| e.seq >= start),
            Walk::Before(end) => {
                entries.retain(|e| e.seq < end);
                entries.reverse();
            }
        }
        for entry in entries {
            if visit(entry)?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// The newest entry's position, hash and time, wherever it is kept.
///
/// # Errors
/// SQLite errors.
pub(crate) fn newest(conn: &Connection) -> Result<Option<(u64, String, i64)>, StoreError> {
    let row =
        query_one(conn, "SELECT seq, entry_sha256, time_ms FROM audit_log ORDER BY seq DESC LIMIT 1", [], |row| {
            Ok((to_u64(row.get(0)?), row.get::<_, String>(1)?, row.get::<_, i64>(2)?))
        })
        .optional()
        .map_err(StoreError::sqlite("read audit head"))?;
    if row.is_some() {
        return Ok(row);
    }
    // Every row sealed: only a chain whose rows were deleted gets here.
    query_one(
        conn,
        "SELECT last_seq, last_sha256, max_time_ms FROM audit_segments ORDER BY first_seq DESC LIMIT 1",
        [],
        |row| Ok((to_u64(row.get(0)?), row.get::<_, String>(1)?, row.get::<_, i64>(2)?)),
    )
    .optional()
    .map_err(StoreError::sqlite("read audit head"))
}

/// The entry at `seq`, wherever it is kept.
///
/// # Errors
/// [`StoreError::Integrity`] for a damaged segment; SQLite errors.
pub(crate) fn entry_at(conn: &Connection, seq: u64) -> Result<Option<StoredEntry>, StoreError> {
    let mut found = None;
    each_entry(conn, Walk::From(seq), &mut |entry| {
        if entry.seq == seq {
            found = Some(entry);
        }
        Ok(ControlFlow::Break(()))
    })?;
    Ok(found)
}

/// The first entry whose time is at or after `since_ms` (times never go back along the
/// chain), wherever it is kept.
///
/// # Errors
/// [`StoreError::Integrity`] for a damaged segment; SQLite errors.
pub(crate) fn first_since(conn: &Connection, since_ms: i64) -> Result<Option<u64>, StoreError> {
    // The first segment reaching `since_ms`; past every segment when none does (the walk
    // then reads the rows only).
    let start: i64 = query_one(
        conn,
        "SELECT coalesce((SELECT first_seq FROM audit_segments WHERE max_time_ms >= ?1 ORDER BY first_seq LIMIT 1),
                         (SELECT coalesce(max(last_seq), 0) + 1 FROM audit_segments))",
        [since_ms],
        |row| row.get(0),
    )
    .map_err(StoreError::sqlite("find audit entries by time"))?;
    let mut found = None;
    each_entry(conn, Walk::From(to_u64(start)), &mut |entry| {
        if entry.time_ms >= since_ms {
            found = Some(entry.seq);
            return Ok(ControlFlow::Break(()));
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(found)
}

/// The last entry whose time is before `before_ms`, wherever it is kept.
///
/// # Errors
/// [`StoreError::Integrity`] for a damaged segment; SQLite errors.
pub(crate) fn last_before(conn: &Connection, before_ms: i64) -> Result<Option<u64>, StoreError> {
    let in_rows: Option<i64> =
        query_one(conn, "SELECT max(seq) FROM audit_log WHERE time_ms < ?1", [before_ms], |row| row.get(0))
            .map_err(StoreError::sqlite("find audit entries by time"))?;
    if in_rows.is_some() {
        return Ok(in_rows.map(to_u64));
    }
    let segment: Option<(i64, Vec<u8>)> = query_one(
        conn,
        "SELECT first_seq, frame FROM audit_segments WHERE min_time_ms < ?1 ORDER BY first_seq DESC LIMIT 1",
        [before_ms],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .optional()
    .map_err(StoreError::sqlite("find audit entries by time"))?;
    let Some((first_seq, frame)) = segment else { return Ok(None) };
    Ok(decode(first_seq, &frame)?.iter().filter(|e| e.time_ms < before_ms).map(|e| e.seq).max())
}

/// Seals the oldest rows into segments while at least [`KEEP_ROWS`] entries follow them
/// behind the newest checkpoint (`signed_through`); at most `max_segments`. Runs in its own
/// savepoint: sealing never fails the commit it rides in (a failure leaves the rows as
/// they were, for the next checkpoint). Returns how many segments were sealed.
pub(crate) fn seal_due(conn: &Connection, signed_through: u64, max_segments: usize) -> usize {
    if signed_through < KEEP_ROWS + SEGMENT_ENTRIES || conn.execute_batch("SAVEPOINT seal").is_err() {
        return 0;
    }
    let sealed = seal_in(conn, signed_through, max_segments);
    let end = if sealed.is_ok() { "RELEASE seal" } else { "ROLLBACK TO seal; RELEASE seal" };
    if conn.execute_batch(end).is_err() {
        return 0;
    }
    sealed.unwrap_or(0)
}

fn seal_in(conn: &Connection, signed_through: u64, max_segments: usize) -> Result<usize, StoreError> {
    let mut sealed = 0;
    while sealed < max_segments {
        let oldest: Option<i64> = query_one(conn, "SELECT min(seq) FROM audit_log", [], |row| row.get(0))
            .map_err(StoreError::sqlite("find audit rows to seal"))?;
        let Some(first) = oldest.map(to_u64) else { break };
        let last = first + SEGMENT_ENTRIES - 1;
        if last + KEEP_ROWS > signed_through {
            break;
        }
        let mut entries = Vec::new();
        {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, entry_json, entry_sha256, tenant_id, time_ms FROM audit_log
                     WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq",
                )
                .map_err(StoreError::sqlite("read audit rows to seal"))?;
            let rows = stmt
                .query_map([to_sql(first), to_sql(last)], row_entry)
                .map_err(StoreError::sqlite("read audit rows"))?;
            for row in rows {
                entries.push(row.map_err(StoreError::sqlite("read audit rows to seal"))?);
            }
        }
        let (Some(head), Some(tail)) = (entries.first(), entries.last()) else { break };
        let Some(frame) = encode(&entries) else { break };
        let min_time = entries.iter().map(|e| e.time_ms).min().unwrap_or(head.time_ms);
        let max_time = entries.iter().map(|e| e.time_ms).max().unwrap_or(tail.time_ms);
        let bodies = entries.iter().filter(|e| e.json.is_some()).count();
        exec(
            conn,
            "INSERT INTO audit_segments (first_seq, last_seq, last_sha256, min_time_ms, max_time_ms, bodies, frame)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                to_sql(head.seq),
                to_sql(tail.seq),
                tail.sha256,
                min_time,
                max_time,
                i64::try_from(bodies).unwrap_or(i64::MAX),
                frame
            ],
        )
        .map_err(StoreError::sqlite("seal audit rows"))?;
        exec(conn, "DELETE FROM audit_log WHERE seq BETWEEN ?1 AND ?2", [to_sql(first), to_sql(last)])
            .map_err(StoreError::sqlite("seal audit rows"))?;
        sealed += 1;
    }
    Ok(sealed)
}

/// Prunes sealed entries at or before `bound` down to their hashes, skipping tenants in
/// `held` (legal hold). Returns how many entries lost their body.
///
/// # Errors
/// [`StoreError::Integrity`] for a damaged segment; SQLite errors.
pub(crate) fn prune_sealed(conn: &Connection, bound: u64, held: &[u64]) -> Result<u64, StoreError> {
    let segments: Vec<(i64, Vec<u8>)> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT first_seq, frame FROM audit_segments WHERE first_seq <= ?1 AND bodies > 0 ORDER BY first_seq",
            )
            .map_err(StoreError::sqlite("read audit segments"))?;
        let rows = stmt
            .query_map([to_sql(bound)], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(StoreError::sqlite("read audit segments"))?;
        rows.collect::<Result<_, _>>().map_err(StoreError::sqlite("read audit segments"))?
    };
    let mut pruned = 0;
    for (first_seq, frame) in segments {
        let mut entries = decode(first_seq, &frame)?;
        let mut changed = 0;
        for entry in &mut entries {
            let kept = entry.tenant_id.is_some_and(|tenant| held.contains(&tenant));
            if entry.seq <= bound && entry.json.is_some() && !kept {
                entry.json = None;
                changed += 1;
            }
        }
        if changed == 0 {
            continue;
        }
        let frame = encode(&entries).ok_or_else(|| damaged(first_seq))?;
        let bodies = entries.iter().filter(|e| e.json.is_some()).count();
        exec(
            conn,
            "UPDATE audit_segments SET frame = ?2, bodies = ?3 WHERE first_seq = ?1",
            params![first_seq, frame, i64::try_from(bodies).unwrap_or(i64::MAX)],
        )
        .map_err(StoreError::sqlite("prune audit segment"))?;
        pruned += changed;
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, json: Option<&str>) -> StoredEntry {
        StoredEntry {
            seq,
            json: json.map(|j| j.as_bytes().to_vec()),
            sha256: format!("{seq:064x}"),
            tenant_id: seq.is_multiple_of(2).then_some(seq * 3),
            time_ms: 1_700_000_000_000 + i64::try_from(seq).unwrap(),
        }
    }

    #[test]
    fn a_segment_round_trips_byte_for_byte() {
        let entries: Vec<_> = (1..=300)
            .map(|seq| entry(seq, (seq % 7 != 0).then_some(r#"{"action":"tool_call","reason":"a b\u000a"}"#)))
            .collect();
        let frame = encode(&entries).unwrap();
        assert_eq!(decode(1, &frame).unwrap(), entries);
        assert!(frame.len() * 4 < entries.len() * 100, "{} bytes", frame.len());
    }

    #[test]
    fn a_hash_that_is_not_hex_is_not_sealed() {
        let mut bad = entry(1, Some("{}"));
        bad.sha256 = "edited".into();
        assert!(encode(&[bad]).is_none());
    }

    #[test]
    fn damaged_truncated_or_oversized_frames_are_integrity_errors() {
        let frame = encode(&[entry(1, Some("{}")), entry(2, None)]).unwrap();
        let integrity = |bytes: &[u8]| matches!(decode(9, bytes), Err(StoreError::Integrity { key, .. }) if key == "9");
        assert!(integrity(&frame[..frame.len() - 3]));
        assert!(integrity(&[]));
        // Records cut short inside a valid frame.
        let short = zstd::bulk::compress(&[1u8; 20], 1).unwrap();
        assert!(integrity(&short));
        // A frame declaring more than the bound is refused before anything is allocated.
        let huge = vec![0u8; usize::try_from(MAX_EXPANDED_BYTES).unwrap() + 1];
        assert!(integrity(&zstd::bulk::compress(&huge, 1).unwrap()));
    }
}

//! The stored form of run states: their canonical JSON compressed with zstd against a fixed
//! dictionary, behind a one-byte tag naming that dictionary.
//!
//! A run state is about 2 KiB of canonical JSON, most of it key names that repeat in every
//! run. Stored as is, one run filled a 4 KiB page (two did not fit), so every run cost a
//! page on disk and in the WAL. Compressed against a dictionary holding a typical run state,
//! several share a page: the load bench's bytes on disk per start+next cycle went from 6,775
//! to about 3,100. The hash is still of the canonical JSON: a read decompresses, then checks
//! the sha256 as before (`document::decode`).
//!
//! Stored bytes starting with `{` are canonical JSON as written before this form existed
//! (and by any table not compacted); [`TAG_RUN_STATE_1`] is followed by one zstd frame. A
//! dictionary is never changed once released: a new one gets a new tag.

use std::borrow::Cow;
use std::cell::RefCell;

use crate::error::StoreError;

/// Tag of a run state compressed against `dictionaries/run_state_1.json`.
pub const TAG_RUN_STATE_1: u8 = 0x01;

/// The dictionary of [`TAG_RUN_STATE_1`]: one run state's canonical JSON (hashes zeroed).
const RUN_STATE_1: &[u8] = include_bytes!("dictionaries/run_state_1.json");

/// zstd level 1: in the load bench's profile, level 3's dictionary matcher took about 5% of the
/// daemon's CPU time; level 1 costs a fraction of that for a few percent more bytes.
const LEVEL: i32 = 1;

/// The largest document a frame may expand to (above every configurable document limit's
/// default; a larger declared size is refused before anything is allocated).
const MAX_EXPANDED_BYTES: u64 = 64 * 1024 * 1024;

thread_local! {
    // One compressor and one decompressor per thread: a fresh context with the dictionary
    // loaded for each run state would cost more than the compression itself.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// The stored form of a run state's canonical JSON: compressed behind its tag, or the JSON
/// itself when compression does not make it smaller.
#[must_use]
pub fn pack_run_state(canonical: &[u8]) -> Vec<u8> {
    let packed = COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = zstd::bulk::Compressor::with_dictionary(LEVEL, RUN_STATE_1).ok();
        }
        slot.as_mut().and_then(|compressor| compressor.compress(canonical).ok())
    });
    match packed {
        Some(frame) if frame.len() + 1 < canonical.len() => {
            let mut out = Vec::with_capacity(frame.len() + 1);
            out.push(TAG_RUN_STATE_1);
            out.extend_from_slice(&frame);
            out
        }
        _ => canonical.to_vec(),
    }
}

/// The canonical JSON of stored bytes (either form). Anything that is neither JSON nor a
/// known tag with a sound frame is an integrity error: the bytes were changed.
///
/// # Errors
/// [`StoreError::Integrity`] for an unknown tag, a damaged frame or an oversized one.
pub fn unpack<'a>(
    stored: &'a [u8],
    table: &'static str,
    key: impl Fn() -> String,
) -> Result<Cow<'a, [u8]>, StoreError> {
    match stored.first() {
        Some(&TAG_RUN_STATE_1) => {
            let frame = &stored[1..];
            let declared = zstd::zstd_safe::get_frame_content_size(frame).ok().flatten();
            let size = match declared {
                Some(size) if size <= MAX_EXPANDED_BYTES => usize::try_from(size).unwrap_or(0),
                _ => return Err(StoreError::Integrity { table, key: key() }),
            };
            let expanded = DECOMPRESSOR.with(|cell| {
                let mut slot = cell.borrow_mut();
                if slot.is_none() {
                    *slot = zstd::bulk::Decompressor::with_dictionary(RUN_STATE_1).ok();
                }
                slot.as_mut().and_then(|decompressor| decompressor.decompress(frame, size).ok())
            });
            match expanded {
                Some(bytes) if bytes.len() == size => Ok(Cow::Owned(bytes)),
                _ => Err(StoreError::Integrity { table, key: key() }),
            }
        }
        Some(b'{') => Ok(Cow::Borrowed(stored)),
        _ => Err(StoreError::Integrity { table, key: key() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut text = String::from_utf8(RUN_STATE_1.to_vec()).unwrap();
        text = text.replace("run-1", "run-7f3a").replace(&"0".repeat(64), &"ab".repeat(32));
        text.into_bytes()
    }

    #[test]
    fn a_run_state_round_trips_and_shrinks() {
        let json = sample();
        let packed = pack_run_state(&json);
        assert_eq!(packed[0], TAG_RUN_STATE_1);
        assert!(packed.len() * 3 < json.len(), "{} of {}", packed.len(), json.len());
        assert_eq!(unpack(&packed, "runs", String::new).unwrap().as_ref(), json.as_slice());
    }

    #[test]
    fn json_written_before_passes_through() {
        let json = br#"{"a":1}"#;
        assert_eq!(pack_run_state(json), json.to_vec());
        assert!(matches!(unpack(json, "runs", String::new).unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn damaged_unknown_or_oversized_frames_are_integrity_errors() {
        let packed = pack_run_state(&sample());
        let integrity = |bytes: &[u8]| matches!(unpack(bytes, "runs", String::new), Err(StoreError::Integrity { .. }));
        let mut unknown = packed.clone();
        unknown[0] = 0x02;
        assert!(integrity(&unknown));
        assert!(integrity(&packed[..packed.len() / 2]));
        assert!(integrity(&[]));
        // A frame declaring more than the bound is refused before anything is allocated.
        let mut oversized = vec![TAG_RUN_STATE_1];
        let huge = vec![0u8; usize::try_from(MAX_EXPANDED_BYTES).unwrap() + 1];
        oversized.extend(zstd::bulk::compress(&huge, 1).unwrap());
        assert!(oversized.len() < 64 * 1024);
        assert!(integrity(&oversized));
    }
}

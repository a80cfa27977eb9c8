//! Recovery: a data directory's segments read back as records.
//!
//! [`recover`] reads every segment in order and hands each record to the
//! caller (the store replays it: `store/durable.rs`), which says whether
//! the record continues what came before. A frame cut short at the end of
//! the newest segment (a crash mid-write) is cut off the file. Any other
//! damage — a bad checksum with intact records after it, a damaged frame in
//! an older segment, a record the caller refuses — stops recovery with an
//! error naming the file and offset: data is never silently dropped.
//!
//! Every segment starts with a header naming the store's id scheme; the
//! first header is handed to the caller (it makes the store), later ones
//! must name the same scheme. Records are handed over in file order, each
//! before the next frame is read, so the first problem in the file is the
//! one reported.

use super::OpenError;
use super::record::{self, Frame, Record};
use super::wal::{self, Tail};
use crate::ids::IdScheme;
use std::fs::{self, OpenOptions};
use std::path::Path;

/// Reads every segment of `dir` in order, handing its records to `apply`
/// (the first segment's header first, then every append and snapshot
/// record; an `Err` from `apply` is reported as damage at that record).
/// Cuts a torn final write off the newest segment; returns where writing
/// resumes.
pub fn recover(
    dir: &Path,
    mut apply: impl FnMut(Record<'_>) -> Result<(), String>,
) -> Result<Tail, OpenError> {
    let numbers = wal::segments(dir)?;
    let Some(&newest) = numbers.last() else {
        return Ok(Tail::Create { number: 1 });
    };
    let mut replay = Replay {
        ids: None,
        next_seq: 1,
        apply: &mut apply,
    };
    let mut newest_len = 0;
    for &number in &numbers {
        let path = wal::segment_path(dir, number);
        let data = fs::read(&path)?;
        let valid = replay.segment(&path, &data, number == newest)?;
        if number == newest {
            if valid < data.len() {
                eprintln!(
                    "eventstore: {}: cut {} bytes of an incomplete final write at offset {valid}",
                    path.display(),
                    data.len() - valid
                );
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(valid as u64)?;
                file.sync_all()?;
            }
            newest_len = valid as u64;
        }
    }
    if newest_len == 0 {
        // Not even the header of the newest segment was written: a
        // crash while starting it (or the very first segment). Nothing
        // in it was ever acknowledged; start it again.
        fs::remove_file(wal::segment_path(dir, newest))?;
        Ok(Tail::Create { number: newest })
    } else {
        Ok(Tail::Append {
            number: newest,
            bytes: newest_len,
        })
    }
}

/// Recovery's state across segments.
struct Replay<'a, F> {
    /// The id scheme of the first header.
    ids: Option<IdScheme>,
    /// The sequence number the next append record must start at, once
    /// every record so far was applied: the caller refuses any other (the
    /// store checks that records continue the log exactly), so this is the
    /// store's head + 1.
    next_seq: u64,
    apply: &'a mut F,
}

impl<F: FnMut(Record<'_>) -> Result<(), String>> Replay<'_, F> {
    /// Replays one segment; returns the length of its valid prefix.
    fn segment(&mut self, path: &Path, data: &[u8], newest: bool) -> Result<usize, OpenError> {
        let corrupt = |offset: usize, problem: String| OpenError::Corrupt {
            file: path.to_owned(),
            offset,
            problem,
        };
        let mut at = 0;
        let mut first = true;
        loop {
            match record::read_frame(data, at) {
                Frame::Good { payload, next } => {
                    let record =
                        record::parse(payload).map_err(|why| corrupt(at, why.to_owned()))?;
                    match (first, record) {
                        (true, Record::Header { tag, keys }) => {
                            let ids = IdScheme::from_parts(tag, keys);
                            match self.ids {
                                None => {
                                    self.ids = Some(ids);
                                    (self.apply)(Record::Header { tag, keys })
                                        .map_err(|why| corrupt(at, why))?;
                                }
                                Some(first_ids) if first_ids != ids => {
                                    return Err(corrupt(
                                        at,
                                        "segment belongs to another store (id scheme differs)"
                                            .into(),
                                    ));
                                }
                                Some(_) => {}
                            }
                        }
                        (true, _) => {
                            return Err(corrupt(at, "segment does not start with a header".into()));
                        }
                        (false, Record::Header { .. }) => {
                            return Err(corrupt(
                                at,
                                "segment header in the middle of a segment".into(),
                            ));
                        }
                        (false, record) => {
                            let end = match &record {
                                Record::Append {
                                    first_seq, events, ..
                                } => Some(first_seq + events.len() as u64),
                                _ => None,
                            };
                            (self.apply)(record).map_err(|why| corrupt(at, why))?;
                            if let Some(end) = end {
                                self.next_seq = end;
                            }
                        }
                    }
                    first = false;
                    at = next;
                }
                Frame::End => return Ok(at),
                Frame::Truncated | Frame::BadChecksum { .. }
                    if newest && !intact_frames_follow(data, at, self.next_seq) =>
                {
                    return Ok(at);
                }
                Frame::Truncated => {
                    return Err(corrupt(
                        at,
                        "record cut short before the end of the log".into(),
                    ));
                }
                Frame::BadChecksum { .. } => return Err(corrupt(at, "checksum mismatch".into())),
            }
        }
    }
}

/// Whether a valid record frame starts anywhere after `at`: if so, the
/// damage at `at` is not a torn final write but damage in the middle, and
/// cutting there would destroy acknowledged data. Candidates are filtered by
/// their kind byte (and, for appends, the sequence number they must carry:
/// `next_seq` or later) before any checksum is computed, so the scan stays
/// cheap.
fn intact_frames_follow(data: &[u8], at: usize, next_seq: u64) -> bool {
    let header = record::FRAME_HEADER_BYTES;
    (at + 1..data.len().saturating_sub(header + 9)).any(|p| {
        let plausible = match data[p + header] {
            1 => {
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&data[p + header + 1..p + header + 9]);
                let seq = u64::from_le_bytes(seq);
                seq >= next_seq && seq - next_seq < (1 << 32)
            }
            2 => true,
            _ => false,
        };
        plausible && matches!(record::read_frame(data, p), Frame::Good { payload, .. } if record::parse(payload).is_ok())
    })
}

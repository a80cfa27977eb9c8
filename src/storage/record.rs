//! The on-disk record format.
//!
//! A segment file is a sequence of frames:
//!
//! ```text
//! frame   = len: u32 LE | crc: u32 LE (CRC-32C of payload) | payload: len bytes
//! payload = kind: u8 | body
//!
//! kind 0, header   (first frame of every segment)
//!   magic "ESLOG\0\0\x01" | id tag: u64 | id keys: 4 × u64
//! kind 1, append   (one per append call: a batch is one frame, so it is
//!                   recovered whole or not at all)
//!   first_seq: u64 | first_version: u64 | count: u32 | aggregate_id: str
//!   then count × ( recorded_at: i64 | event_id: 16 bytes | client_id: u8
//!                  | event_type: str | data: str | metadata: str )
//! kind 2, snapshot
//!   version: u64 | aggregate_id: str | given: u8 | state: str (empty when
//!   not given: the snapshot is the fold at `version`)
//!
//! str = len: u32 LE | UTF-8 bytes         (all integers little-endian)
//! ```
//!
//! Nothing is rewritten in place: files only grow, by whole frames.

use super::crc32c::crc32c;

/// Frame header bytes (length + checksum).
pub const FRAME_HEADER_BYTES: usize = 8;
/// Largest payload a frame may declare; a larger length is a torn or
/// corrupt frame, never an allocation.
pub const MAX_FRAME_BYTES: usize = 1 << 30;
const MAGIC: &[u8; 8] = b"ESLOG\0\0\x01";

const KIND_HEADER: u8 = 0;
const KIND_APPEND: u8 = 1;
const KIND_SNAPSHOT: u8 = 2;

/// One event inside an append record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord<'a> {
    /// Microseconds since the epoch.
    pub recorded_at: i64,
    /// The event id.
    pub id: [u8; 16],
    /// Whether the id was given by the client (it goes in the id index).
    pub client_id: bool,
    /// Event type.
    pub event_type: &'a str,
    /// Raw JSON data.
    pub data: &'a str,
    /// Raw JSON metadata object, empty when absent.
    pub metadata: &'a str,
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// Segment header.
    Header {
        /// Id scheme tag.
        tag: u64,
        /// Id scheme keys.
        keys: [u64; 4],
    },
    /// One append call.
    Append {
        /// Sequence number of the first event.
        first_seq: u64,
        /// Version of the first event.
        first_version: u64,
        /// The aggregate.
        aggregate_id: &'a str,
        /// The events.
        events: Vec<EventRecord<'a>>,
    },
    /// One snapshot.
    Snapshot {
        /// The aggregate.
        aggregate_id: &'a str,
        /// The version snapshotted.
        version: u64,
        /// The given state, or `None` for the fold.
        state: Option<&'a str>,
    },
}

/// Starts a frame in `out`; returns the position to pass to [`end_frame`].
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    at
}

/// Payload bytes of an append record for an aggregate id of
/// `aggregate_id_bytes` and events whose type, data and metadata together
/// take `texts` bytes each (exact: see the format above).
pub fn append_payload_bytes(aggregate_id_bytes: usize, texts: impl Iterator<Item = usize>) -> u64 {
    let head = 1 + 8 + 8 + 4 + 4 + aggregate_id_bytes as u64;
    texts.fold(head, |sum, text| sum + 8 + 16 + 1 + 3 * 4 + text as u64)
}

/// Payload bytes of a snapshot record (exact).
pub fn snapshot_payload_bytes(aggregate_id_bytes: usize, state_bytes: usize) -> u64 {
    1 + 8 + 4 + aggregate_id_bytes as u64 + 1 + 4 + state_bytes as u64
}

/// Fills in the length and checksum of the frame begun at `at`.
pub fn end_frame(out: &mut [u8], at: usize) {
    let payload = &out[at + FRAME_HEADER_BYTES..];
    // Writers refuse larger records before they are taken (the store's
    // `record_fits`): recovery would read a longer frame as torn.
    assert!(
        payload.len() <= MAX_FRAME_BYTES,
        "a record of {} bytes, over the {MAX_FRAME_BYTES}-byte frame limit",
        payload.len()
    );
    let len = payload.len() as u32;
    let crc = crc32c(payload);
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    out[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends a header frame.
pub fn write_header(out: &mut Vec<u8>, tag: u64, keys: [u64; 4]) {
    let at = begin_frame(out);
    out.push(KIND_HEADER);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&tag.to_le_bytes());
    for k in keys {
        out.extend_from_slice(&k.to_le_bytes());
    }
    end_frame(out, at);
}

/// Appends the head of an append frame; follow with `count` calls of
/// [`write_event`] and then [`end_frame`].
pub fn begin_append(
    out: &mut Vec<u8>,
    first_seq: u64,
    first_version: u64,
    count: u32,
    aggregate_id: &str,
) -> usize {
    let at = begin_frame(out);
    out.push(KIND_APPEND);
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&first_version.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    put_str(out, aggregate_id);
    at
}

/// Appends one event of an append frame.
pub fn write_event(out: &mut Vec<u8>, e: &EventRecord<'_>) {
    out.extend_from_slice(&e.recorded_at.to_le_bytes());
    out.extend_from_slice(&e.id);
    out.push(u8::from(e.client_id));
    put_str(out, e.event_type);
    put_str(out, e.data);
    put_str(out, e.metadata);
}

/// Appends a snapshot frame.
pub fn write_snapshot(out: &mut Vec<u8>, aggregate_id: &str, version: u64, state: Option<&str>) {
    let at = begin_frame(out);
    out.push(KIND_SNAPSHOT);
    out.extend_from_slice(&version.to_le_bytes());
    put_str(out, aggregate_id);
    out.push(u8::from(state.is_some()));
    put_str(out, state.unwrap_or(""));
    end_frame(out, at);
}

/// What is at an offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A frame with a good checksum; the next frame starts at `next`.
    Good {
        /// The payload.
        payload: &'a [u8],
        /// Offset of the next frame.
        next: usize,
    },
    /// The end of the data.
    End,
    /// A frame header that declares a length running past the end of the
    /// data, or an impossible length (0 or over the limit): a write cut short.
    Truncated,
    /// A complete frame whose checksum does not match.
    BadChecksum {
        /// Offset just past the bad frame.
        next: usize,
    },
}

/// Reads the frame at `at` of `data`.
pub fn read_frame(data: &[u8], at: usize) -> Frame<'_> {
    if at == data.len() {
        return Frame::End;
    }
    if data.len() - at < FRAME_HEADER_BYTES {
        return Frame::Truncated;
    }
    let len = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
    let crc = u32::from_le_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]]);
    let start = at + FRAME_HEADER_BYTES;
    if len == 0 || len > MAX_FRAME_BYTES || data.len() - start < len {
        return Frame::Truncated;
    }
    let payload = &data[start..start + len];
    if crc32c(payload) != crc {
        return Frame::BadChecksum { next: start + len };
    }
    Frame::Good {
        payload,
        next: start + len,
    }
}

/// A bounds-checked little-endian reader over a payload.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.data.len() < n {
            return Err("record ends early");
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        let mut w = [0u8; 8];
        w.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(w))
    }

    fn str(&mut self) -> Result<&'a str, &'static str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| "string is not UTF-8")
    }
}

/// Decodes a payload whose checksum matched.
pub fn parse(payload: &[u8]) -> Result<Record<'_>, &'static str> {
    let mut r = Reader { data: payload };
    let record = match r.u8()? {
        KIND_HEADER => {
            if r.take(8)? != MAGIC {
                return Err("bad magic: not an eventstore segment of this format");
            }
            let tag = r.u64()?;
            let keys = [r.u64()?, r.u64()?, r.u64()?, r.u64()?];
            Record::Header { tag, keys }
        }
        KIND_APPEND => {
            let first_seq = r.u64()?;
            let first_version = r.u64()?;
            let count = r.u32()? as usize;
            let aggregate_id = r.str()?;
            if count == 0 || count > payload.len() {
                return Err("bad event count");
            }
            let mut events = Vec::with_capacity(count);
            for _ in 0..count {
                let recorded_at = r.u64()? as i64;
                let mut id = [0u8; 16];
                id.copy_from_slice(r.take(16)?);
                let client_id = r.u8()? != 0;
                events.push(EventRecord {
                    recorded_at,
                    id,
                    client_id,
                    event_type: r.str()?,
                    data: r.str()?,
                    metadata: r.str()?,
                });
            }
            Record::Append {
                first_seq,
                first_version,
                aggregate_id,
                events,
            }
        }
        KIND_SNAPSHOT => {
            let version = r.u64()?;
            let aggregate_id = r.str()?;
            let given = r.u8()? != 0;
            let state = r.str()?;
            Record::Snapshot {
                aggregate_id,
                version,
                state: given.then_some(state),
            }
        }
        _ => return Err("unknown record kind"),
    };
    if !r.data.is_empty() {
        return Err("trailing bytes after record");
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_sizes_are_computed_exactly() {
        let mut out = Vec::new();
        let at = begin_append(&mut out, 1, 1, 2, "user-1");
        let events = [("Created", "{\"a\":1}", ""), ("Renamed", "{}", "{\"m\":2}")];
        for (event_type, data, metadata) in events {
            let e = EventRecord {
                recorded_at: 5,
                id: [7; 16],
                client_id: false,
                event_type,
                data,
                metadata,
            };
            write_event(&mut out, &e);
        }
        end_frame(&mut out, at);
        let texts = events.iter().map(|(t, d, m)| t.len() + d.len() + m.len());
        assert_eq!(
            append_payload_bytes("user-1".len(), texts),
            (out.len() - FRAME_HEADER_BYTES) as u64
        );
        let mut out = Vec::new();
        write_snapshot(&mut out, "user-1", 3, Some("{\"s\":1}"));
        assert_eq!(
            snapshot_payload_bytes(6, 7),
            (out.len() - FRAME_HEADER_BYTES) as u64
        );
    }

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, 7, [1, 2, 3, 4]);
        let at = begin_append(&mut out, 1, 1, 2, "agg");
        for (i, data) in [r#"{"a":1}"#, "[]"].iter().enumerate() {
            write_event(
                &mut out,
                &EventRecord {
                    recorded_at: 100 + i as i64,
                    id: [i as u8; 16],
                    client_id: i == 0,
                    event_type: "T",
                    data,
                    metadata: if i == 0 { "" } else { r#"{"m":true}"# },
                },
            );
        }
        end_frame(&mut out, at);
        write_snapshot(&mut out, "agg", 2, Some(r#"{"s":1}"#));
        write_snapshot(&mut out, "agg", 2, None);
        out
    }

    fn records(data: &[u8]) -> Vec<Record<'_>> {
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            match read_frame(data, at) {
                Frame::Good { payload, next } => {
                    out.push(parse(payload).unwrap());
                    at = next;
                }
                Frame::End => return out,
                other => panic!("{other:?} at {at}"),
            }
        }
    }

    #[test]
    fn records_round_trip() {
        let data = sample();
        let recs = records(&data);
        assert_eq!(recs.len(), 4);
        assert_eq!(
            recs[0],
            Record::Header {
                tag: 7,
                keys: [1, 2, 3, 4]
            }
        );
        let Record::Append {
            first_seq,
            events,
            aggregate_id,
            ..
        } = &recs[1]
        else {
            panic!()
        };
        assert_eq!((*first_seq, *aggregate_id, events.len()), (1, "agg", 2));
        assert_eq!(events[1].metadata, r#"{"m":true}"#);
        assert!(events[0].client_id && !events[1].client_id);
        assert_eq!(
            recs[2],
            Record::Snapshot {
                aggregate_id: "agg",
                version: 2,
                state: Some(r#"{"s":1}"#)
            }
        );
        assert_eq!(
            recs[3],
            Record::Snapshot {
                aggregate_id: "agg",
                version: 2,
                state: None
            }
        );
    }

    #[test]
    fn every_truncation_is_detected_as_truncated() {
        let data = sample();
        let Frame::Good { next: first, .. } = read_frame(&data, 0) else {
            panic!()
        };
        for cut in first + 1..data.len() {
            let mut at = first;
            let last = loop {
                match read_frame(&data[..cut], at) {
                    Frame::Good { next, .. } => at = next,
                    other => break other,
                }
            };
            assert!(
                matches!(last, Frame::Truncated | Frame::End),
                "cut {cut}: {last:?}"
            );
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let data = sample();
        for i in 0..data.len() {
            for bit in 0..8 {
                let mut bad = data.clone();
                bad[i] ^= 1 << bit;
                let mut at = 0;
                let mut ok = true;
                loop {
                    match read_frame(&bad, at) {
                        Frame::Good { payload, next } => {
                            if parse(payload).is_err() {
                                ok = false;
                                break;
                            }
                            at = next;
                        }
                        Frame::End => break,
                        _ => {
                            ok = false;
                            break;
                        }
                    }
                }
                assert!(!ok, "flip of bit {bit} at byte {i} went unnoticed");
            }
        }
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        for payload in [
            &[][..],
            &[9],
            &[1, 0, 0],
            &[2, 1, 2, 3, 4, 5, 6, 7, 8, 255, 255, 255, 255],
        ] {
            assert!(parse(payload).is_err());
        }
    }
}

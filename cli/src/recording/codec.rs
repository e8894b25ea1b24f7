//! The entries of a version 3 record file, one after another inside
//! frames (see `framing`): ring records delta-encoded, reader blocks
//! verbatim, and the end marker.
//!
//! A ring record is seen as eight little-endian 64-bit words (ticket,
//! timestamp, buffer id, parent id, address, size, device|pid,
//! slot|event|kind|flags|reserved). Each word is predicted and only the
//! difference is stored, as a zigzag LEB128 varint:
//!
//! * the ticket from the previous record's ticket + 1 (the ring hands
//!   records on in ticket order, so it is usually exact);
//! * the timestamp from the previous record's timestamp (any writer);
//! * the six other words from the previous record of the same writer
//!   process (`process_slot`): buffer ids, addresses and sizes of one
//!   process move in small steps, its pid and often its device stay.
//!
//! The event code goes in the entry's tag; in its word it counts as 0, and
//! that word is rotated so the bytes that change (kind, flags, scope id)
//! sit in the low bits. Differences are taken with wrapping arithmetic, so
//! every 64-byte value round-trips exactly, sense or nonsense.
//!
//! Nothing here is trusted on decoding: every read is bounds-checked and a
//! bad entry is an error, never a panic.

use std::mem::offset_of;

use memtrack::Record;
use memtrack::format::RECORD_SIZE;

/// Words of a record.
const WORDS: usize = RECORD_SIZE / 8;
/// The word holding the event code, and the code's bit position in it.
const EVENT_WORD: usize = offset_of!(Record, event) / 8;
const EVENT_SHIFT: u32 = (offset_of!(Record, event) % 8 * 8) as u32;
/// The event word is rotated right by this much before it is predicted,
/// so the byte after the event code (the kind) is its lowest byte.
const EVENT_WORD_ROTATION: u32 = EVENT_SHIFT + 8;

const _: () = {
    assert!(size_of::<Record>() == RECORD_SIZE && RECORD_SIZE.is_multiple_of(8));
    assert!(offset_of!(Record, ticket) == 0 && offset_of!(Record, timestamp) == 8);
    // The words the stream predicts are those after the timestamp.
    assert!(EVENT_WORD >= 2);
};

/// Entry tag bits of a ring record (the tag's high bit is clear).
mod tag {
    /// The event code when it is 1..=15; 0: a byte with the code follows.
    pub const EVENT: u8 = 0x0F;
    /// The ticket is not the previous one + 1: its difference follows.
    pub const TICKET: u8 = 0x10;
    /// The writer's process slot is not the previous record's: it follows.
    pub const SLOT: u8 = 0x20;
    /// The timestamp differs from the previous record's: the difference follows.
    pub const TIME: u8 = 0x40;
    /// Tags with this bit are reader blocks: the tag is the block's code.
    pub const BLOCK: u8 = 0x80;
}

/// The reader-block code that ends a file (no bytes follow it).
pub const END_CODE: u8 = 0x8F;

/// Most bytes one encoded record takes: tag, mask, event byte, and nine
/// varints of at most 10 bytes (ticket, slot, timestamp, six words).
pub const MAX_RECORD_BYTES: usize = 3 + 9 * 10;

/// One decoded entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    /// A ring record.
    Record(Record),
    /// A reader block: its code and its 64 bytes (the code at byte 58).
    Block(u8, [u8; RECORD_SIZE]),
    /// The end of the file.
    End,
}

/// Why an entry could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum CodecError {
    /// The frame ended inside an entry.
    CutShort,
    /// A varint longer than 64 bits.
    VarintTooLong,
    /// A mask with bits that mean nothing.
    BadMask(u8),
    /// A tag with a bit that means nothing, or a ring-record event code 0.
    BadTag(u8),
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::CutShort => write!(f, "an entry runs past the end of its frame"),
            CodecError::VarintTooLong => write!(f, "a number longer than 64 bits"),
            CodecError::BadMask(m) => write!(f, "bad word mask {m:#04x}"),
            CodecError::BadTag(t) => write!(f, "bad entry tag {t:#04x}"),
        }
    }
}

/// What both sides predict from: the same state, updated the same way.
#[derive(Clone)]
struct Predictor {
    /// The previous record's ticket, timestamp and process slot.
    ticket: u64,
    timestamp: u64,
    slot: u16,
    /// Per process slot, the previous record's words (index 0 and 1
    /// unused), event word already rotated; grown on demand.
    streams: Vec<[u64; WORDS]>,
}

impl Predictor {
    fn new() -> Predictor {
        // The first ticket is predicted as 0 (u64::MAX + 1).
        Predictor { ticket: u64::MAX, timestamp: 0, slot: 0, streams: Vec::new() }
    }

    #[inline]
    fn stream(&mut self, slot: u16) -> &mut [u64; WORDS] {
        let index = slot as usize;
        if index >= self.streams.len() {
            self.streams.resize(index + 1, [0; WORDS]);
        }
        &mut self.streams[index]
    }
}

/// The words of `record` as predicted: the event byte cleared and the
/// event word rotated.
#[inline]
fn words_of(record: &Record) -> [u64; WORDS] {
    let mut words: [u64; WORDS] = bytemuck::cast(*record);
    for w in &mut words {
        *w = u64::from_le(*w);
    }
    words[EVENT_WORD] = (words[EVENT_WORD] & !(0xFF << EVENT_SHIFT)).rotate_right(EVENT_WORD_ROTATION);
    words
}

/// The inverse of [`words_of`].
#[inline]
fn record_of(mut words: [u64; WORDS], event: u8) -> Record {
    words[EVENT_WORD] = words[EVENT_WORD].rotate_left(EVENT_WORD_ROTATION) | (event as u64) << EVENT_SHIFT;
    for w in &mut words {
        *w = w.to_le();
    }
    bytemuck::cast(words)
}

#[inline]
fn zigzag(delta: u64) -> u64 {
    (delta << 1) ^ ((delta as i64 >> 63) as u64)
}

#[inline]
fn unzigzag(v: u64) -> u64 {
    (v >> 1) ^ (v & 1).wrapping_neg()
}

/// Appends `v` as LEB128 at `out[at..]`; returns the new end.
#[inline]
fn put_varint(out: &mut [u8; MAX_RECORD_BYTES], mut at: usize, mut v: u64) -> usize {
    while v >= 0x80 {
        out[at] = v as u8 | 0x80;
        v >>= 7;
        at += 1;
    }
    out[at] = v as u8;
    at + 1
}

/// Encodes entries; one per file, fed every entry in file order.
#[derive(Clone)]
pub struct Encoder {
    predictor: Predictor,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    /// An encoder at the start of a file.
    pub fn new() -> Encoder {
        Encoder { predictor: Predictor::new() }
    }

    /// Appends ring record `record` (whose event code is below 0x80).
    #[inline]
    pub fn record(&mut self, record: &Record, out: &mut Vec<u8>) {
        debug_assert!(record.event < tag::BLOCK, "reader codes are not ring records");
        let mut buf = [0u8; MAX_RECORD_BYTES];
        let words = words_of(record);
        let p = &mut self.predictor;
        let mut tag = if (1..=tag::EVENT).contains(&record.event) { record.event } else { 0 };
        // Tag and mask are filled in last; the event byte, if any, follows them.
        let mut at = 2;
        if tag == 0 {
            buf[at] = record.event;
            at += 1;
        }
        let ticket_delta = record.ticket.wrapping_sub(p.ticket.wrapping_add(1));
        if ticket_delta != 0 {
            tag |= tag::TICKET;
            at = put_varint(&mut buf, at, zigzag(ticket_delta));
        }
        let slot = record.process_slot;
        if slot != p.slot {
            tag |= tag::SLOT;
            at = put_varint(&mut buf, at, slot as u64);
        }
        let time_delta = record.timestamp.wrapping_sub(p.timestamp);
        if time_delta != 0 {
            tag |= tag::TIME;
            at = put_varint(&mut buf, at, zigzag(time_delta));
        }
        (p.ticket, p.timestamp, p.slot) = (record.ticket, record.timestamp, slot);
        let stream = p.stream(slot);
        let mut mask = 0u8;
        for i in 2..WORDS {
            let delta = words[i].wrapping_sub(stream[i]);
            if delta != 0 {
                mask |= 1 << (i - 2);
                at = put_varint(&mut buf, at, zigzag(delta));
            }
        }
        *stream = words;
        buf[0] = tag;
        buf[1] = mask;
        out.extend_from_slice(&buf[..at]);
    }

    /// Appends reader block `bytes` (its code, 0x80..0x8F, at byte 58).
    pub fn block(&mut self, code: u8, bytes: &[u8; RECORD_SIZE], out: &mut Vec<u8>) {
        debug_assert!(code >= tag::BLOCK && code != END_CODE);
        out.push(code);
        out.extend_from_slice(bytes);
    }

    /// Appends the end marker.
    pub fn end(&mut self, out: &mut Vec<u8>) {
        out.push(END_CODE);
    }
}

/// Decodes entries; one per file, fed every entry in file order.
#[derive(Clone)]
pub struct Decoder {
    predictor: Predictor,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

/// Reads from a frame's payload.
struct Input<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Input<'_> {
    #[inline]
    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self.bytes.get(self.at).ok_or(CodecError::CutShort)?;
        self.at += 1;
        Ok(b)
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            // The tenth byte may carry only the top bit of 64.
            if shift == 63 && b > 1 {
                return Err(CodecError::VarintTooLong);
            }
            v |= ((b & 0x7F) as u64) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(CodecError::VarintTooLong)
    }
}

impl Decoder {
    /// A decoder at the start of a file.
    pub fn new() -> Decoder {
        Decoder { predictor: Predictor::new() }
    }

    /// Decodes the entry at `bytes[*at..]` and moves `at` past it.
    ///
    /// # Errors
    /// The entry is cut short or malformed. The decoder's state is then
    /// unspecified: a file is not read past a bad entry.
    #[inline]
    pub fn entry(&mut self, bytes: &[u8], at: &mut usize) -> Result<Entry, CodecError> {
        let mut input = Input { bytes, at: *at };
        let entry = self.decode(&mut input)?;
        *at = input.at;
        Ok(entry)
    }

    #[inline]
    fn decode(&mut self, input: &mut Input<'_>) -> Result<Entry, CodecError> {
        let tag = input.byte()?;
        if tag & tag::BLOCK != 0 {
            if tag == END_CODE {
                return Ok(Entry::End);
            }
            let block = input.bytes.get(input.at..input.at + RECORD_SIZE).ok_or(CodecError::CutShort)?;
            input.at += RECORD_SIZE;
            return Ok(Entry::Block(tag, block.try_into().expect("RECORD_SIZE bytes")));
        }
        let mask = input.byte()?;
        if mask >> (WORDS - 2) != 0 {
            return Err(CodecError::BadMask(mask));
        }
        let event = match tag & tag::EVENT {
            0 => match input.byte()? {
                // Codes 1..=15 go in the tag, reader codes are never records.
                e if e == 0 || (e > tag::EVENT && e < tag::BLOCK) => e,
                _ => return Err(CodecError::BadTag(tag)),
            },
            e => e,
        };
        let p = &mut self.predictor;
        let mut ticket = p.ticket.wrapping_add(1);
        if tag & tag::TICKET != 0 {
            ticket = ticket.wrapping_add(unzigzag(input.varint()?));
        }
        let mut slot = p.slot;
        if tag & tag::SLOT != 0 {
            slot = u16::try_from(input.varint()?).map_err(|_| CodecError::BadTag(tag))?;
        }
        let mut timestamp = p.timestamp;
        if tag & tag::TIME != 0 {
            timestamp = timestamp.wrapping_add(unzigzag(input.varint()?));
        }
        let stream = p.stream(slot);
        let mut words = *stream;
        for (i, word) in words.iter_mut().enumerate().skip(2) {
            if mask & 1 << (i - 2) != 0 {
                *word = word.wrapping_add(unzigzag(input.varint()?));
            }
        }
        *stream = words;
        (p.ticket, p.timestamp, p.slot) = (ticket, timestamp, slot);
        words[0] = ticket;
        words[1] = timestamp;
        let record = record_of(words, event);
        if record.process_slot != slot {
            // The slot in the record's own word disagrees with the stream
            // it was filed under: the encoder never writes that.
            return Err(CodecError::BadTag(tag));
        }
        Ok(Entry::Record(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(records: &[Record]) -> Vec<u8> {
        let mut encoder = Encoder::new();
        let mut bytes = Vec::new();
        for r in records {
            encoder.record(r, &mut bytes);
        }
        let mut decoder = Decoder::new();
        let mut at = 0;
        for r in records {
            assert_eq!(decoder.entry(&bytes, &mut at), Ok(Entry::Record(*r)));
        }
        assert_eq!(at, bytes.len());
        bytes
    }

    #[test]
    fn zigzag_round_trips_the_extremes() {
        for v in [0, 1, u64::MAX, u64::MAX - 1, 1 << 63, (1 << 63) - 1, 12345] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(u64::MAX), 1, "-1 is small");
    }

    #[test]
    fn a_churn_of_alloc_free_pairs_takes_a_few_bytes_a_record() {
        let records: Vec<Record> = (0..10_000u64)
            .map(|i| Record {
                ticket: i,
                timestamp: 1_000_000 + i * 40,
                buffer_id: i / 2,
                address: 0x1000_0000 + (i / 2 % 64) * 0x4000,
                size: 4096,
                device_id: 1,
                pid: 4242,
                process_slot: 3,
                event: if i % 2 == 0 { 1 } else { 2 },
                ..Default::default()
            })
            .collect();
        let bytes = round_trip(&records);
        let per_record = bytes.len() as f64 / records.len() as f64;
        assert!(per_record <= 8.0, "{per_record} bytes a record");
    }

    #[test]
    fn the_extremes_round_trip() {
        let max = Record {
            ticket: u64::MAX,
            timestamp: u64::MAX,
            buffer_id: u64::MAX,
            parent_id: u64::MAX,
            address: u64::MAX,
            size: u64::MAX,
            device_id: u32::MAX,
            pid: u32::MAX,
            process_slot: u16::MAX,
            event: 0x7F,
            kind: u8::MAX,
            flags: u8::MAX,
            reserved: [0xFF; 3],
        };
        let zero = Record::default();
        let bytes = round_trip(&[max, zero, max, max, zero, Record { event: 16, ..zero }]);
        assert!(bytes.len() <= 6 * MAX_RECORD_BYTES);
    }

    #[test]
    fn bad_entries_are_errors() {
        let mut d = Decoder::new();
        let mut at = 0;
        assert_eq!(d.entry(&[], &mut at), Err(CodecError::CutShort));
        assert_eq!(d.entry(&[0x01, 0x40], &mut at), Err(CodecError::BadMask(0x40)));
        assert_eq!(d.entry(&[0x00, 0x00, 0x80], &mut at), Err(CodecError::BadTag(0)));
        let long = [0x01, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
        assert_eq!(d.entry(&long, &mut at), Err(CodecError::VarintTooLong));
        assert_eq!(d.entry(&[0x81, 0, 0], &mut at), Err(CodecError::CutShort));
        assert_eq!(d.entry(&[END_CODE], &mut at), Ok(Entry::End));
    }
}

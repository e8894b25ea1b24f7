//! Frames: the unit a version 3 record file is committed in.
//!
//! ```text
//! frame header   16 bytes, little-endian
//!   u32 payload length in bytes (1 ..= MAX_PAYLOAD)
//!   u32 entries in the payload (1 ..= payload length)
//!   u32 CRC-32 of the payload
//!   u32 CRC-32 of the 12 bytes above
//! payload        the entries (see `codec`), back to back
//! ```
//!
//! CRC-32 is ISO-HDLC, as zlib's `crc32`. The header has its own checksum
//! so that a damaged length is told from a file that ends inside a frame.
//!
//! The reader writes one frame per batch it takes from the ring, before
//! it commits the batch, so a reader killed at any point leaves a file
//! whose complete frames hold everything it acknowledged; a frame cut
//! short is its torn tail, and a frame whose checksum fails is corrupt.

/// Bytes of a frame header.
pub const FRAME_HEADER_SIZE: usize = 16;
/// The largest payload a reader accepts (writers seal a frame at
/// [`SEAL_AT`], well below it).
pub const MAX_PAYLOAD: u32 = 16 << 20;
/// A writer seals its frame once the payload reaches this many bytes.
pub const SEAL_AT: usize = 1 << 20;

/// A frame's header, as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload bytes.
    pub length: u32,
    /// Entries in the payload.
    pub entries: u32,
    payload_crc: u32,
}

/// Why a frame header is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A length of 0 or above [`MAX_PAYLOAD`], or more entries than bytes.
    BadHeader { length: u32, entries: u32 },
    /// The header's checksum does not match it.
    HeaderChecksum,
    /// The payload's checksum does not match it.
    Checksum,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::BadHeader { length, entries } => {
                write!(f, "bad frame header (payload {length} bytes, {entries} entries)")
            }
            FrameError::HeaderChecksum => write!(f, "frame header checksum mismatch"),
            FrameError::Checksum => write!(f, "checksum mismatch"),
        }
    }
}

/// The header of a frame holding `payload` with `entries` entries.
pub fn header_for(payload: &[u8], entries: u32) -> [u8; FRAME_HEADER_SIZE] {
    let length = u32::try_from(payload.len()).expect("frames are sealed at SEAL_AT bytes");
    let mut header = [0u8; FRAME_HEADER_SIZE];
    header[0..4].copy_from_slice(&length.to_le_bytes());
    header[4..8].copy_from_slice(&entries.to_le_bytes());
    header[8..12].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let header_crc = crc32fast::hash(&header[0..12]);
    header[12..16].copy_from_slice(&header_crc.to_le_bytes());
    header
}

impl FrameHeader {
    /// Parses and checks a header (the payload is checked by
    /// [`FrameHeader::check`]).
    pub fn parse(bytes: &[u8; FRAME_HEADER_SIZE]) -> Result<FrameHeader, FrameError> {
        let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        if crc32fast::hash(&bytes[0..12]) != word(12) {
            return Err(FrameError::HeaderChecksum);
        }
        let header = FrameHeader { length: word(0), entries: word(4), payload_crc: word(8) };
        if header.length == 0
            || header.length > MAX_PAYLOAD
            || header.entries == 0
            || header.entries > header.length
        {
            return Err(FrameError::BadHeader { length: header.length, entries: header.entries });
        }
        Ok(header)
    }

    /// Whether `payload` is what this header was written for.
    pub fn check(&self, payload: &[u8]) -> Result<(), FrameError> {
        if crc32fast::hash(payload) == self.payload_crc { Ok(()) } else { Err(FrameError::Checksum) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_checks_its_payload() {
        let payload = b"some entries";
        let header = header_for(payload, 3);
        let parsed = FrameHeader::parse(&header).unwrap();
        assert_eq!((parsed.length, parsed.entries), (12, 3));
        assert_eq!(parsed.check(payload), Ok(()));
        assert_eq!(parsed.check(b"some entriez"), Err(FrameError::Checksum));
        // zlib's crc32 (the known check value of CRC-32/ISO-HDLC).
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        let mut flipped = header;
        flipped[0] ^= 1;
        assert_eq!(FrameHeader::parse(&flipped), Err(FrameError::HeaderChecksum));
    }

    #[test]
    fn nonsense_headers_are_refused() {
        let mut bad = header_for(b"x", 1);
        bad[0..4].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        let crc = crc32fast::hash(&bad[0..12]);
        bad[12..16].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(FrameHeader::parse(&bad), Err(FrameError::BadHeader { .. })));
        assert!(FrameHeader::parse(&[0; FRAME_HEADER_SIZE]).is_err());
        assert!(FrameHeader::parse(&header_for(b"x", 2)).is_err(), "more entries than bytes");
    }
}

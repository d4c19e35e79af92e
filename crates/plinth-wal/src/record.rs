//! The on-disk record format: `len: u32 LE | crc32c: u32 LE | lsn: u64 LE | payload`.

use crate::Lsn;

/// Bytes before the payload: len, crc and lsn.
pub(crate) const HEADER_BYTES: usize = 16;

/// The `len` field counts the lsn and the payload, so it is never below this.
const LEN_FIELD_MIN: u32 = 8;

/// Largest payload a record may carry; also bounds what recovery will believe
/// a `len` field, so a flipped high bit cannot make it skip gigabytes.
pub const PAYLOAD_BYTES_MAX: usize = 64 << 20;

/// Bytes a record with this payload occupies on disk.
pub(crate) fn encoded_bytes(payload_bytes: usize) -> usize {
    HEADER_BYTES + payload_bytes
}

/// Appends one encoded record to `buf`. The caller has checked the payload size.
pub(crate) fn encode_into(buf: &mut Vec<u8>, lsn: Lsn, payload: &[u8]) {
    debug_assert!(payload.len() <= PAYLOAD_BYTES_MAX);
    let len = LEN_FIELD_MIN + payload.len() as u32;
    buf.reserve(encoded_bytes(payload.len()));
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&checksum(lsn, payload).to_le_bytes());
    buf.extend_from_slice(&lsn.to_le_bytes());
    buf.extend_from_slice(payload);
}

fn checksum(lsn: Lsn, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&lsn.to_le_bytes()), payload)
}

/// What the bytes at one offset turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// A whole record whose checksum matches; `end` is the offset just past it.
    Record {
        lsn: Lsn,
        payload: &'a [u8],
        end: usize,
    },
    /// The header or the payload runs past the end of the buffer.
    Incomplete {
        record_bytes: u64,
        available_bytes: u64,
    },
    /// The `len` field cannot belong to any record this crate writes.
    BadLength { len: u32 },
    /// The record fits but its checksum does not match.
    BadChecksum,
}

impl Decoded<'_> {
    /// Why the bytes are not a record, as a lower-case phrase for errors and logs.
    pub(crate) fn problem(&self) -> String {
        match self {
            Decoded::Record { .. } => "valid record".to_owned(),
            Decoded::Incomplete {
                record_bytes,
                available_bytes,
            } => format!(
                "record of {record_bytes} bytes runs past the end of the file \
                 ({available_bytes} bytes remain)"
            ),
            Decoded::BadLength { len } => format!(
                "record length field is {len}, outside the valid range {LEN_FIELD_MIN}..={}",
                LEN_FIELD_MIN as usize + PAYLOAD_BYTES_MAX
            ),
            Decoded::BadChecksum => "checksum mismatch".to_owned(),
        }
    }
}

/// Decodes the record starting at `at` in `buf`.
pub(crate) fn decode(buf: &[u8], at: usize) -> Decoded<'_> {
    let available = buf.len().saturating_sub(at);
    if available < HEADER_BYTES {
        return Decoded::Incomplete {
            record_bytes: HEADER_BYTES as u64,
            available_bytes: available as u64,
        };
    }
    let header = &buf[at..at + HEADER_BYTES];
    let len = u32::from_le_bytes(field(header, 0));
    let crc = u32::from_le_bytes(field(header, 4));
    let lsn = u64::from_le_bytes(field(header, 8));
    if len < LEN_FIELD_MIN || (len - LEN_FIELD_MIN) as usize > PAYLOAD_BYTES_MAX {
        return Decoded::BadLength { len };
    }
    let payload_bytes = (len - LEN_FIELD_MIN) as usize;
    let record_bytes = encoded_bytes(payload_bytes);
    if available < record_bytes {
        return Decoded::Incomplete {
            record_bytes: record_bytes as u64,
            available_bytes: available as u64,
        };
    }
    let payload = &buf[at + HEADER_BYTES..at + record_bytes];
    if checksum(lsn, payload) != crc {
        return Decoded::BadChecksum;
    }
    Decoded::Record {
        lsn,
        payload,
        end: at + record_bytes,
    }
}

fn field<const N: usize>(header: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&header[at..at + N]);
    out
}

/// Looks for a whole, checksummed record with an lsn in `lsns` starting
/// anywhere at or after `from`. Recovery uses it to tell a torn tail (nothing
/// valid follows) from damage in the middle of the log (later records survive).
/// Matching the lsn field first keeps this linear: random payload bytes almost
/// never fall into the narrow lsn window, so checksums are rarely computed.
pub(crate) fn find_record_in(
    buf: &[u8],
    from: usize,
    lsns: std::ops::RangeInclusive<Lsn>,
) -> Option<(usize, Lsn)> {
    let last_start = buf.len().checked_sub(HEADER_BYTES)?;
    (from..=last_start).find_map(|at| {
        let lsn = u64::from_le_bytes(field(&buf[at..], 8));
        if !lsns.contains(&lsn) {
            return None;
        }
        match decode(buf, at) {
            Decoded::Record { lsn, .. } => Some((at, lsn)),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(lsn: Lsn, payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_into(&mut buf, lsn, payload);
        buf
    }

    #[test]
    fn a_record_decodes_to_what_was_encoded() {
        let buf = encoded(42, b"hello");
        assert_eq!(buf.len(), encoded_bytes(5));
        assert_eq!(
            decode(&buf, 0),
            Decoded::Record {
                lsn: 42,
                payload: b"hello",
                end: buf.len()
            }
        );
    }

    #[test]
    fn an_empty_payload_is_a_valid_record() {
        let buf = encoded(7, b"");
        assert_eq!(
            decode(&buf, 0),
            Decoded::Record {
                lsn: 7,
                payload: b"",
                end: HEADER_BYTES
            }
        );
    }

    #[test]
    fn every_strict_prefix_of_a_record_is_incomplete() {
        let buf = encoded(1, b"payload bytes");
        for cut in 0..buf.len() {
            assert!(
                matches!(decode(&buf[..cut], 0), Decoded::Incomplete { .. }),
                "prefix of {cut} bytes"
            );
        }
    }

    #[test]
    fn a_flipped_payload_bit_is_a_checksum_mismatch() {
        let mut buf = encoded(1, b"payload bytes");
        buf[HEADER_BYTES + 3] ^= 0x10;
        assert_eq!(decode(&buf, 0), Decoded::BadChecksum);
    }

    #[test]
    fn a_flipped_lsn_bit_is_a_checksum_mismatch() {
        let mut buf = encoded(1, b"payload bytes");
        buf[9] ^= 0x01;
        assert_eq!(decode(&buf, 0), Decoded::BadChecksum);
    }

    #[test]
    fn a_length_below_the_lsn_field_is_a_bad_length() {
        let mut buf = encoded(1, b"x");
        buf[..4].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(decode(&buf, 0), Decoded::BadLength { len: 3 });
    }

    #[test]
    fn a_length_over_the_payload_limit_is_a_bad_length() {
        let mut buf = encoded(1, b"x");
        buf[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&buf, 0), Decoded::BadLength { len: u32::MAX });
    }

    #[test]
    fn find_record_in_skips_garbage_and_matches_only_the_lsn_window() {
        let mut buf = vec![0xAB; 37];
        let at = buf.len();
        buf.extend(encoded(10, b"later"));
        assert_eq!(find_record_in(&buf, 0, 10..=12), Some((at, 10)));
        assert_eq!(find_record_in(&buf, 0, 11..=12), None);
        assert_eq!(find_record_in(&buf, at + 1, 10..=12), None);
    }
}

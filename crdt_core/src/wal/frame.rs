//! Framing of log records and of the files that hold them.
//!
//! Format 2 (this build writes it). A file starts with a 24-byte header: an 8-byte magic (`DRSDTPWL` for a
//! segment, `DRSNAP02` for a snapshot), the format version (u16), two reserved bytes, the sequence number of
//! the first record the file holds (u64; a snapshot: 0) and a CRC32 of those 20 bytes. Records follow, each
//! self-delimiting and verifiable on its own:
//!
//! ```text
//! [0xD7 0x57][kind u8][flags u8][len u32][seq u64][index u32][payload crc32][header crc32][payload]
//! ```
//!
//! `seq` numbers every record of the log (it keeps counting across segments and snapshots), `index` is the
//! record's position in its group commit (so `seq - index` is the group's first record) and the header CRC
//! covers the 24 bytes before it. A damaged header is found by its CRC and recovery resynchronises at the
//! next header that verifies; a damaged payload under a good header costs exactly that record. Integers
//! are little-endian.
//!
//! Format 1 (written before; still read): no file header, records `[0xD7][len u32][payload crc32][payload]`,
//! snapshots `["DRSNAP01"][len u64][crc32][state]`.

/// Largest single record; a length beyond it marks a corrupt header rather than a huge allocation.
pub const MAX_RECORD_BYTES: usize = 256 << 20;

pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"DRSDTPWL";
pub(crate) const SNAPSHOT_MAGIC: &[u8; 8] = b"DRSNAP02";
pub(crate) const SNAPSHOT_MAGIC_V1: &[u8; 8] = b"DRSNAP01";
pub(crate) const FORMAT: u16 = 2;
pub(crate) const FILE_HEADER: usize = 24;
pub(crate) const RECORD_HEADER: usize = 28;
const RECORD_MAGIC: [u8; 2] = [0xD7, 0x57];
const V1_MAGIC: u8 = 0xD7;
const V1_HEADER: usize = 9;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A delta merged into the store on recovery.
    Delta = 1,
    /// A host payload handed back on recovery, in log order, never merged.
    Aux = 2,
    /// Part of a snapshot's state.
    Chunk = 3,
    /// The last record of a snapshot: what it covers and how many chunks it has.
    SnapshotEnd = 4,
    /// Written when the log is closed cleanly: everything before it was durable.
    Close = 5,
}

impl RecordKind {
    fn from_u8(b: u8) -> Option<RecordKind> {
        Some(match b {
            1 => RecordKind::Delta,
            2 => RecordKind::Aux,
            3 => RecordKind::Chunk,
            4 => RecordKind::SnapshotEnd,
            5 => RecordKind::Close,
            _ => return None,
        })
    }
}

/// A verified record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub kind: RecordKind,
    pub len: usize,
    pub seq: u64,
    pub index: u32,
    pub crc: u32,
}

impl Header {
    /// First record of the header's group commit.
    pub fn group(&self) -> u64 {
        self.seq.saturating_sub(u64::from(self.index))
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Appends one record to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, kind: RecordKind, seq: u64, index: u32, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&RECORD_MAGIC);
    out.push(kind as u8);
    out.push(0);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let crc = crc32fast::hash(&out[start..start + 24]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The header at the start of `b`, if it verifies (magic, CRC, known kind, sane length).
pub(crate) fn parse_header(b: &[u8]) -> Option<Header> {
    let h = b.get(..RECORD_HEADER)?;
    if h[..2] != RECORD_MAGIC || crc32fast::hash(&h[..24]) != u32_at(h, 24) {
        return None;
    }
    let len = u32_at(h, 4) as usize;
    if len > MAX_RECORD_BYTES || h[3] != 0 {
        return None;
    }
    Some(Header { kind: RecordKind::from_u8(h[2])?, len, seq: u64_at(h, 8), index: u32_at(h, 16), crc: u32_at(h, 20) })
}

/// A file header (segment or snapshot).
pub(crate) fn file_header(magic: &[u8; 8], first_seq: u64) -> [u8; FILE_HEADER] {
    let mut h = [0u8; FILE_HEADER];
    h[..8].copy_from_slice(magic);
    h[8..10].copy_from_slice(&FORMAT.to_le_bytes());
    h[12..20].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The first sequence number a file header announces, if the header verifies and has `magic`.
pub(crate) fn parse_file_header(b: &[u8], magic: &[u8; 8]) -> Option<u64> {
    let h = b.get(..FILE_HEADER)?;
    let ok =
        &h[..8] == magic && u16::from_le_bytes([h[8], h[9]]) == FORMAT && crc32fast::hash(&h[..20]) == u32_at(h, 20);
    ok.then(|| u64_at(h, 12))
}

/// One step of reading a buffer of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// A record whose header and payload verify; the payload is `at + RECORD_HEADER .. end`.
    Record { at: usize, end: usize, header: Header },
    /// A record whose header verifies but whose payload does not (its extent is known).
    BadPayload { at: usize, end: usize, header: Header },
    /// Bytes that hold no verifiable record up to the next header that verifies (or the end).
    Garbage { at: usize, end: usize },
    /// A verified header whose payload runs past the end of the buffer (a write cut short).
    Cut { at: usize, end: usize, header: Header },
}

/// Reads format-2 records from `b[start..]`, resynchronising after damage at the next header that verifies.
pub(crate) struct Scanner<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    pub fn new(b: &'a [u8], start: usize) -> Scanner<'a> {
        Scanner { b, at: start.min(b.len()) }
    }

    /// The next header that verifies at or after `from`.
    fn next_header(&self, from: usize) -> Option<usize> {
        let b = self.b;
        let mut i = from;
        while i + RECORD_HEADER <= b.len() {
            let off = b[i..b.len() - RECORD_HEADER + 1].iter().position(|&x| x == RECORD_MAGIC[0])?;
            i += off;
            if parse_header(&b[i..]).is_some() {
                return Some(i);
            }
            i += 1;
        }
        None
    }
}

impl Iterator for Scanner<'_> {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        let (b, at) = (self.b, self.at);
        if at >= b.len() {
            return None;
        }
        let item = match parse_header(&b[at..]) {
            Some(header) => {
                let end = at + RECORD_HEADER + header.len;
                match b.get(at + RECORD_HEADER..end) {
                    Some(p) if crc32fast::hash(p) == header.crc => Item::Record { at, end, header },
                    Some(_) => Item::BadPayload { at, end, header },
                    None => Item::Cut { at, end: b.len(), header },
                }
            }
            None => Item::Garbage { at, end: self.next_header(at + 1).unwrap_or(b.len()) },
        };
        self.at = match item {
            Item::Record { end, .. }
            | Item::BadPayload { end, .. }
            | Item::Garbage { end, .. }
            | Item::Cut { end, .. } => end,
        };
        Some(item)
    }
}

/// One step of reading format-1 records (no sequence numbers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ItemV1 {
    /// A record that verifies; the payload is `at + 9 .. end`.
    Record { at: usize, end: usize },
    /// Bytes holding no verifiable record up to the next one that verifies (or the end).
    Garbage { at: usize, end: usize },
}

fn v1_record_at(b: &[u8], at: usize) -> Option<usize> {
    let h = b.get(at..at + V1_HEADER)?;
    if h[0] != V1_MAGIC {
        return None;
    }
    let len = u32_at(h, 1) as usize;
    if len > MAX_RECORD_BYTES {
        return None;
    }
    let payload = b.get(at + V1_HEADER..at + V1_HEADER + len)?;
    (crc32fast::hash(payload) == u32_at(h, 5)).then_some(at + V1_HEADER + len)
}

/// Reads format-1 records, resynchronising after damage at the next record whose CRC verifies.
pub(crate) fn scan_v1(b: &[u8]) -> Vec<ItemV1> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        if let Some(end) = v1_record_at(b, at) {
            out.push(ItemV1::Record { at, end });
            at = end;
            continue;
        }
        let mut next = at + 1;
        let end = loop {
            match b.get(next..).and_then(|rest| rest.iter().position(|&x| x == V1_MAGIC)) {
                Some(off) if v1_record_at(b, next + off).is_some() => break next + off,
                Some(off) => next += off + 1,
                None => break b.len(),
            }
        };
        out.push(ItemV1::Garbage { at, end });
        at = end;
    }
    out
}

/// Where the payload of a format-1 record at `at` ending at `end` lies.
pub(crate) fn v1_payload_range(at: usize, end: usize) -> std::ops::Range<usize> {
    at + V1_HEADER..end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: u64) -> Vec<u8> {
        let mut b = Vec::new();
        for i in 0..n {
            encode(&mut b, RecordKind::Delta, 10 + i, i as u32, format!("payload {i}").as_bytes());
        }
        b
    }

    #[test]
    fn records_round_trip_with_their_group() {
        let b = records(3);
        let items: Vec<Item> = Scanner::new(&b, 0).collect();
        assert_eq!(items.len(), 3);
        let Item::Record { header, at, end } = items[2] else { panic!("{items:?}") };
        assert_eq!((header.seq, header.index, header.group()), (12, 2, 10));
        assert_eq!(&b[at + RECORD_HEADER..end], b"payload 2");
    }

    #[test]
    fn a_damaged_header_resynchronises_at_the_next_record() {
        let mut b = records(3);
        let second = b.len() / 3;
        b[second + 9] ^= 0x10; // inside the second header's seq: its CRC fails
        let items: Vec<Item> = Scanner::new(&b, 0).collect();
        assert!(matches!(items[0], Item::Record { .. }));
        assert!(matches!(items[1], Item::Garbage { at, end } if at == second && end == 2 * second), "{items:?}");
        assert!(matches!(items[2], Item::Record { header, .. } if header.seq == 12));
    }

    #[test]
    fn a_damaged_payload_costs_exactly_its_record() {
        let mut b = records(3);
        let n = b.len();
        b[n / 3 + RECORD_HEADER + 2] ^= 1;
        let items: Vec<Item> = Scanner::new(&b, 0).collect();
        assert!(matches!(items[1], Item::BadPayload { header, .. } if header.seq == 11));
        assert!(matches!(items[2], Item::Record { header, .. } if header.seq == 12));
    }

    #[test]
    fn a_record_cut_short_is_reported_as_cut() {
        let b = records(2);
        let cut = &b[..b.len() - 3];
        let items: Vec<Item> = Scanner::new(cut, 0).collect();
        assert!(matches!(items[1], Item::Cut { header, end, .. } if header.seq == 11 && end == cut.len()));
        // A header cut short is garbage: nothing verifies.
        let items: Vec<Item> = Scanner::new(&b[..b.len() / 2 + 10], 0).collect();
        assert!(matches!(items[1], Item::Garbage { .. }), "{items:?}");
    }

    #[test]
    fn file_headers_verify() {
        let h = file_header(SEGMENT_MAGIC, 42);
        assert_eq!(parse_file_header(&h, SEGMENT_MAGIC), Some(42));
        assert_eq!(parse_file_header(&h, SNAPSHOT_MAGIC), None);
        let mut bad = h;
        bad[13] ^= 1;
        assert_eq!(parse_file_header(&bad, SEGMENT_MAGIC), None);
    }

    #[test]
    fn format_one_resynchronises_too() {
        let mut b = Vec::new();
        for p in [&b"one"[..], b"two", b"three"] {
            b.push(V1_MAGIC);
            b.extend_from_slice(&(p.len() as u32).to_le_bytes());
            b.extend_from_slice(&crc32fast::hash(p).to_le_bytes());
            b.extend_from_slice(p);
        }
        b[V1_HEADER + 3 + V1_HEADER] ^= 0xFF; // the second payload
        let items = scan_v1(&b);
        assert_eq!(items.len(), 3, "{items:?}");
        assert!(matches!(items[1], ItemV1::Garbage { at: 12, end: 24 }));
        let ItemV1::Record { at, end } = items[2] else { panic!() };
        assert_eq!(&b[v1_payload_range(at, end)], b"three");
    }
}

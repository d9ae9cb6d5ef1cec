//! Pre-compressed bodies that can be joined without recompressing.
//!
//! Every view is stored as one gzip member whose deflate data ends with a *full flush*
//! (byte-aligned, no dictionary carried over) and is closed by an empty final block.
//! Stripping the 10-byte header and the 10 closing bytes (final block + CRC + size)
//! leaves a deflate fragment that can be placed next to other such fragments. A joined
//! body is then one ordinary gzip member: header, fragments, final block, and a CRC
//! combined from the pieces' CRCs (no pass over the data). Every gzip client can read
//! it, unlike concatenated members, which some clients stop reading after the first.

use std::cell::RefCell;

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, FlushCompress};

const HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty final block with fixed Huffman codes: BFINAL=1, BTYPE=01, end-of-block.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];
const CLOSING_LEN: usize = FINAL_BLOCK.len() + 8;

thread_local! {
    /// One deflate state per thread and level: creating one allocates and zeroes
    /// ~256 KB, which costs more than compressing a small offers document.
    static DEFLATE: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
}

/// Below this size a view is stored, not compressed: a deflate pass would cost more
/// (state reset, hash tables) than the few bytes it saves on a small document.
pub const STORE_BELOW: usize = 1024;

/// Compresses `data` into one joinable gzip member at `level` (0–9).
pub fn compress(data: &[u8], level: u32) -> Bytes {
    if data.len() < STORE_BELOW {
        return stored(data);
    }
    let level = level.min(9);
    DEFLATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        match slot.as_mut() {
            Some((l, c)) if *l == level => {
                c.reset();
                compress_with(c, data)
            }
            _ => {
                let mut c = Compress::new(Compression::new(level), false);
                let out = compress_with(&mut c, data);
                *slot = Some((level, c));
                out
            }
        }
    })
}

fn compress_with(c: &mut Compress, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(HEADER.len() + data.len() / 3 + 64);
    out.extend_from_slice(&HEADER);
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(4096.max(data.len() / 4));
        }
        let consumed = usize::try_from(c.total_in()).unwrap_or(data.len());
        // Deflate on an in-memory buffer only fails on misuse, which the loop avoids.
        if c.compress_vec(&data[consumed..], &mut out, FlushCompress::Full)
            .is_err()
        {
            unreachable!("deflate into a Vec with spare capacity cannot fail");
        }
        let consumed = usize::try_from(c.total_in()).unwrap_or(data.len());
        if consumed == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    out.extend_from_slice(&FINAL_BLOCK);
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    Bytes::from(out)
}

/// A joinable member holding `data` (shorter than 64 KiB) in one stored block: a
/// non-final stored block ends byte-aligned and refers to nothing before it.
fn stored(data: &[u8]) -> Bytes {
    let len = data.len() as u16;
    let mut out = Vec::with_capacity(HEADER.len() + 5 + data.len() + CLOSING_LEN);
    out.extend_from_slice(&HEADER);
    out.push(0x00); // BFINAL = 0, BTYPE = 00 (stored), padded to the byte boundary
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&FINAL_BLOCK);
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    Bytes::from(out)
}

/// The CRC-32 recorded in a member's trailer.
pub fn member_crc(member: &[u8]) -> Option<u32> {
    let at = member.len().checked_sub(8)?;
    Some(u32::from_le_bytes(member[at..at + 4].try_into().ok()?))
}

/// Whether `member` has the shape [`compress`] produces.
pub fn is_joinable(member: &[u8]) -> bool {
    member.len() >= HEADER.len() + CLOSING_LEN
        && member[..HEADER.len()] == HEADER
        && member[member.len() - CLOSING_LEN..member.len() - 8] == FINAL_BLOCK
}

/// Builds one gzip member from joinable members placed one after another.
pub struct Joiner {
    out: BytesMut,
    crc: crc32fast::Hasher,
    len: u64,
}

impl Joiner {
    /// A joiner with room for about `capacity` compressed bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut out = BytesMut::with_capacity(capacity + HEADER.len() + CLOSING_LEN);
        out.put_slice(&HEADER);
        Joiner {
            out,
            crc: crc32fast::Hasher::new(),
            len: 0,
        }
    }

    /// Appends a member made by [`compress`] whose uncompressed length is `len`.
    pub fn push(&mut self, member: &[u8], crc: u32, len: usize) {
        self.out
            .put_slice(&member[HEADER.len()..member.len() - CLOSING_LEN]);
        self.crc
            .combine(&crc32fast::Hasher::new_with_initial_len(crc, len as u64));
        self.len += len as u64;
    }

    /// Closes the member.
    pub fn finish(mut self) -> Bytes {
        let len = self.len;
        self.out.put_slice(&FINAL_BLOCK);
        self.out.put_u32_le(self.crc.finalize());
        self.out.put_u32_le(len as u32);
        self.out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    #[test]
    fn a_member_is_plain_gzip() {
        let text = br#"{"id":"P1","name":"shoe"}"#.repeat(100);
        let m = compress(&text, 6);
        assert!(is_joinable(&m));
        assert!(m.len() < text.len() / 4);
        assert_eq!(gunzip(&m), text);
        assert_eq!(member_crc(&m), Some(crc32fast::hash(&text)));
    }

    #[test]
    fn joined_members_are_one_gzip_member() {
        let parts: [&[u8]; 5] = [b"[", br#"{"a":1}"#, b",", b"", br#"{"b":"xyz"}]"#];
        let mut j = Joiner::with_capacity(64);
        for p in parts {
            let m = compress(p, 6);
            j.push(&m, member_crc(&m).expect("crc"), p.len());
        }
        let joined = j.finish();
        // A single-member decoder (not MultiGzDecoder) reads the whole body.
        assert_eq!(gunzip(&joined), parts.concat());
    }

    proptest::proptest! {
        #[test]
        fn any_pieces_join(pieces in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..3000), 0..6), level in 0u32..10) {
            let mut j = Joiner::with_capacity(64);
            for p in &pieces {
                let m = compress(p, level);
                j.push(&m, member_crc(&m).expect("crc"), p.len());
            }
            proptest::prop_assert_eq!(gunzip(&j.finish()), pieces.concat());
        }
    }
}

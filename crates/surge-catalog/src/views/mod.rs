//! Views: the ready-to-send bytes of each document in each format, how they are keyed,
//! built (in the projector) and held in memory (in the read cache).

pub mod format;
pub mod gzip;
pub mod render;

use std::io::Read;

use bytes::Bytes;
use http::HeaderValue;
use surge_store::StoredView;

pub use format::Format;

/// Key of a product's view in `format`.
pub fn product_key(format: Format, id: &str) -> String {
    format!("p:{}:{id}", format.tag())
}

/// Key of the offers view of a product in one market, in `format`.
pub fn offers_key(format: Format, id: &str, market: &str) -> String {
    format!("o:{}:{id}:{market}", format.tag())
}

/// Whether the view under `key` is kept in the view store (product views) or only in
/// the read cache, rebuilt from source tables on a miss (offers views).
pub fn is_stored(key: &str) -> bool {
    key.starts_with("p:")
}

/// The parts of an offers key (`o:{format}:{id}:{market}`); ids and markets never
/// contain `:`, so the split is unambiguous.
pub fn parse_offers_key(key: &str) -> Option<(Format, &str, &str)> {
    let mut parts = key.split(':');
    if parts.next()? != "o" {
        return None;
    }
    let format = Format::ALL
        .into_iter()
        .find(|f| Some(f.tag()) == parts.clone().next())?;
    parts.next();
    let (id, market) = (parts.next()?, parts.next()?);
    parts.next().is_none().then_some((format, id, market))
}

/// A view in memory: both encodings, ready to send.
#[derive(Debug, Clone)]
pub struct View {
    /// The uncompressed bytes.
    pub identity: Bytes,
    /// The same bytes as one joinable gzip member (see [`gzip`]).
    pub gzip: Bytes,
    /// CRC-32 of `identity` (also in the gzip trailer), for joining.
    pub crc: u32,
    /// 64-bit hash of `identity`; the ETag is its hex form.
    pub hash: u64,
    /// `"<hash>"`, the ETag of the identity encoding.
    pub etag: HeaderValue,
    /// `"<hash>-gz"`, the ETag of the gzip encoding.
    pub etag_gzip: HeaderValue,
}

/// Why a stored view could not be turned into a [`View`].
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The stored bytes are not a joinable gzip member.
    #[error("stored view is not a joinable gzip member")]
    NotJoinable,
    /// The stored bytes do not inflate.
    #[error("stored view does not inflate: {0}")]
    Inflate(#[from] std::io::Error),
}

impl View {
    /// Builds a view from its identity bytes, compressing at `level`.
    pub fn build(identity: Bytes, level: u32) -> View {
        let gzip = gzip::compress(&identity, level);
        Self::assemble(identity, gzip)
    }

    /// Rebuilds a view from its stored form (inflating it once).
    pub fn from_stored(stored: &StoredView) -> Result<View, ViewError> {
        if !gzip::is_joinable(&stored.gzip) {
            return Err(ViewError::NotJoinable);
        }
        let mut identity = Vec::with_capacity(stored.gzip.len() * 4);
        flate2::read::GzDecoder::new(stored.gzip.as_ref()).read_to_end(&mut identity)?;
        Ok(Self::assemble(Bytes::from(identity), stored.gzip.clone()))
    }

    fn assemble(identity: Bytes, gzip: Bytes) -> View {
        let hash = xxhash_rust::xxh3::xxh3_64(&identity);
        View {
            crc: gzip::member_crc(&gzip).unwrap_or_default(),
            etag: etag_value(hash, ""),
            etag_gzip: etag_value(hash, "-gz"),
            hash,
            identity,
            gzip,
        }
    }

    /// The stored form of this view.
    pub fn to_stored(&self) -> StoredView {
        StoredView {
            gzip: self.gzip.clone(),
            etag: format!("{:016x}", self.hash),
        }
    }

    /// Bytes kept in memory for this view.
    pub fn weight(&self) -> usize {
        self.identity.len() + self.gzip.len() + 128
    }
}

/// Formats an ETag header value from a hash and a suffix.
pub fn etag_value(hash: u64, suffix: &str) -> HeaderValue {
    HeaderValue::try_from(format!("\"{hash:016x}{suffix}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

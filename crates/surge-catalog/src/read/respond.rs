//! Building read responses from views and joined pieces.

use std::sync::LazyLock;

use axum::body::Body;
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, VARY};
use http::{HeaderValue, StatusCode};

use super::Ask;
use super::negotiate;
use crate::api::AppState;
use crate::views::gzip::{self, Joiner};
use crate::views::{Format, View, etag_value};

static VARY_VALUE: HeaderValue = HeaderValue::from_static("Accept, Accept-Encoding");
static GZIP: HeaderValue = HeaderValue::from_static("gzip");

fn content_type(f: Format) -> HeaderValue {
    HeaderValue::from_static(f.media_type())
}

/// A constant piece of JSON with its joinable gzip member.
pub struct Piece {
    identity: &'static [u8],
    gzip: Bytes,
    crc: u32,
}

impl Piece {
    fn new(identity: &'static [u8]) -> Piece {
        Piece {
            identity,
            gzip: gzip::compress(identity, 9),
            crc: crc32fast::hash(identity),
        }
    }
}

/// The constant pieces joined around documents.
pub struct Pieces {
    pub open_array: Piece,
    pub comma: Piece,
    pub close_array: Piece,
    pub null: Piece,
    pub product_open: Piece,
    pub offers_sep: Piece,
    pub close_object: Piece,
}

pub static PIECES: LazyLock<Pieces> = LazyLock::new(|| Pieces {
    open_array: Piece::new(b"["),
    comma: Piece::new(b","),
    close_array: Piece::new(b"]"),
    null: Piece::new(b"null"),
    product_open: Piece::new(br#"{"product":"#),
    offers_sep: Piece::new(br#","offers":"#),
    close_object: Piece::new(b"}"),
});

/// A body being joined from pieces, in the negotiated encoding.
pub enum Joined {
    Identity(BytesMut),
    Gzip(Joiner),
}

impl Joined {
    pub fn new(ask: &Ask, identity_capacity: usize) -> Self {
        if ask.gzip {
            Joined::Gzip(Joiner::with_capacity(identity_capacity / 4))
        } else {
            Joined::Identity(BytesMut::with_capacity(identity_capacity))
        }
    }

    pub fn piece(&mut self, p: &Piece) {
        match self {
            Joined::Identity(b) => b.put_slice(p.identity),
            Joined::Gzip(j) => j.push(&p.gzip, p.crc, p.identity.len()),
        }
    }

    pub fn view(&mut self, v: &View) {
        match self {
            Joined::Identity(b) => b.put_slice(&v.identity),
            Joined::Gzip(j) => j.push(&v.gzip, v.crc, v.identity.len()),
        }
    }

    pub fn finish(self) -> Bytes {
        match self {
            Joined::Identity(b) => b.freeze(),
            Joined::Gzip(j) => j.finish(),
        }
    }
}

fn base(state: &AppState, ask: &Ask, status: StatusCode, body: Bytes) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, content_type(ask.format));
    h.insert(VARY, VARY_VALUE.clone());
    h.insert(CACHE_CONTROL, state.cache_control.clone());
    r
}

/// A cached view, or 304 when `If-None-Match` names it.
pub fn view(
    state: &AppState,
    ask: &Ask,
    v: &View,
    if_none_match: Option<&HeaderValue>,
) -> Response {
    if negotiate::not_modified(if_none_match, v.hash) {
        let mut r = base(state, ask, StatusCode::NOT_MODIFIED, Bytes::new());
        r.headers_mut().insert(
            ETAG,
            if ask.gzip {
                v.etag_gzip.clone()
            } else {
                v.etag.clone()
            },
        );
        return r;
    }
    let (body, etag) = if ask.gzip {
        (v.gzip.clone(), &v.etag_gzip)
    } else {
        (v.identity.clone(), &v.etag)
    };
    let mut r = base(state, ask, StatusCode::OK, body);
    let h = r.headers_mut();
    h.insert(ETAG, etag.clone());
    if ask.gzip {
        h.insert(CONTENT_ENCODING, GZIP.clone());
    }
    r
}

/// A joined body, with an ETag when the document has one.
pub fn bytes(state: &AppState, ask: &Ask, body: Bytes, hash: Option<u64>) -> Response {
    let mut r = base(state, ask, StatusCode::OK, body);
    let h = r.headers_mut();
    if let Some(hash) = hash {
        h.insert(ETAG, etag_value(hash, if ask.gzip { "-gz" } else { "" }));
    }
    if ask.gzip {
        h.insert(CONTENT_ENCODING, GZIP.clone());
    }
    r
}

/// 304 for a joined document.
pub fn not_modified(state: &AppState, ask: &Ask, hash: u64) -> Response {
    let mut r = base(state, ask, StatusCode::NOT_MODIFIED, Bytes::new());
    r.headers_mut()
        .insert(ETAG, etag_value(hash, if ask.gzip { "-gz" } else { "" }));
    r
}

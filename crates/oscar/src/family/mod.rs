//! One module per OSCAR food group: typed request and response bodies that encode and decode.

pub mod bucp;
pub mod buddy;
pub mod feedbag;
pub mod icbm;
pub mod locate;
pub mod oservice;
pub mod pd;

/// Food-group numbers.
pub const OSERVICE: u16 = 0x0001;
pub const LOCATE: u16 = 0x0002;
pub const BUDDY: u16 = 0x0003;
pub const ICBM: u16 = 0x0004;
pub const PD: u16 = 0x0009;
pub const FEEDBAG: u16 = 0x0013;
pub const BUCP: u16 = 0x0017;

/// Decodes a sequence of fixed-size elements that runs to the end of the body.
pub(crate) fn decode_until_end<T>(
    r: &mut crate::wire::Reader<'_>,
    elem: usize,
    limit: usize,
    what: &'static str,
    mut f: impl FnMut(&mut crate::wire::Reader<'_>) -> Result<T, crate::DecodeError>,
) -> Result<Vec<T>, crate::DecodeError> {
    if r.remaining() % elem != 0 {
        return Err(crate::DecodeError::Invalid(what));
    }
    let n = r.remaining() / elem;
    if n > limit {
        return Err(crate::DecodeError::TooMany(what));
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(f(r)?);
    }
    Ok(v)
}

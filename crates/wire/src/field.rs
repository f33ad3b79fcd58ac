//! Big-endian field access for the header views. Views check their length once in
//! `new_checked`; these accessors still never panic, so a view built with `new_unchecked`
//! over a short buffer reads zeros and drops writes instead of indexing out of bounds.

pub(crate) fn u8_at(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

pub(crate) fn set_u8_at(b: &mut [u8], at: usize, v: u8) {
    if let Some(x) = b.get_mut(at) {
        *x = v;
    }
}

pub(crate) fn array_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(s) = b.get(at..at + N) {
        out.copy_from_slice(s);
    }
    out
}

pub(crate) fn set_array_at<const N: usize>(b: &mut [u8], at: usize, v: [u8; N]) {
    if let Some(s) = b.get_mut(at..at + N) {
        s.copy_from_slice(&v);
    }
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(array_at(b, at))
}

pub(crate) fn set_u16_at(b: &mut [u8], at: usize, v: u16) {
    set_array_at(b, at, v.to_be_bytes());
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(array_at(b, at))
}

pub(crate) fn set_u32_at(b: &mut [u8], at: usize, v: u32) {
    set_array_at(b, at, v.to_be_bytes());
}

//! A bounds-checked reader cursor and a length-patching writer for TLV chains
//! (IKEv2 payloads, RFC 7296 §3.2; NHRP extensions, RFC 2332 §5.3).
//!
//! The reader never panics: every read returns `Result`, so a truncated or
//! lying length field from the network becomes an error, not an index panic.

use core::fmt;

/// Input ran out or a length field pointed past the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated {
    /// Bytes the read needed.
    pub needed: usize,
    /// Bytes that were left.
    pub available: usize,
}

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "truncated input: needed {} bytes, {} left",
            self.needed, self.available
        )
    }
}

impl std::error::Error for Truncated {}

/// A cursor over a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// True when every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The unconsumed bytes, without consuming them.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Takes `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        let available = self.remaining();
        if n > available {
            return Err(Truncated {
                needed: n,
                available,
            });
        }
        let out = self.buf.get(self.pos..self.pos + n).ok_or(Truncated {
            needed: n,
            available,
        })?;
        self.pos += n;
        Ok(out)
    }

    /// Takes `n` bytes as a sub-reader: a nested length is parsed by its own
    /// reader, so it can neither run past its own end nor the parent's.
    pub fn sub(&mut self, n: usize) -> Result<Reader<'a>, Truncated> {
        self.take(n).map(Reader::new)
    }

    /// Takes everything that is left.
    pub fn take_rest(&mut self) -> &'a [u8] {
        let out = self.rest();
        self.pos = self.buf.len();
        out
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), Truncated> {
        self.take(n).map(|_| ())
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Truncated> {
        let s = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, Truncated> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a big-endian u16.
    pub fn u16(&mut self) -> Result<u16, Truncated> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian u32.
    pub fn u32(&mut self) -> Result<u32, Truncated> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian u64.
    pub fn u64(&mut self) -> Result<u64, Truncated> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Looks at the next byte without consuming it.
    pub fn peek_u8(&self) -> Result<u8, Truncated> {
        self.rest().first().copied().ok_or(Truncated {
            needed: 1,
            available: 0,
        })
    }
}

/// A handle to a length field reserved by [`Writer::reserve_u16`] and filled
/// in later by [`Writer::patch_len_u16`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a reserved length must be patched"]
pub struct LenMark {
    at: usize,
    from: usize,
}

/// An appending writer into a `Vec<u8>` that patches length fields in one pass.
///
/// Control-plane messages (IKE, NHRP) are built with it; the per-packet data
/// path uses [`crate::PacketBuf`] instead.
#[derive(Debug)]
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    /// Appends to `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out }
    }

    /// Length of the whole output buffer so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// True when nothing has been written to the output buffer.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Appends bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b);
        self
    }

    /// Appends `n` zero bytes.
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.out.resize(self.out.len() + n, 0);
        self
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }

    /// Appends a big-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// Appends a big-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// Appends a big-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// Reserves a u16 length field. The length later patched counts from
    /// `from` (an absolute offset into the output, usually the start of the
    /// enclosing header) to the end of the output at patch time.
    pub fn reserve_u16(&mut self, from: usize) -> LenMark {
        let at = self.out.len();
        self.u16(0);
        LenMark { at, from }
    }

    /// Fills a reserved length field. Returns the length written, or `None`
    /// (and writes nothing) when it does not fit in 16 bits.
    pub fn patch_len_u16(&mut self, mark: LenMark) -> Option<u16> {
        let len = u16::try_from(self.out.len().checked_sub(mark.from)?).ok()?;
        self.out
            .get_mut(mark.at..mark.at + 2)?
            .copy_from_slice(&len.to_be_bytes());
        Some(len)
    }

    /// Overwrites a big-endian u16 at an absolute offset (checksums, flags).
    /// Returns false when the offset is out of range.
    pub fn set_u16_at(&mut self, at: usize, v: u16) -> bool {
        match self.out.get_mut(at..at + 2) {
            Some(s) => {
                s.copy_from_slice(&v.to_be_bytes());
                true
            }
            None => false,
        }
    }

    /// The bytes written so far (the whole output buffer).
    pub fn as_slice(&self) -> &[u8] {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_rejects_overrun_without_consuming() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16().unwrap(), 0x0102);
        assert_eq!(
            r.u16(),
            Err(Truncated {
                needed: 2,
                available: 1
            })
        );
        assert_eq!(r.u8().unwrap(), 3);
        assert!(r.is_empty());
    }

    #[test]
    fn sub_reader_is_bounded() {
        let mut r = Reader::new(&[0, 2, 0xaa, 0xbb, 0xcc]);
        let n = r.u16().unwrap() as usize;
        let mut s = r.sub(n).unwrap();
        assert_eq!(s.take_rest(), &[0xaa, 0xbb]);
        assert!(s.u8().is_err());
        assert_eq!(r.u8().unwrap(), 0xcc);
    }

    #[test]
    fn writer_patches_lengths() {
        let mut v = Vec::new();
        let mut w = Writer::new(&mut v);
        let start = w.len();
        w.u8(7);
        let m = w.reserve_u16(start);
        w.bytes(b"abc");
        assert_eq!(w.patch_len_u16(m), Some(6));
        assert_eq!(v, [7, 0, 6, b'a', b'b', b'c']);
    }
}

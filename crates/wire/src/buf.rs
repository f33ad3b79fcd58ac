//! One buffer per packet with headroom and tailroom, so GRE (RFC 2784/2890), ESP (RFC 4303)
//! and UDP encapsulation (RFC 3948) are added and removed in place, without a copy.
//!
//! The budget (docs/interop-notes.md §2): IPv4 20 + UDP 8 + ESP 8 + IV 8 + GRE 8 = 52 bytes in
//! front of the inner packet, and pad 0–3 + pad length/next header 2 + ICV 16 = 21 bytes behind it.

use crate::Error;

/// A fixed-size packet buffer: `[headroom | data | tailroom]` with head and tail indices.
///
/// The storage never moves or grows; pushing a header only moves `head` back, so a packet
/// read from the TUN at [`PacketBuf::DEFAULT_HEADROOM`] is encapsulated in place.
pub struct PacketBuf {
    storage: Box<[u8; PacketBuf::CAPACITY]>,
    head: usize,
    tail: usize,
}

impl PacketBuf {
    /// Total storage: a 9000-byte jumbo inner packet plus headroom and tailroom, rounded to 9 KiB.
    pub const CAPACITY: usize = 9216;
    /// Headroom a packet is read at: 52 bytes of outer headers fit with room to spare.
    pub const DEFAULT_HEADROOM: usize = 64;
    /// Tailroom the encapsulation needs at most: ESP pad 3 + pad length 1 + next header 1 + ICV 16.
    pub const MIN_TAILROOM: usize = 21;
    /// The largest inner packet a buffer read at the default headroom can carry and still
    /// leave room for the ESP trailer.
    pub const MAX_DATA: usize = Self::CAPACITY - Self::DEFAULT_HEADROOM - Self::MIN_TAILROOM;

    /// An empty buffer with the default headroom. Allocates: the packet workers create theirs
    /// once and [`PacketBuf::reset`] them per packet.
    pub fn new() -> Self {
        Self {
            storage: Box::new([0u8; Self::CAPACITY]),
            head: Self::DEFAULT_HEADROOM,
            tail: Self::DEFAULT_HEADROOM,
        }
    }

    /// A buffer holding a copy of `data` after `headroom` bytes (tests, control-plane packets).
    pub fn from_slice(headroom: usize, data: &[u8]) -> Result<Self, Error> {
        let mut b = Self::new();
        b.reset(headroom)?;
        b.push_back(data.len())?.copy_from_slice(data);
        Ok(b)
    }

    /// Empties the buffer and sets the headroom the next packet starts at.
    pub fn reset(&mut self, headroom: usize) -> Result<(), Error> {
        if headroom > Self::CAPACITY {
            return Err(Error::NoRoom);
        }
        self.head = headroom;
        self.tail = headroom;
        Ok(())
    }

    /// Bytes of data.
    pub fn len(&self) -> usize {
        self.tail - self.head
    }

    /// True when the buffer holds no data.
    pub fn is_empty(&self) -> bool {
        self.tail == self.head
    }

    /// Free bytes in front of the data.
    pub fn headroom(&self) -> usize {
        self.head
    }

    /// Free bytes behind the data.
    pub fn tailroom(&self) -> usize {
        Self::CAPACITY - self.tail
    }

    /// The data.
    pub fn as_slice(&self) -> &[u8] {
        self.storage.get(self.head..self.tail).unwrap_or_default()
    }

    /// The data, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.storage
            .get_mut(self.head..self.tail)
            .unwrap_or_default()
    }

    /// The tailroom, for a `read`/`recv` to fill; follow with [`PacketBuf::push_back`] of the
    /// number of bytes received.
    pub fn spare_back_mut(&mut self) -> &mut [u8] {
        self.storage.get_mut(self.tail..).unwrap_or_default()
    }

    /// The tailroom, read-only (for batch readers that take `AsRef` and `AsMut` views).
    pub fn spare_back(&self) -> &[u8] {
        self.storage.get(self.tail..).unwrap_or_default()
    }

    /// Grows the data by `n` bytes at the front and returns them (a header to fill in).
    pub fn push_front(&mut self, n: usize) -> Result<&mut [u8], Error> {
        let head = self.head.checked_sub(n).ok_or(Error::NoRoom)?;
        self.head = head;
        Ok(self.storage.get_mut(head..head + n).unwrap_or_default())
    }

    /// Removes `n` bytes from the front (a header that was consumed).
    pub fn pull_front(&mut self, n: usize) -> Result<(), Error> {
        if n > self.len() {
            return Err(Error::Truncated);
        }
        self.head += n;
        Ok(())
    }

    /// Grows the data by `n` bytes at the back and returns them (a trailer to fill in).
    pub fn push_back(&mut self, n: usize) -> Result<&mut [u8], Error> {
        if n > self.tailroom() {
            return Err(Error::NoRoom);
        }
        let tail = self.tail;
        self.tail += n;
        Ok(self.storage.get_mut(tail..tail + n).unwrap_or_default())
    }

    /// Removes `n` bytes from the back (a trailer that was consumed).
    pub fn trim_back(&mut self, n: usize) -> Result<(), Error> {
        if n > self.len() {
            return Err(Error::Truncated);
        }
        self.tail -= n;
        Ok(())
    }
}

/// So batch APIs can take `[PacketBuf]` and callers' wrappers alike.
impl AsMut<PacketBuf> for PacketBuf {
    fn as_mut(&mut self) -> &mut PacketBuf {
        self
    }
}

impl Default for PacketBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PacketBuf")
            .field("head", &self.head)
            .field("tail", &self.tail)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pull_front_and_back_keep_data_in_place() {
        let mut b = PacketBuf::from_slice(64, b"inner").unwrap();
        assert_eq!((b.headroom(), b.len()), (64, 5));
        b.push_front(4).unwrap().copy_from_slice(b"GRE:");
        b.push_back(2).unwrap().copy_from_slice(b"!!");
        assert_eq!(b.as_slice(), b"GRE:inner!!");
        assert_eq!(b.headroom(), 60);
        assert_eq!(b.tailroom(), PacketBuf::CAPACITY - 64 - 5 - 2);
        b.pull_front(4).unwrap();
        b.trim_back(2).unwrap();
        assert_eq!(b.as_slice(), b"inner");
    }

    #[test]
    fn refuses_to_overrun_either_end() {
        let mut b = PacketBuf::from_slice(8, b"abc").unwrap();
        assert_eq!(b.push_front(9).unwrap_err(), Error::NoRoom);
        assert_eq!(b.pull_front(4).unwrap_err(), Error::Truncated);
        assert_eq!(b.trim_back(4).unwrap_err(), Error::Truncated);
        let room = b.tailroom();
        assert_eq!(b.push_back(room + 1).unwrap_err(), Error::NoRoom);
        assert!(b.push_back(room).is_ok());
        assert_eq!(b.tailroom(), 0);
        assert_eq!(b.push_front(8).unwrap().len(), 8);
        assert_eq!(b.headroom(), 0);
        assert!(b.reset(PacketBuf::CAPACITY + 1).is_err());
    }

    #[test]
    fn jumbo_fits_with_full_encapsulation() {
        let mut b = PacketBuf::from_slice(PacketBuf::DEFAULT_HEADROOM, &[0u8; 9000]).unwrap();
        b.push_front(52).unwrap();
        b.push_back(PacketBuf::MIN_TAILROOM).unwrap();
        assert_eq!(b.len(), 9000 + 52 + 21);
    }
}

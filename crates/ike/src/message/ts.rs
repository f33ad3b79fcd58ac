//! The Traffic Selector payloads TSi and TSr (RFC 7296 §3.13, §3.13.1).

use super::*;

/// One traffic selector (§3.13.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficSelector {
    /// IP protocol, 0 = any; 47 for GRE.
    pub ip_protocol: u8,
    /// First port.
    pub start_port: u16,
    /// Last port.
    pub end_port: u16,
    /// First address.
    pub start: IpAddr,
    /// Last address (same family as `start`).
    pub end: IpAddr,
}

impl TrafficSelector {
    /// The DMVPN selector: one host, GRE, all ports (docs/interop-notes.md §17).
    pub fn gre_host(ip: IpAddr) -> Self {
        Self {
            ip_protocol: 47,
            start_port: 0,
            end_port: 0xffff,
            start: ip,
            end: ip,
        }
    }

    /// The TS type this selector is encoded as.
    pub fn ts_type(&self) -> TsType {
        match self.start {
            IpAddr::V4(_) => TsType::TS_IPV4_ADDR_RANGE,
            IpAddr::V6(_) => TsType::TS_IPV6_ADDR_RANGE,
        }
    }

    /// True if `ip` lies within the range and the protocol admits GRE.
    pub fn admits_gre_host(&self, ip: IpAddr) -> bool {
        (self.ip_protocol == 0 || self.ip_protocol == 47)
            && self.start_port == 0
            && self.end_port == 0xffff
            && addr_le(self.start, ip)
            && addr_le(ip, self.end)
    }
}

fn addr_le(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a <= b,
        (IpAddr::V6(a), IpAddr::V6(b)) => a <= b,
        _ => false,
    }
}

/// Parses a TSi/TSr body (§3.13): number of selectors, three reserved
/// octets, the selectors (§3.13.1).
pub(super) fn parse_ts(b: &mut Reader<'_>) -> Result<Vec<TrafficSelector>, ParseError> {
    let n = b.u8()?;
    b.skip(3)?;
    let mut out = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let ty = TsType(b.u8()?);
        let ip_protocol = b.u8()?;
        let len = usize::from(b.u16()?);
        let mut s = b.sub(len.checked_sub(4).ok_or(ParseError::Syntax("TS length"))?)?;
        let start_port = s.u16()?;
        let end_port = s.u16()?;
        let (start, end) = match ty {
            TsType::TS_IPV4_ADDR_RANGE => (
                IpAddr::V4(Ipv4Addr::from(s.array::<4>()?)),
                IpAddr::V4(Ipv4Addr::from(s.array::<4>()?)),
            ),
            TsType::TS_IPV6_ADDR_RANGE => (
                IpAddr::V6(Ipv6Addr::from(s.array::<16>()?)),
                IpAddr::V6(Ipv6Addr::from(s.array::<16>()?)),
            ),
            // Fibre-channel and other selector types cannot describe GRE
            // between NBMA addresses; refusing them is TS_UNACCEPTABLE at the
            // engine level, but the codec cannot represent them.
            _ => return Err(ParseError::Syntax("unsupported TS type")),
        };
        if !s.is_empty() {
            return Err(ParseError::Syntax("trailing bytes in TS"));
        }
        out.push(TrafficSelector {
            ip_protocol,
            start_port,
            end_port,
            start,
            end,
        });
    }
    if !b.is_empty() {
        return Err(ParseError::Syntax("trailing bytes in TS payload"));
    }
    Ok(out)
}

/// Appends a TSi/TSr body; both ends of a range MUST be of one address
/// family (§3.13.1).
pub(super) fn emit_ts(ts: &[TrafficSelector], w: &mut Writer<'_>) -> Result<(), EmitError> {
    let n = u8::try_from(ts.len()).map_err(|_| EmitError::TooLong)?;
    w.u8(n).zeros(3);
    for t in ts {
        let start = w.len();
        w.u8(t.ts_type().0).u8(t.ip_protocol);
        let mark = w.reserve_u16(start);
        w.u16(t.start_port).u16(t.end_port);
        match (t.start, t.end) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                w.bytes(&a.octets()).bytes(&b.octets());
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                w.bytes(&a.octets()).bytes(&b.octets());
            }
            _ => return Err(EmitError::Invalid("TS address families differ")),
        }
        w.patch_len_u16(mark).ok_or(EmitError::TooLong)?;
    }
    Ok(())
}

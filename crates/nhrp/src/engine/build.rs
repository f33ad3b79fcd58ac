//! Building the packets we send: fixed header (RFC 2332 §5.1), our identity
//! CIE, request and reply extensions (§5.3, with the FRR order and the Cisco
//! NAT and cleartext authentication extensions, docs/interop-notes.md §7, §11, §12)
//! and Error Indications (§5.2.7).

use std::net::IpAddr;
use std::time::Instant;

use crate::codes::{CieCode, ErrorCode, PREFIX_LEN_UNIQUE_HOST, PacketType};
use crate::packet::{Authentication, Body, Cie, Extension, ExtensionBody, Packet, ip_bytes};

use super::{DEFAULT_HOP_COUNT, Engine, MAX_ERROR_CONTENTS, secs16};

impl Engine {
    /// A packet from us: our NBMA and tunnel addresses as its source.
    pub(super) fn base_packet(&self, t: PacketType, hop_count: u8, body: Body) -> Packet {
        let mut p = Packet::new_ipv4(t, hop_count, body);
        p.src_nbma = ip_bytes(self.config.nbma_addr);
        p.src_protocol = ip_bytes(self.config.protocol_addr);
        p
    }

    /// A fresh authentication extension: generated per packet, never
    /// copied from a received one (docs/interop-notes.md §11).
    pub(super) fn auth_extension(&self) -> Option<Extension> {
        self.config.auth_key.as_ref().map(|k| {
            Extension::compulsory(ExtensionBody::Authentication(Authentication::cleartext(k)))
        })
    }

    /// Just the authentication extension, when a key is configured.
    pub(super) fn auth_only_extensions(&self) -> Option<Vec<Extension>> {
        self.auth_extension().map(|a| vec![a])
    }

    /// This router's identity for Responder Address and transit records.
    pub(super) fn identity_cie(&self) -> Cie {
        Cie {
            code: CieCode::SUCCESS,
            prefix_len: 0,
            mtu: self.config.mtu,
            holding_time: secs16(self.config.holding_time),
            client_nbma: ip_bytes(self.config.nbma_addr),
            client_nbma_subaddr: Vec::new(),
            client_protocol: ip_bytes(self.config.protocol_addr),
            preference: 0,
        }
    }

    /// Our post-NAT (NBMA, protocol) pair for the NAT extension, once known.
    pub(super) fn own_nat_cies(&self) -> Vec<Cie> {
        match self.public_nbma {
            Some(p) => vec![Cie {
                prefix_len: 32,
                mtu: self.config.mtu,
                client_nbma: ip_bytes(p),
                client_protocol: ip_bytes(self.config.protocol_addr),
                ..Cie::default()
            }],
            None => Vec::new(),
        }
    }

    /// The CIE prefix length of our requests: 0xFF (this host, uniquely) with Cisco `unique`, else
    /// 32.
    pub(super) fn request_prefix_len(&self) -> u8 {
        if self.config.unique {
            PREFIX_LEN_UNIQUE_HOST
        } else {
            32
        }
    }

    /// Extensions of our own requests in the order FRR sends them (docs/interop-notes.md
    /// §7): forward transit, reverse transit, responder address
    /// (all empty), NAT, authentication.
    pub(super) fn request_extensions(&self, nat: Vec<Cie>) -> Vec<Extension> {
        let mut v = vec![
            Extension::compulsory(ExtensionBody::ForwardTransit(Vec::new())),
            Extension::compulsory(ExtensionBody::ReverseTransit(Vec::new())),
            Extension::compulsory(ExtensionBody::ResponderAddress(Vec::new())),
            // Non-compulsory, as FRR and OpenNHRP send it (docs/interop-notes.md §12).
            Extension::optional(ExtensionBody::CiscoNatAddress(nat)),
        ];
        v.extend(self.auth_extension());
        v
    }

    /// Extensions of a reply to `req`, in the request's order: transit
    /// records copied, Responder Address filled with us, the NAT extension
    /// as `nat` makes it, other extensions copied, authentication
    /// regenerated at the end (RFC 2332 §5.3, docs/interop-notes.md §11 and §15).
    pub(super) fn reply_extensions(
        &self,
        req: &Packet,
        nat: impl Fn(&[Cie]) -> Vec<Cie>,
    ) -> Option<Vec<Extension>> {
        let Some(exts) = &req.extensions else {
            return self.auth_only_extensions();
        };
        let mut out = Vec::with_capacity(exts.len() + 1);
        for e in exts {
            let body = match &e.body {
                ExtensionBody::ResponderAddress(_) => {
                    ExtensionBody::ResponderAddress(vec![self.identity_cie()])
                }
                ExtensionBody::CiscoNatAddress(c) => ExtensionBody::CiscoNatAddress(nat(c)),
                ExtensionBody::Authentication(_) => continue,
                other => other.clone(),
            };
            out.push(Extension {
                compulsory: e.compulsory,
                body,
            });
        }
        out.extend(self.auth_extension());
        Some(out)
    }

    /// An Error Indication (RFC 2332 §5.2.7) quoting at most `MAX_ERROR_CONTENTS` bytes of the
    /// offending packet.
    fn error_indication(
        &self,
        dst_protocol: Vec<u8>,
        code: ErrorCode,
        offset: u16,
        offending: &[u8],
    ) -> Packet {
        let contents = offending
            .get(..MAX_ERROR_CONTENTS)
            .unwrap_or(offending)
            .to_vec();
        let mut p = self.base_packet(
            PacketType::ERROR_INDICATION,
            DEFAULT_HOP_COUNT,
            Body::ErrorIndication {
                error_code: code,
                error_offset: offset,
                contents,
            },
        );
        p.dst_protocol = dst_protocol;
        // RFC 2332 §5.2.7 gives Error Indications no extensions (Wireshark
        // reports any as malformed), so ours carry no authentication either;
        // FRR and Cisco add them, and `authentic` accepts both forms.
        p.extensions = None;
        p
    }

    /// Sends an Error Indication to `to`.
    pub(super) fn send_error(
        &mut self,
        now: Instant,
        to: IpAddr,
        dst_protocol: Vec<u8>,
        code: ErrorCode,
        offset: u16,
        offending: &[u8],
    ) {
        let p = self.error_indication(dst_protocol, code, offset, offending);
        self.send(now, to, &p);
    }
}

//! One simulated spoke: its own sans-IO IKEv2 endpoint (`dmvpn-ike`, initiator), its Child
//! SAs (`dmvpn-esp`), GRE with the tunnel key (`dmvpn-wire`) and its own NHRP engine
//! (`dmvpn-nhrp`, next hop client) — what a dmvpnd spoke runs, wired together the way
//! `dmvpn-node` does it, without the dataplane tables a spoke with traffic would need.
//!
//! Each spoke owns its engines, so the generator's cost per event does not depend on N: one
//! engine holding every spoke's IKE SA would walk all of them on each timer query.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use dmvpn_crypto::SystemRng;
use dmvpn_esp::{InboundSa, OutboundSa, Spi};
use dmvpn_ike::{ChildSaInstalled, Endpoint, Event as IkeEvent, Transmit as IkeTransmit};
use dmvpn_nhrp::Event as NhrpEvent;
use dmvpn_wire::{EtherType, IpProtocol, PacketBuf, gre};

use crate::net::Underlay;

/// Wait before initiating again after a failed setup (the NHRP engine's own retry is minutes).
pub const SETUP_RETRY: Duration = Duration::from_secs(1);

/// What every spoke shares.
#[derive(Debug, Clone)]
pub struct Shared {
    /// IKE engine configuration (from the spoke configuration file, as dmvpnd builds it).
    pub ike: dmvpn_ike::Config,
    /// NHRP configuration template; protocol and NBMA addresses are set per spoke.
    pub nhrp: dmvpn_nhrp::Config,
    /// The hub's NBMA address.
    pub hub: Ipv4Addr,
    /// IKE port.
    pub ike_port: u16,
    /// GRE key.
    pub gre_key: u32,
    /// Anti-replay window of inbound SAs.
    pub replay_window: u32,
    /// NAT keepalive interval while we are "behind a NAT" (RFC 3948 §2.3), if any.
    pub nat_keepalive: Option<Duration>,
}

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// Counters over all spokes.
        #[derive(Debug, Default, Clone)]
        pub struct Counters {
            $(pub $name: u64,)*
        }

        impl Counters {
            /// Every counter, in declaration order.
            pub fn fields(&self) -> Vec<u64> {
                vec![$(self.$name),*]
            }

            /// Every counter, mutable, in declaration order.
            pub fn fields_mut(&mut self) -> Vec<&mut u64> {
                vec![$(&mut self.$name),*]
            }

            /// As a JSON object.
            pub fn to_json(&self) -> serde_json::Value {
                let mut m = serde_json::Map::new();
                $(m.insert(stringify!($name).to_owned(), self.$name.into());)*
                serde_json::Value::Object(m)
            }
        }
    };
}

counters!(
    ike_initiated,
    ike_up,
    ike_down,
    peer_dead,
    establish_failed,
    auth_failed,
    child_installed,
    child_failed,
    nhs_up,
    first_registrations,
    nhs_down,
    refused,
    reset_sa,
    ike_tx,
    ike_rx,
    esp_tx,
    esp_rx,
    esp_rx_bad,
    nhrp_tx,
    nhrp_rx,
    nhrp_no_sa,
    keepalives_tx,
    other_errors,
);

/// What a spoke's handlers work with besides the spoke itself.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// Settings every spoke shares.
    pub sh: &'a Shared,
    /// The sockets.
    pub io: &'a mut Underlay,
    /// Counters.
    pub c: &'a mut Counters,
    /// The receive buffer ESP is opened in.
    pub pkt: &'a mut PacketBuf,
}

struct Child {
    spi_in: u32,
    out: OutboundSa,
    inb: InboundSa,
    udp_encap: bool,
    local: SocketAddrV4,
    remote: SocketAddrV4,
}

/// One spoke.
pub struct Spoke {
    /// Own NBMA address.
    pub nbma: Ipv4Addr,
    /// Own tunnel address.
    pub tunnel: Ipv4Addr,
    /// `--one-address`: this spoke's index among the per-spoke sockets; everything it sends
    /// leaves from that socket, whatever address and port its IKE engine believes it has.
    pub own_socket: Option<u32>,
    ike: Endpoint,
    nhrp: dmvpn_nhrp::Engine,
    children: Vec<Child>,
    /// An IKE setup of ours is in flight.
    connecting: bool,
    retry_at: Option<Instant>,
    /// Next NAT keepalive, and where it goes from (our NAT-T address) and to.
    keepalive: Option<(Instant, SocketAddrV4, SocketAddrV4)>,
    /// First IKE_SA_INIT sent.
    pub started: Option<Instant>,
    /// IKE_SA_INIT + IKE_AUTH with the Child SA: from the first IKE_SA_INIT to the Child SA.
    pub handshake: Option<Duration>,
    /// The first accepted registration.
    pub registered_at: Option<Instant>,
    /// Currently registered with the hub.
    pub up: bool,
    /// The deadline last handed to the generator's timer heap.
    pub deadline: Option<Instant>,
}

impl std::fmt::Debug for Spoke {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spoke")
            .field("nbma", &self.nbma)
            .field("tunnel", &self.tunnel)
            .field("up", &self.up)
            .finish_non_exhaustive()
    }
}

impl Spoke {
    /// A spoke at `nbma` with tunnel address `tunnel`; nothing is sent before [`Spoke::start`].
    pub fn new(
        shared: &Shared,
        nbma: Ipv4Addr,
        tunnel: Ipv4Addr,
        seed: u64,
        id: Option<dmvpn_ike::Identification>,
    ) -> Self {
        let mut ike = shared.ike.clone();
        if id.is_some() {
            ike.local_id = id;
        }
        let mut nc = shared.nhrp.clone();
        nc.protocol_addr = IpAddr::V4(tunnel);
        nc.nbma_addr = IpAddr::V4(nbma);
        let nhrp = dmvpn_nhrp::Engine::new(nc, dmvpn_nhrp::SeededRequestIds::new(seed))
            .unwrap_or_else(|e| panic!("NHRP configuration refused: {e}"));
        Self {
            nbma,
            tunnel,
            own_socket: None,
            ike: Endpoint::new(ike, Box::new(SystemRng::new())),
            nhrp,
            children: Vec::new(),
            connecting: false,
            retry_at: None,
            keepalive: None,
            started: None,
            handshake: None,
            registered_at: None,
            up: false,
            deadline: None,
        }
    }

    /// Starts registering (the NHRP engine asks for an SA first).
    pub fn start(&mut self, now: Instant, cx: &mut Ctx<'_>) {
        self.nhrp.register(now);
        self.drain(now, cx);
    }

    /// The next deadline of either engine or of our own setup retry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.ike.poll_timeout(),
            self.nhrp.poll_timeout(),
            self.retry_at,
            self.keepalive.map(|k| k.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, cx: &mut Ctx<'_>) {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            if !self.connecting && self.children.is_empty() {
                self.initiate(now, cx);
            }
        }
        if let Some((at, from, to)) = self.keepalive
            && at <= now
        {
            // A single 0xFF byte to the peer's NAT-T port (RFC 3948 §2.3).
            match self.own_socket {
                Some(i) => cx.io.send_own(i, to, false, &[0xFF]),
                None => cx.io.send_udp(from, to, false, &[0xFF]),
            }
            cx.c.keepalives_tx += 1;
            let every = cx.sh.nat_keepalive.unwrap_or(Duration::from_secs(20));
            self.keepalive = Some((now + every, from, to));
        }
        self.ike.handle_timeout(now);
        self.nhrp.handle_timeout(now);
        self.drain(now, cx);
    }

    /// An IKE message (without the non-ESP marker) that arrived at `local` from `remote`.
    pub fn handle_ike(
        &mut self,
        now: Instant,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        bytes: &[u8],
        cx: &mut Ctx<'_>,
    ) {
        cx.c.ike_rx += 1;
        self.ike
            .handle_datagram(now, SocketAddr::V4(local), SocketAddr::V4(remote), bytes);
        self.drain(now, cx);
    }

    /// An ESP packet from `from`.
    pub fn handle_esp(&mut self, now: Instant, from: Ipv4Addr, esp: &[u8], cx: &mut Ctx<'_>) {
        let Some(spi) = esp
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            cx.c.esp_rx_bad += 1;
            return;
        };
        let Some(child) = self.children.iter().find(|ch| ch.spi_in == spi) else {
            cx.c.esp_rx_bad += 1;
            return;
        };
        let buf = &mut *cx.pkt;
        let opened = buf
            .reset(PacketBuf::DEFAULT_HEADROOM)
            .ok()
            .and_then(|()| {
                buf.push_back(esp.len())
                    .ok()
                    .map(|b| b.copy_from_slice(esp))
            })
            .and_then(|()| child.inb.open(buf).ok());
        if opened != Some(IpProtocol::GRE) {
            cx.c.esp_rx_bad += 1;
            return;
        }
        if gre::decap(buf, cx.sh.gre_key) != Ok(EtherType::NHRP) {
            cx.c.esp_rx_bad += 1;
            return;
        }
        cx.c.esp_rx += 1;
        cx.c.nhrp_rx += 1;
        self.nhrp
            .handle_packet(now, IpAddr::V4(from), buf.as_slice());
        self.drain(now, cx);
    }

    fn initiate(&mut self, now: Instant, cx: &mut Ctx<'_>) {
        let local = SocketAddr::V4(SocketAddrV4::new(self.nbma, cx.sh.ike_port));
        let remote = SocketAddr::V4(SocketAddrV4::new(cx.sh.hub, cx.sh.ike_port));
        match self.ike.initiate(now, local, remote) {
            Ok(_) => {
                cx.c.ike_initiated += 1;
                self.connecting = true;
                self.started.get_or_insert(now);
            }
            Err(_) => {
                cx.c.other_errors += 1;
                self.retry_at = Some(now + SETUP_RETRY);
            }
        }
        self.send_ike(cx);
    }

    fn send_ike(&mut self, cx: &mut Ctx<'_>) {
        while let Some(t) = self.ike.poll_transmit() {
            send_ike(cx, self.own_socket, &t);
        }
    }

    /// Carries out what the engines want until neither has more.
    fn drain(&mut self, now: Instant, cx: &mut Ctx<'_>) {
        loop {
            let mut progress = false;
            self.send_ike(cx);
            while let Some(ev) = self.ike.poll_event() {
                progress = true;
                self.on_ike_event(now, cx, ev);
            }
            self.send_ike(cx);
            while let Some(ev) = self.nhrp.poll_event() {
                progress = true;
                self.on_nhrp_event(now, cx, ev);
            }
            while let Some(t) = self.nhrp.poll_transmit() {
                progress = true;
                self.send_nhrp(cx, &t.bytes);
            }
            if !progress {
                break;
            }
        }
    }

    fn on_ike_event(&mut self, now: Instant, cx: &mut Ctx<'_>, ev: IkeEvent) {
        match ev {
            IkeEvent::IkeSaUp {
                local,
                remote,
                nat_local,
                ..
            } => {
                cx.c.ike_up += 1;
                if let (true, Some(every), SocketAddr::V4(l), SocketAddr::V4(r)) =
                    (nat_local, cx.sh.nat_keepalive, local, remote)
                {
                    self.keepalive = Some((now + every, l, r));
                }
            }
            IkeEvent::ChildSaInstalled(ch) => self.install(now, cx, ch),
            IkeEvent::ChildSaDeleted { spi_in, .. } => {
                self.children.retain(|ch| ch.spi_in != spi_in)
            }
            IkeEvent::IkeSaDown { reason, .. } => {
                cx.c.ike_down += 1;
                self.connecting = false;
                if !matches!(
                    reason,
                    dmvpn_ike::DownReason::Rekeyed | dmvpn_ike::DownReason::Replaced
                ) {
                    self.lost(now);
                }
            }
            IkeEvent::PeerDead { .. } => {
                cx.c.peer_dead += 1;
                self.lost(now);
            }
            IkeEvent::EstablishFailed { .. } => {
                cx.c.establish_failed += 1;
                self.setup_failed(now);
            }
            IkeEvent::AuthFailed { .. } => {
                cx.c.auth_failed += 1;
                self.setup_failed(now);
            }
            IkeEvent::ChildSaFailed { .. } => cx.c.child_failed += 1,
            _ => {}
        }
    }

    fn setup_failed(&mut self, now: Instant) {
        self.connecting = false;
        if self.children.is_empty() {
            self.retry_at = Some(now + SETUP_RETRY);
        }
    }

    fn lost(&mut self, now: Instant) {
        self.children.clear();
        self.keepalive = None;
        self.connecting = false;
        self.up = false;
        self.nhrp.peer_dead(now, IpAddr::V4(self.hub_addr()));
        self.retry_at = Some(now + SETUP_RETRY);
    }

    fn hub_addr(&self) -> Ipv4Addr {
        match self.nhrp.config().nhs.first().map(|n| n.nbma_addr) {
            Some(IpAddr::V4(a)) => a,
            _ => Ipv4Addr::UNSPECIFIED,
        }
    }

    fn install(&mut self, now: Instant, cx: &mut Ctx<'_>, ch: ChildSaInstalled) {
        let (SocketAddr::V4(local), SocketAddr::V4(remote)) = (ch.local, ch.remote) else {
            cx.c.other_errors += 1;
            return;
        };
        let sas = OutboundSa::new(Spi(ch.spi_out), ch.key_out.expose(), ch.esn).and_then(|o| {
            InboundSa::new(
                Spi(ch.spi_in),
                ch.key_in.expose(),
                ch.esn,
                cx.sh.replay_window,
            )
            .map(|i| (o, i))
        });
        let Ok((out, inb)) = sas else {
            cx.c.other_errors += 1;
            return;
        };
        cx.c.child_installed += 1;
        self.connecting = false;
        self.retry_at = None;
        if self.handshake.is_none()
            && let Some(s) = self.started
        {
            self.handshake = Some(now.saturating_duration_since(s));
        }
        self.children.push(Child {
            spi_in: ch.spi_in,
            out,
            inb,
            udp_encap: ch.udp_encap,
            local,
            remote,
        });
        self.nhrp.sa_up(now, IpAddr::V4(*remote.ip()));
    }

    fn on_nhrp_event(&mut self, now: Instant, cx: &mut Ctx<'_>, ev: NhrpEvent) {
        match ev {
            NhrpEvent::NeedSa { .. } if !self.connecting && self.children.is_empty() => {
                self.initiate(now, cx);
            }
            NhrpEvent::NhsUp { .. } => {
                cx.c.nhs_up += 1;
                self.up = true;
                if self.registered_at.is_none() {
                    self.registered_at = Some(now);
                    cx.c.first_registrations += 1;
                }
            }
            NhrpEvent::NhsDown { .. } => {
                cx.c.nhs_down += 1;
                self.up = false;
            }
            NhrpEvent::RegistrationRefused { .. } => cx.c.refused += 1,
            NhrpEvent::ResetSa { .. } => {
                cx.c.reset_sa += 1;
                let _ = self.ike.delete(now, IpAddr::V4(cx.sh.hub));
                self.lost(now);
            }
            _ => {}
        }
    }

    /// Wraps an NHRP packet in GRE (protocol 0x2001, the tunnel key) and ESP on the newest
    /// Child SA, as a dmvpnd spoke's dataplane does.
    fn send_nhrp(&mut self, cx: &mut Ctx<'_>, nhrp: &[u8]) {
        let Some(ch) = self.children.last() else {
            cx.c.nhrp_no_sa += 1;
            return;
        };
        let Ok(mut buf) = PacketBuf::from_slice(PacketBuf::DEFAULT_HEADROOM, nhrp) else {
            cx.c.other_errors += 1;
            return;
        };
        if gre::encap(&mut buf, EtherType::NHRP, cx.sh.gre_key).is_err()
            || ch.out.seal(&mut buf, IpProtocol::GRE).is_err()
        {
            cx.c.other_errors += 1;
            return;
        }
        cx.c.nhrp_tx += 1;
        cx.c.esp_tx += 1;
        if let Some(i) = self.own_socket {
            cx.io.send_own(i, ch.remote, false, buf.as_slice());
        } else if ch.udp_encap {
            cx.io.send_udp(ch.local, ch.remote, false, buf.as_slice());
        } else {
            cx.io
                .send_esp(*ch.local.ip(), *ch.remote.ip(), buf.as_slice());
        }
    }
}

fn send_ike(cx: &mut Ctx<'_>, own: Option<u32>, t: &IkeTransmit) {
    let (SocketAddr::V4(local), SocketAddr::V4(remote)) = (t.local, t.remote) else {
        cx.c.other_errors += 1;
        return;
    };
    cx.c.ike_tx += 1;
    let marker = t.needs_non_esp_marker(cx.io.natt_port());
    match own {
        Some(i) => cx.io.send_own(i, remote, marker, &t.bytes),
        None => cx.io.send_udp(local, remote, marker, &t.bytes),
    }
}

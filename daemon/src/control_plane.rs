//! The control plane: one task drives the sans-IO [`Node`] (IKEv2, NHRP and the policy that
//! couples them with the dataplane) and carries out what it asks for. It is fed by bounded
//! channels from the underlay readers (IKE, NAT keepalives) and the dataplane's slow path
//! (packets waiting for an SA, NHRP packets, redirect triggers), by the control socket and by
//! SIGHUP; its only timer is the node's earliest deadline (and the 30-second re-read of the
//! router's own prefixes). What the node polls out becomes a published dataplane snapshot,
//! kernel routes, datagrams and key-export lines.
//!
//! Also starts the daemon (TUN, sockets, route mirror, node, static routes) in the order each
//! step depends on.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use dmvpn_config::{Config, Role};
use dmvpn_crypto::SystemRng;
use dmvpn_node::{Event, KeyExport, Node, RouteUpdate, SlowPath, Transmit};
use tokio::sync::mpsc;

mod explain;
mod loop_stats;

use crate::ctl::{self, Answer, Request, Response, Show, ShowFilter};
use crate::datapath::Datapath;
use crate::ike_pool::IkePool;
use crate::keylog::KeyLog;
use crate::metrics::{DataplaneInfo, LazyScrape, Scrape};
use crate::metrics_events::Recorder;
use crate::metrics_http::ScrapeRequest;
use crate::netlink::{Netlink, spawn_route_mirror};
use crate::routes::{RouteTable, SharedRoutes, shared};
use crate::status::{self, Ack, UpDown};
use crate::tun::TunDevice;
use crate::underlay::{ControlQueues, Received, Underlay, UnderlayConfig, local_address_for};

/// Depth of the reader → control plane channels. Full channels drop and count.
const QUEUE_DEPTH: usize = 1024;
/// How often the router's own (non-tunnel) prefixes are re-read for NHRP.
const LOCAL_PREFIX_REFRESH: Duration = Duration::from_secs(30);

/// The `show` reports built from a [`status::Capture`] off the control loop.
#[derive(Debug, Clone, Copy)]
enum PeerShow {
    Sa,
    Dmvpn,
    Nhrp,
    Ike,
}

/// What the control task owns.
pub struct ControlPlane {
    node: Node,
    /// Where the configuration came from, re-read on SIGHUP.
    pub config_path: std::path::PathBuf,
    pub underlay: Arc<Underlay>,
    pub netlink: Netlink,
    pub tun_index: u32,
    /// Published by the route mirror; handed to the node for NHRP.
    pub routes: SharedRoutes,
    key_log: Option<KeyLog>,
    dp: Arc<Datapath>,
    next_local_prefixes: Instant,
    /// When each peer entered its state, for `show dmvpn`'s UpDn Tm.
    updown: Arc<Mutex<UpDown>>,
    /// The control socket server and where its requests arrive.
    ctl_task: Option<tokio::task::JoinHandle<()>>,
    ctl_rx: Option<mpsc::Receiver<ctl::Command>>,
    notifier: crate::sdnotify::Notifier,
    watchdog: Option<Duration>,
    /// `[metrics]`: the HTTP server, where its scrapes arrive, the event-derived metrics and
    /// the dataplane's fixed facts.
    metrics_task: Option<tokio::task::JoinHandle<()>>,
    metrics_rx: Option<mpsc::Receiver<ScrapeRequest>>,
    recorder: Recorder,
    dataplane_info: DataplaneInfo,
    /// `[ike] workers`: where IKE jobs run (none: inline on this task) and where their results
    /// come back.
    ike_pool: Option<IkePool>,
    ike_done_rx: Option<mpsc::Receiver<dmvpn_ike::JobDone>>,
    /// How long each turn of the loop was busy.
    loop_stats: loop_stats::LoopStats,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("node", &self.node)
            .field("tun_index", &self.tun_index)
            .finish_non_exhaustive()
    }
}

/// The local address toward `peer`: configured, or the source of the route to it.
fn local_address_resolver(config: &Config, local_nbma: Ipv4Addr) -> dmvpn_node::LocalAddress {
    let configured = config.underlay.local_address;
    let interface = config.underlay.interface.clone();
    Box::new(move |peer| {
        configured
            .unwrap_or_else(|| local_address_for(peer, interface.as_deref()).unwrap_or(local_nbma))
    })
}

impl ControlPlane {
    fn now() -> Instant {
        Instant::now()
    }

    /// Applies one kernel route change the node asked for.
    async fn apply_route(&self, r: RouteUpdate) -> Result<()> {
        match r {
            RouteUpdate::Install {
                prefix,
                prefix_len,
                via,
                metric,
            } => {
                self.netlink
                    .install_route(self.tun_index, prefix, prefix_len, via, metric)
                    .await
            }
            RouteUpdate::Withdraw {
                prefix,
                prefix_len,
                via,
                metric,
            } => {
                self.netlink
                    .withdraw_route(self.tun_index, prefix, prefix_len, via, metric)
                    .await
            }
        }
    }

    /// Carries out what the node polls out, in the order it requires: the dataplane snapshot
    /// first (a Child SA must be able to receive before the IKE message that completes it
    /// leaves), then routes, key export and datagrams. Returns the first route error.
    async fn carry_out(&mut self) -> Result<()> {
        if let Some(pool) = &self.ike_pool {
            while let Some(job) = self.node.poll_ike_job() {
                if let Err(job) = pool.submit(job) {
                    // The pool is behind by a full queue: shed this IKE_SA_INIT (counted)
                    // rather than queue without bound; the initiator retransmits.
                    self.node.cancel_ike_job(job);
                }
            }
        }
        if let Some(t) = self.node.poll_tables() {
            self.dp.tables.store(Arc::new(t));
        }
        let mut first_err = None;
        while let Some(r) = self.node.poll_routes() {
            if let Err(e) = self.apply_route(r).await {
                tracing::warn!("{e:#}");
                first_err.get_or_insert(e);
            }
        }
        while let Some(ev) = self.node.poll_event() {
            // After the routes above: a timed shortcut's route is in the kernel by now.
            self.recorder.observe(Instant::now(), &ev);
            if let (Event::Keys(k), Some(log)) = (ev, &mut self.key_log) {
                match k {
                    KeyExport::Ike {
                        spi_i,
                        spi_r,
                        sk_ei,
                        sk_er,
                    } => log.ike_sa(spi_i, spi_r, sk_ei.expose(), sk_er.expose()),
                    KeyExport::Esp { src, dst, spi, key } => {
                        log.esp_sa(src, dst, spi, key.expose())
                    }
                }
            }
        }
        loop {
            // ESP is sealed and sent here, in its SA's turn: a packet worker's packet cannot
            // take a later number and reach the wire first (crates/node/src/transmit.rs).
            let underlay = &self.underlay;
            let mut esp = Ok(());
            let Some(t) = self.node.poll_transmit_then(|to, udp_encap, buf| {
                esp = underlay.send_esp(0, to, udp_encap, buf.as_slice());
            }) else {
                break;
            };
            let r = match &t {
                Transmit::Ike { to, natt, bytes } => {
                    self.underlay.send_ike(*to, *natt, bytes).await
                }
                Transmit::Esp { .. } => esp,
                Transmit::NatKeepalive { to } => self.underlay.send_nat_keepalive(*to).await,
            };
            if let Err(e) = r {
                tracing::debug!(?t, "send: {e}");
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn refresh_local_prefixes(&mut self, now: Instant) {
        self.next_local_prefixes = now + LOCAL_PREFIX_REFRESH;
        match self.netlink.local_prefixes(self.tun_index).await {
            Ok(p) => self.node.set_local_prefixes(p),
            Err(e) => tracing::warn!("reading local prefixes: {e:#}"),
        }
    }

    async fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_local_prefixes {
            self.refresh_local_prefixes(now).await;
        }
        self.node.set_routes(self.routes.load_full());
        self.node.handle_timeout(now);
    }

    fn handle_underlay(&mut self, now: Instant, r: Received) {
        match r {
            Received::Ike {
                from,
                natt,
                message,
            } => self.node.handle_ike(now, from, natt, &message),
            // ESP never comes this way in the daemon (the readers hand it to the dataplane).
            Received::Esp { .. } => {}
            Received::NatKeepalive { from } => tracing::trace!(%from, "NAT keepalive"),
        }
    }

    /// Answers one `dmvpnctl` request from the node's state at `now`.
    async fn answer(&mut self, now: Instant, req: Request) -> Answer {
        let resp = match req {
            Request::Show { what, filter } => return self.show(now, what, filter),
            Request::Explain { destination } => self.explain(now, destination).await,
            Request::ClearSa { peer } => match self.node.clear_sa(now, peer) {
                Ok(()) => Response::ok(&Ack::new(format!("IKE SA with {peer} deleted"))),
                Err(e) => Response::error(e.to_string()),
            },
            Request::ClearChildSa { peer } => match self.node.clear_child_sa(now, peer) {
                Ok(n) => Response::ok(&Ack::new(format!(
                    "{n} Child SA{} with {peer} deleted; the IKE SA stays",
                    if n == 1 { "" } else { "s" }
                ))),
                Err(e) => Response::error(e.to_string()),
            },
            Request::ClearNhrp => {
                let n = self.node.clear_nhrp(now);
                Response::ok(&Ack::new(format!("{n} dynamic NHRP entries cleared")))
            }
            Request::Reload => match self.reload(now).await {
                Ok(()) => Response::ok(&Ack::new("configuration reloaded")),
                Err(e) => {
                    tracing::error!("{e:#}");
                    Response::error(format!("{e:#}"))
                }
            },
        };
        Answer::Now(resp)
    }

    /// A `show` report of the engines' state at `now`. The loop only copies their views out
    /// ([`status::Capture`]); filtering, the joins and the encoding run off the loop (see
    /// [`Answer::Encode`]), so a 10,000-peer `show` costs the loop the copies alone.
    fn show(&mut self, now: Instant, what: Show, filter: ShowFilter) -> Answer {
        let what = match what {
            // A handful of counters: no capture needed.
            Show::Interface => return Answer::ok(self.interface_report()),
            Show::Sa => PeerShow::Sa,
            Show::Dmvpn => PeerShow::Dmvpn,
            Show::Nhrp => PeerShow::Nhrp,
            Show::Ike => PeerShow::Ike,
        };
        let mut capture = status::Capture::of(&self.node, now);
        // Cloning the dataplane's tables is O(1) (structurally shared maps); their counters
        // are atomics the report reads wherever it runs.
        let master = self.node.tables().clone();
        let nhrp_counters = self.node.nhrp().counters().clone();
        let updown = Arc::clone(&self.updown);
        Answer::build(move |w| {
            capture.filter(filter);
            let partial = filter.peer.is_some() || filter.prefix.is_some();
            let snap = capture.snapshot();
            match what {
                PeerShow::Sa => Response::write_ok(w, &status::sa_report(&snap, &master)),
                PeerShow::Dmvpn => {
                    let report = {
                        let mut updown = updown.lock().unwrap_or_else(PoisonError::into_inner);
                        snap.dmvpn_report_of(&mut updown, partial)
                    };
                    Response::write_ok(w, &report)
                }
                PeerShow::Nhrp => Response::write_ok(w, &snap.nhrp_report(&nhrp_counters)),
                PeerShow::Ike => Response::write_ok(w, &snap.ike_report()),
            }
        })
    }

    /// `show interface`: the dataplane's counters with the drops the daemon counts itself.
    fn interface_report(&self) -> dmvpn_api::InterfaceReport {
        let config = self.node.config();
        let u = &self.underlay.stats;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        status::interface_report(
            &config.tunnel.interface,
            &config.tunnel.address.to_string(),
            u32::from(config.tunnel.mtu),
            &self.node.tables().counters,
            &[
                ("underlay_queue_full", load(&u.queue_full)),
                ("underlay_sa_init_queue_full", load(&u.sa_init_queue_full)),
                ("underlay_malformed", load(&u.malformed)),
                ("underlay_socket_drops", load(&u.socket_drops)),
                (
                    "ike_half_open_refused",
                    self.node.ike().counters().half_open_refused,
                ),
                (
                    "ike_half_open_evicted",
                    self.node.ike().counters().half_open_evicted,
                ),
                ("ike_jobs_refused", self.node.ike().counters().jobs_refused),
                // An IKE_SA_INIT whose key computation finished after its SA was gone
                // (retransmitted past, evicted): the work is thrown away with the request.
                ("ike_jobs_late", self.node.ike().counters().jobs_late),
                ("ike_sa_refused", self.node.ike().counters().ike_sas_refused),
                (
                    "ike_child_sa_refused",
                    self.node.ike().counters().child_sas_refused,
                ),
            ],
        )
    }

    /// What one scrape of `/metrics` shows, at `now`: copied here, joined off the loop.
    fn scrape(&self, now: Instant) -> LazyScrape {
        Scrape::capture(
            &self.node,
            now,
            self.interface_report(),
            self.dataplane_info.clone(),
            self.recorder.clone(),
        )
    }

    /// Re-reads the configuration file and hands it to the node (which refuses changes that
    /// need a restart); then applies the static route changes.
    pub async fn reload(&mut self, now: Instant) -> Result<()> {
        let new = dmvpn_config::load(&self.config_path)?;
        for w in new.warnings() {
            tracing::warn!(config = %self.config_path.display(), "{w}");
        }
        self.node.reload(now, new)?;
        self.carry_out().await.context("reload: static routes")?;
        tracing::info!(config = %self.config_path.display(), "configuration reloaded");
        Ok(())
    }

    /// Runs until `shutdown` resolves or the readers go away.
    pub async fn run(
        mut self,
        mut underlay_rx: mpsc::Receiver<Received>,
        mut sa_init_rx: mpsc::Receiver<Received>,
        mut slow_rx: mpsc::Receiver<SlowPath>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("no SIGHUP handler, reload disabled: {e}");
                None
            }
        };
        let now = Self::now();
        self.refresh_local_prefixes(now).await;
        self.node.set_routes(self.routes.load_full());
        self.node.start(now);
        let _ = self.carry_out().await;
        let mut ctl_rx = self.ctl_rx.take();
        let mut metrics_rx = self.metrics_rx.take();
        let mut ike_done_rx = self.ike_done_rx.take();
        // systemd: ready once the control socket is up; the watchdog is fed from this loop, so
        // a wedged control plane gets the service restarted.
        let _ = self.notifier.ready();
        let mut watchdog = self.watchdog.map(|d| tokio::time::interval(d / 2));
        loop {
            let deadline = self.node.poll_timeout().min(self.next_local_prefixes);
            let deadline = tokio::time::Instant::from_std(deadline);
            // Each arm notes when its work began and what it was, for `loop_stats`.
            let began;
            let what: &'static str = tokio::select! {
                _ = &mut shutdown => break,
                r = underlay_rx.recv() => match r {
                    Some(r) => {
                        began = Self::now();
                        self.handle_underlay(began, r);
                        "underlay"
                    }
                    None => break,
                },
                // New IKE SAs wait on their own queue; select! picks among ready branches at
                // random, so a flood there gets at most its share of the loop.
                r = sa_init_rx.recv() => match r {
                    Some(r) => {
                        began = Self::now();
                        self.handle_underlay(began, r);
                        "ike_sa_init"
                    }
                    None => break,
                },
                s = slow_rx.recv() => match s {
                    Some(s) => {
                        began = Self::now();
                        self.node.handle_slow_path(began, s);
                        "slow_path"
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    began = Self::now();
                    self.handle_timeout(began).await;
                    "timers"
                }
                Some(done) = async { match ike_done_rx.as_mut() { Some(r) => r.recv().await, None => None } } => {
                    let now = Self::now();
                    began = now;
                    self.node.complete_ike_job(now, done);
                    // Whatever else is finished, in the same turn: one `carry_out` for the lot.
                    if let Some(rx) = ike_done_rx.as_mut() {
                        while let Ok(d) = rx.try_recv() {
                            self.node.complete_ike_job(now, d);
                        }
                    }
                    "ike_jobs"
                }
                Some((req, reply)) = async { match ctl_rx.as_mut() { Some(r) => r.recv().await, None => None } } => {
                    let started = Self::now();
                    began = started;
                    let what = format!("{req:?}");
                    let resp = self.answer(started, req).await;
                    // The control loop also runs IKE, NHRP and DPD: say when a request held
                    // it up (a `show` on a very large hub).
                    let held = started.elapsed();
                    if held > CONTROL_REQUEST_BUDGET {
                        tracing::warn!(request = %what, held_ms = held.as_millis(), "control request held the control loop");
                    } else {
                        tracing::debug!(request = %what, held_us = held.as_micros(), "control request answered");
                    }
                    let _ = reply.send(resp);
                    "control_request"
                }
                Some(reply) = async { match metrics_rx.as_mut() { Some(r) => r.recv().await, None => None } } => {
                    let started = Self::now();
                    began = started;
                    let _ = reply.send(self.scrape(started));
                    let held = started.elapsed();
                    if held > CONTROL_REQUEST_BUDGET {
                        tracing::warn!(held_ms = held.as_millis(), "metrics scrape held the control loop");
                    }
                    "metrics_scrape"
                }
                Some(_) = async { match watchdog.as_mut() { Some(w) => Some(w.tick().await), None => None } } => {
                    began = Self::now();
                    let _ = self.notifier.watchdog();
                    "watchdog"
                }
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    began = Self::now();
                    tracing::info!("SIGHUP: reloading configuration");
                    if let Err(e) = self.reload(began).await {
                        tracing::error!("{e:#}");
                    }
                    "reload"
                }
            };
            let _ = self.carry_out().await;
            let done = Self::now();
            self.loop_stats
                .record(done, what, done.saturating_duration_since(began));
        }
        let (turns, longest, longest_what, over) = self.loop_stats.summary();
        tracing::info!(
            turns,
            longest_ms = format_args!("{:.1}", longest.as_secs_f64() * 1e3),
            longest_event = longest_what,
            over_budget = over,
            budget_ms = loop_stats::BUDGET.as_millis(),
            "control loop: turns handled, the longest"
        );
        let _ = self.notifier.stopping();
        let purges_sent = Self::now();
        let delete_by = self.node.begin_shutdown(purges_sent);
        let _ = self.carry_out().await;
        self.await_purge_replies(&mut underlay_rx, &mut slow_rx, delete_by)
            .await;
        tracing::info!(
            answered = self.node.purges_answered(),
            waited_ms = purges_sent.elapsed().as_millis(),
            "NHRP purges sent; deleting the IKE SAs"
        );
        self.node.finish_shutdown(Self::now());
        let _ = self.carry_out().await;
        if let Some(t) = self.metrics_task.take() {
            t.abort();
        }
        if let Some(t) = self.ctl_task.take() {
            t.abort();
            let _ = std::fs::remove_file(&self.node.config().control.socket);
        }
        tracing::info!("control plane stopped");
    }

    /// Shutting down: handles what arrives from the peers (the Purge Replies among it) until
    /// every NHS has answered the purge or `until` passes; nothing else (operator requests,
    /// timers, new IKE SAs) is served any more.
    async fn await_purge_replies(
        &mut self,
        underlay_rx: &mut mpsc::Receiver<Received>,
        slow_rx: &mut mpsc::Receiver<SlowPath>,
        until: Instant,
    ) {
        let until = tokio::time::Instant::from_std(until);
        while !self.node.purges_answered() {
            tokio::select! {
                r = underlay_rx.recv() => match r {
                    Some(r) => self.handle_underlay(Self::now(), r),
                    None => return,
                },
                s = slow_rx.recv() => match s {
                    Some(s) => self.node.handle_slow_path(Self::now(), s),
                    None => return,
                },
                _ = tokio::time::sleep_until(until) => return,
            }
            let _ = self.carry_out().await;
        }
    }
}

/// A control request that keeps the control loop longer than this is logged as a warning,
/// naming the request: the loop's own budget for any turn, one figure for both.
const CONTROL_REQUEST_BUDGET: Duration = loop_stats::BUDGET;

/// A started daemon: everything opened and configured, ready to run the event loop.
#[derive(Debug)]
pub struct Daemon {
    pub control: ControlPlane,
    pub tun: Arc<TunDevice>,
    underlay_rx: mpsc::Receiver<Received>,
    sa_init_rx: mpsc::Receiver<Received>,
    slow_rx: mpsc::Receiver<SlowPath>,
}

/// A hub relays spoke to spoke through its kernel, and a spoke routes its LAN into the tunnel:
/// with IPv4 forwarding off in dmvpnd's network namespace neither happens and nothing says why
/// (seen on a lab hub: registrations and pings to the hub fine, spoke to spoke silent). Only the
/// hub's own traffic and a spoke's own would flow.
fn warn_if_not_forwarding(config: &Config) {
    const KNOB: &str = "/proc/sys/net/ipv4/ip_forward";
    match std::fs::read_to_string(KNOB) {
        Ok(v) if v.trim() == "0" => {
            let what = match config.nhrp.role {
                dmvpn_config::Role::Hub { .. } => "traffic between spokes through this hub",
                dmvpn_config::Role::Spoke { .. } => {
                    "traffic between the tunnel and this spoke's LAN"
                }
            };
            tracing::warn!(
                "net.ipv4.ip_forward is 0: the kernel will not forward {what}; set net.ipv4.ip_forward = 1 (sysctl, /etc/sysctl.d/) unless only this host's own traffic uses the tunnel"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::debug!("reading {KNOB}: {e}"),
    }
}

impl Daemon {
    /// Creates the TUN, mirrors its routes, opens the underlay sockets, builds the node,
    /// starts the per-packet tasks and installs static routes.
    pub async fn start(config: Config, config_path: &std::path::Path) -> Result<Self> {
        let config = Arc::new(config);
        let aead_provider =
            crate::aead::choose(config.dataplane.aead, usize::from(config.tunnel.mtu));
        if config.tunnel.gre_key.is_none() {
            bail!("tunnel.gre-key is required: DMVPN peers tell tunnels apart by the GRE key");
        }
        let netlink = Netlink::open()?;
        let workers = match config.dataplane.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n as usize,
        };
        let tun = Arc::new(
            TunDevice::create(&config.tunnel, &netlink, workers, config.dataplane.offload).await?,
        );
        tracing::info!(
            device = %tun.name,
            address = %config.tunnel.address,
            mtu = tun.mtu,
            queues = tun.queues.len(),
            offload = tun.offload,
            txqueuelen = config.tunnel.txqueuelen,
            "tunnel interface up"
        );
        warn_if_not_forwarding(&config);
        let routes = shared(RouteTable::new());
        spawn_route_mirror(tun.index, routes.clone()).await?;

        let underlay = Underlay::open(&UnderlayConfig {
            workers,
            socket_buffer: config.dataplane.socket_buffer as usize,
            offload: config.dataplane.offload,
            ..UnderlayConfig::from_config(&config.underlay)
        })?;
        tracing::info!(
            workers,
            rcvbuf = underlay.buffers.0,
            sndbuf = underlay.buffers.1,
            udp_gro = underlay.gro(),
            "underlay sockets sized"
        );
        let underlay_gro = underlay.gro();
        let first_peer = config.nhrp.nhs.first().map(|n| n.nbma);
        let local_nbma = match (config.underlay.local_address, first_peer) {
            (Some(a), _) => a,
            (None, Some(nhs)) => local_address_for(nhs, config.underlay.interface.as_deref())
                .with_context(|| {
                    format!("no route to the NHS {nhs}: set underlay.local-address or fix routing")
                })?,
            (None, None) => bail!(
                "a hub needs underlay.local-address (its own NBMA address) in the configuration"
            ),
        };
        tracing::info!(
            %local_nbma,
            role = match config.nhrp.role {
                Role::Spoke { .. } => "spoke",
                Role::Hub { .. } => "hub",
            },
            "underlay sockets open"
        );

        let key_log = match &config.key_export {
            Some(p) => {
                tracing::warn!(path = %p.display(), "exporting IKE/ESP keys for Wireshark: debugging only");
                Some(KeyLog::open(p)?)
            }
            None => None,
        };

        // NHRP request ids straight from the system RNG, not a generator seeded from it:
        // they bind replies and purges to their requests, and spokes see some of them.
        let mut node = Node::new(
            config.clone(),
            local_nbma,
            local_address_resolver(&config, local_nbma),
            Box::new(SystemRng::new()),
            Box::new(dmvpn_node::RngRequestIds(Box::new(SystemRng::new()))),
            Instant::now(),
        )?;

        let ike_workers = crate::ike_pool::worker_count(config.ike.workers);
        let (ike_pool, ike_done_rx) = if ike_workers > 0 {
            let (pool, rx) = IkePool::start(ike_workers).context("starting the IKE workers")?;
            node.set_ike_offload(true);
            (Some(pool), Some(rx))
        } else {
            (None, None)
        };
        tracing::info!(
            ike_workers,
            "IKE_SA_INIT key computation {}",
            if ike_workers > 0 {
                "on worker threads"
            } else {
                "on the control task"
            }
        );

        let (utx, underlay_rx) = mpsc::channel(QUEUE_DEPTH);
        let (itx, sa_init_rx) = mpsc::channel(QUEUE_DEPTH);
        let (stx, slow_rx) = mpsc::channel(QUEUE_DEPTH);
        let dp = Arc::new(Datapath::new(
            node.tables().clone(),
            routes.clone(),
            tun.clone(),
            underlay.clone(),
            stx,
        ));
        let queues = ControlQueues {
            established: utx,
            sa_init: itx,
        };
        underlay.spawn_readers(queues, dp.clone())?;
        dp.spawn_tun_readers()?;

        let mut control = ControlPlane {
            node,
            config_path: config_path.to_path_buf(),
            underlay,
            netlink,
            tun_index: tun.index,
            routes,
            key_log,
            dp,
            next_local_prefixes: Instant::now(),
            updown: Arc::new(Mutex::new(UpDown::new())),
            ctl_task: None,
            ctl_rx: None,
            notifier: crate::sdnotify::Notifier::from_env()
                .context("connecting to systemd's NOTIFY_SOCKET")?,
            watchdog: crate::sdnotify::watchdog_interval(),
            metrics_task: None,
            metrics_rx: None,
            recorder: Recorder::new(),
            dataplane_info: DataplaneInfo {
                workers: tun.queues.len(),
                offload: tun.offload,
                udp_gro: underlay_gro,
                aead_provider,
                aead_choice: match config.dataplane.aead {
                    dmvpn_config::AeadChoice::Auto => "auto",
                    dmvpn_config::AeadChoice::Ring => "ring",
                    dmvpn_config::AeadChoice::AwsLc => "aws-lc-rs",
                },
            },
            ike_pool,
            ike_done_rx,
            loop_stats: loop_stats::LoopStats::default(),
        };
        // The configured static routes: a failure stops the start.
        control.carry_out().await?;
        let gid = |key: &str, name: &Option<String>| -> Result<Option<u32>> {
            name.as_deref()
                .map(|n| ctl::group_id(n).ok_or_else(|| anyhow!("{key}: no group named {n}")))
                .transpose()
        };
        let groups = ctl::Groups {
            group: gid("control.group", &config.control.group)?,
            admin_group: gid("control.admin-group", &config.control.admin_group)?,
        };
        let (ctl_tx, ctl_rx) = mpsc::channel(16);
        control.ctl_task = Some(ctl::serve(&config.control.socket, groups, ctl_tx).await?);
        control.ctl_rx = Some(ctl_rx);
        if let Some(listen) = config.metrics.listen {
            // A scrape waits for the control loop; a few queued are plenty (the server caps
            // its connections anyway).
            let (metrics_tx, metrics_rx) = mpsc::channel(4);
            control.metrics_task = Some(crate::metrics_http::serve(listen, metrics_tx).await?);
            control.metrics_rx = Some(metrics_rx);
        }
        Ok(Daemon {
            control,
            tun,
            underlay_rx,
            sa_init_rx,
            slow_rx,
        })
    }

    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        self.control
            .run(self.underlay_rx, self.sa_init_rx, self.slow_rx, shutdown)
            .await;
    }
}

//! dmvpnctl's command line (clap), in its own file so that the packaging generator
//! (`packaging/gen`) can build the dmvpnctl(8) man page and the shell completions from the
//! same definition.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use dmvpn_api::ctl;

/// Where the Debian package and the unit put the daemon's configuration.
pub const DEFAULT_CONFIG: &str = "/etc/dmvpnd/dmvpnd.toml";

#[derive(Debug, Parser)]
#[command(
    name = "dmvpnctl",
    version,
    about = "Show and control a running dmvpnd",
    after_help = "Talks to dmvpnd over its control socket: root, or a member of the group \
                  dmvpnd was configured with, may use it. The socket is --socket, else \
                  $DMVPN_SOCKET, else the `[control] socket` of the daemon's configuration \
                  (--config), else /run/dmvpnd/dmvpnd.sock."
)]
pub struct Args {
    /// Control socket of dmvpnd (default: from $DMVPN_SOCKET, else from --config).
    #[arg(long, value_name = "PATH", env = "DMVPN_SOCKET", global = true)]
    pub socket: Option<PathBuf>,
    /// The daemon's configuration, read only for its `[control] socket` when neither
    /// --socket nor $DMVPN_SOCKET is given; a missing file means the default socket.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG, global = true)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Show state: sa (like `show crypto ipsec sa`), dmvpn (`show dmvpn`), nhrp (`show ip nhrp`),
    /// ike (`show crypto ikev2 sa`), interface (`show interfaces`).
    Show {
        what: What,
        /// Only entries whose tunnel address lies in this prefix (`show nhrp 10.250.0.0/24`,
        /// like `show ip nhrp 10.250.0.0 255.255.255.0`); a bare address means /32.
        #[arg(value_name = "PREFIX")]
        prefix: Option<ctl::Prefix>,
        /// Only this peer (NBMA address, pre- or post-NAT), like `show dmvpn peer nbma X`.
        #[arg(long, value_name = "NBMA")]
        peer: Option<IpAddr>,
        /// Print the documented JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Clear state.
    Clear {
        #[command(subcommand)]
        what: ClearWhat,
    },
    /// Re-read the configuration (as `systemctl reload dmvpnd` does).
    Reload,
    /// Why traffic to DESTINATION goes where it goes: the tunnel route and its source, the
    /// next hop's NHRP entry, the NBMA address, the IKE and Child SAs, the last NHRP event
    /// and the last error (like `show ip route X` + `show ip nhrp` + `show crypto ipsec sa
    /// peer`).
    Explain {
        /// An IPv4 address (a host behind a spoke, a tunnel address, …).
        #[arg(value_name = "DESTINATION")]
        destination: std::net::Ipv4Addr,
        /// Print the documented JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Translate an IOS-XE DMVPN configuration into dmvpnd's and lint it (no daemon needed).
    ImportIos(ImportIosArgs),
}

/// `dmvpnctl import-ios` (docs/dmvpnctl.md, "import-ios").
#[derive(Debug, clap::Args)]
pub struct ImportIosArgs {
    /// IOS-XE running configuration (`show running-config`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Write DIR/dmvpnd.toml and DIR/secrets.toml (mode 0600) instead of printing the
    /// configuration; refuses to overwrite either unless --force.
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Overwrite existing files in --output DIR.
    #[arg(long)]
    pub force: bool,
    /// Exit 2 if there are lints or lines that could not be translated.
    #[arg(long)]
    pub strict: bool,
    /// Replace the template placeholder `<NAME>` with VALUE (repeatable), e.g.
    /// --placeholder PUBLIC_IP_ADDRESS_OF_HUB_1_HERE=198.51.100.1.
    #[arg(long = "placeholder", value_name = "NAME=VALUE")]
    pub placeholders: Vec<String>,
    /// Linux name for an IOS interface (repeatable), e.g. --interface GigabitEthernet1=eth0;
    /// Tunnel0 becomes dmvpn0 unless mapped.
    #[arg(long = "interface", value_name = "IOS=LINUX")]
    pub interfaces: Vec<String>,
    /// Which `interface Tunnel…` to translate (default: the first multipoint GRE one).
    #[arg(long, value_name = "NAME")]
    pub tunnel: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum What {
    Sa,
    Dmvpn,
    Nhrp,
    Ike,
    Interface,
}

#[derive(Debug, Subcommand)]
pub enum ClearWhat {
    /// Delete the IKE SA and its Child SAs with a peer (by NBMA address); traffic brings them
    /// back up.
    Sa {
        /// Peer NBMA address.
        peer: IpAddr,
    },
    /// Delete the Child SAs (IPsec SAs) with a peer and keep its IKE SA, as IOS's `clear
    /// crypto sa peer`; traffic brings new ones up.
    ChildSa {
        /// Peer NBMA address.
        peer: IpAddr,
    },
    /// Purge dynamic NHRP entries (static mappings and NHS registrations stay).
    Nhrp,
}

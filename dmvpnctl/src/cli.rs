//! dmvpnctl's command line (clap), in its own file so that the packaging generator
//! (`packaging/gen`) can build the dmvpnctl(8) man page and the shell completions from the
//! same definition.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use dmvpn_api::ctl;

#[derive(Debug, Parser)]
#[command(
    name = "dmvpnctl",
    version,
    about = "Show and control a running dmvpnd",
    after_help = "Talks to dmvpnd over its control socket: root, or a member of the group \
                  dmvpnd was configured with, may use it."
)]
pub struct Args {
    /// Control socket of dmvpnd.
    #[arg(long, value_name = "PATH", default_value = ctl::DEFAULT_SOCKET, global = true)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Show state: sa (like `show crypto ipsec sa`), dmvpn (`show dmvpn`), nhrp (`show ip nhrp`),
    /// ike (`show crypto ikev2 sa`), interface (`show interfaces`).
    Show {
        what: What,
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
    /// Purge dynamic NHRP entries (static mappings and NHS registrations stay).
    Nhrp,
}

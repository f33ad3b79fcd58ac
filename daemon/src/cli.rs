//! dmvpnd's command line (clap), in its own file so that the packaging generator
//! (`packaging/gen`) can build the dmvpnd(8) man page from the same definition.

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "dmvpnd",
    version,
    about = "Userspace DMVPN router (IKEv2, ESP, mGRE, NHRP)"
)]
pub struct Args {
    /// Configuration file.
    #[arg(long, value_name = "FILE", default_value = dmvpn_config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Validate FILE (and its secrets file) and exit: 0 if valid, 1 with the error on stderr.
    #[arg(long, value_name = "FILE")]
    pub check_config: Option<PathBuf>,
    /// Run attached to the terminal with timestamped logs (dmvpnd never daemonizes itself).
    #[arg(long)]
    pub foreground: bool,
}

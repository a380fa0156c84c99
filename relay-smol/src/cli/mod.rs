//! The command line: `run` (the relay), and the client tools `sub` and `pub`.

pub mod client;
pub mod run;

use argh::FromArgs;

/// FastPubSub relay: a WebSocket pub/sub edge (and mesh relay).
#[derive(FromArgs, Debug)]
pub struct Args {
    #[argh(subcommand)]
    /// what to do
    pub cmd: Cmd,
}

/// Subcommands.
// Parsed once at start: the size of `run`'s options does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Cmd {
    /// Run the relay.
    Run(run::RunArgs),
    /// Subscribe and print deliveries.
    Sub(client::SubArgs),
    /// Publish messages.
    Pub(client::PubArgs),
    /// Create a ticket signing key pair.
    Keygen(crate::tickets::cli::KeygenArgs),
    /// Mint an access ticket offline, or inspect one.
    Ticket(crate::tickets::cli::TicketArgs),
    /// Create a mesh CA.
    MeshCa(crate::quic::certs::MeshCaArgs),
    /// Issue a relay certificate from the mesh CA.
    MeshCert(crate::quic::certs::MeshCertArgs),
}

/// Parses the process arguments and runs the command; returns the exit code.
pub fn main() -> i32 {
    let args: Args = argh::from_env();
    match args.cmd {
        Cmd::Run(a) => run::run(a),
        Cmd::Sub(a) => client::sub(a),
        Cmd::Pub(a) => client::publish(a),
        Cmd::Keygen(a) => crate::tickets::cli::keygen(a),
        Cmd::Ticket(a) => crate::tickets::cli::ticket(a, crate::clock::wall_now()),
        Cmd::MeshCa(a) => crate::quic::certs::run_mesh_ca(&a).map_or_else(
            |e| {
                eprintln!("error: {e}");
                2
            },
            |_| 0,
        ),
        Cmd::MeshCert(a) => crate::quic::certs::run_mesh_cert(&a).map_or_else(
            |e| {
                eprintln!("error: {e}");
                2
            },
            |_| 0,
        ),
    }
}

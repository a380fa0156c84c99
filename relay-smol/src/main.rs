//! The `fastpubsub-relay` binary: see `fastpubsub_relay::cli`.

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    std::process::exit(fastpubsub_relay::cli::main());
}

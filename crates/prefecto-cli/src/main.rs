//! The `prefecto` command line. The run-history commands (`flow-run ls`,
//! `inspect`, `logs`, `timeline`) arrive with the SQLite run history.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "prefecto",
    version,
    about = "Inspect prefecto flow runs and task runs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the versions of this command and of the prefecto library it was built with.
    Version,
}

fn main() {
    match Cli::parse().command {
        Command::Version => {
            println!("prefecto-cli {}", env!("CARGO_PKG_VERSION"));
            println!("log level variable: {}", prefecto::logging::LEVEL_ENV);
        }
    }
}

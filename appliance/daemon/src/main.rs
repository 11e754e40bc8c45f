//! `dg-appliance`: parses arguments and runs the command. No logic lives here.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use dg_appliance::cli::Cli;

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().init();
    }
}

fn main() -> ExitCode {
    init_logging();
    match dg_appliance::commands::run(Cli::parse()) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("dg-appliance: {message}");
            tracing::error!(error = %message, "fatal");
            ExitCode::from(2)
        }
    }
}

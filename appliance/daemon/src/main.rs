//! `dg-appliance`: parses arguments and runs the command. No logic lives here.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use dg_appliance::cli::Cli;
// The global allocator (mimalloc and its settings) is `dg-allocator`'s.
use dg_allocator as _;

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

/// A reader that closed the pipe (`dg-appliance keys list | head`) ends the command
/// quietly, as with any Unix tool, instead of a panic message.
fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    exit_quietly_on_broken_pipe();
    init_logging();
    match dg_appliance::cli::commands::run(Cli::parse()) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("dg-appliance: {message}");
            tracing::error!(error = %message, "fatal");
            ExitCode::from(2)
        }
    }
}

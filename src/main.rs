//! `ocr-server`: parses the command line, sets up logging, dispatches.

use std::process::ExitCode;

use clap::Parser;
use ocr_server::cli::{Cli, Command, run_ocr, run_serve};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OCR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log file or collector gets plain `key=value` text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Ocr(args) => run_ocr(args, &mut std::io::stdout().lock()),
        Command::Serve(args) => run_serve(args).map(|()| true),
        Command::Submit(args) => ocr_server::client::run_submit(args),
        Command::Bench(args) => ocr_server::bench::run_bench(args),
        Command::Keys(args) => ocr_server::cli::run_keys(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("ocr-server: {e}");
            ExitCode::from(2)
        }
    }
}

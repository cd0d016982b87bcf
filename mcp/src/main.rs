//! `lockplane`: the command-line interface for humans and CI, and (`lockplane serve`) the MCP
//! server for agents. Every command is a thin call
//! into the library; errors are rendered for humans with miette.

mod cli;
mod serve;

use std::process::ExitCode;

/// Exits with the status of the failure's class (see `CliError::exit_status` and the README).
#[tokio::main]
async fn main() -> ExitCode {
    // Long lines wrap at spaces only: an id like `sha3-256:…` or a path stays whole, so it
    // can be copied from the terminal.
    let _ = miette::set_hook(Box::new(|_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .break_words(false)
                .word_splitter(textwrap::WordSplitter::NoHyphenation)
                .build(),
        )
    }));
    match cli::run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let status = e.exit_status();
            eprintln!("{:?}", miette::Report::new(e));
            ExitCode::from(status)
        }
    }
}

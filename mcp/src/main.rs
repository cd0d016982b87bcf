//! `lockplane`: the command-line interface for humans and CI, and (`lockplane serve`) the MCP
//! server for agents. Every command is a thin call
//! into the library; errors are rendered for humans with miette.

mod cli;
mod serve;

#[tokio::main]
async fn main() -> miette::Result<()> {
    cli::run().await?;
    Ok(())
}

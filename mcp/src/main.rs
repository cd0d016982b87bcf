//! `lockplane`: the command-line interface for humans and CI. Every command is a thin call
//! into the library; errors are rendered for humans with miette.

mod cli;

#[tokio::main]
async fn main() -> miette::Result<()> {
    cli::run().await?;
    Ok(())
}

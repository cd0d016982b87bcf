//! `lockplane`: the command-line interface for humans and CI, and (`lockplane serve`) the MCP
//! server for agents. Every command is a thin call
//! into the library; errors are rendered for humans with miette.

mod cli;
mod serve;

use std::error::Error;
use std::fmt;
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
    // `LOCKPLANE_LOG=debug` (an EnvFilter) prints each operation's and phase's span with
    // its timings on stderr; nothing is printed without it.
    if let Ok(filter) = std::env::var("LOCKPLANE_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_writer(std::io::stderr)
            .try_init();
    }
    match cli::run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let status = e.exit_status();
            eprintln!("{:?}", miette::Report::new(Shown::new(e)));
            ExitCode::from(status)
        }
    }
}

/// A CLI error as miette renders it: the error's own diagnostic (code, help, labels, related
/// problems), and as causes only what its message does not already say. Lockplane's errors
/// put their cause in their message (so that every surface, MCP answers included, carries
/// it); miette also prints each `source()` below the message, which would show it twice.
#[derive(Debug)]
struct Shown {
    error: cli::CliError,
    causes: Option<Box<Cause>>,
}

/// One cause not already in the text above it.
#[derive(Debug)]
struct Cause {
    text: String,
    next: Option<Box<Cause>>,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.next.as_deref().map(|c| c as &(dyn Error + 'static))
    }
}

impl Shown {
    fn new(error: cli::CliError) -> Shown {
        let mut said = error.to_string();
        let mut texts = Vec::new();
        let mut cause = error.source();
        while let Some(c) = cause {
            // tokio-postgres says "db error" and keeps the server's words one level down:
            // describe it whole, once.
            let (text, key, next) = match c.downcast_ref::<tokio_postgres::Error>() {
                Some(pg) => {
                    let text = lockplane_engine::connect::describe_error(pg);
                    let key = pg
                        .as_db_error()
                        .map(|db| db.message().to_owned())
                        .unwrap_or_else(|| text.clone());
                    (text, key, None)
                }
                None => {
                    let text = c.to_string();
                    (text.clone(), text, c.source())
                }
            };
            if !said.contains(key.trim()) {
                said.push('\n');
                said.push_str(&text);
                texts.push(text);
            }
            cause = next;
        }
        let causes = texts
            .into_iter()
            .rev()
            .fold(None, |next, text| Some(Box::new(Cause { text, next })));
        Shown { error, causes }
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl Error for Shown {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.causes.as_deref().map(|c| c as &(dyn Error + 'static))
    }
}

impl miette::Diagnostic for Shown {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.error.code()
    }

    fn severity(&self) -> Option<miette::Severity> {
        self.error.severity()
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.error.help()
    }

    fn url<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.error.url()
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.error.source_code()
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        self.error.labels()
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        self.error.related()
    }

    fn diagnostic_source(&self) -> Option<&dyn miette::Diagnostic> {
        self.error.diagnostic_source()
    }
}

//! `lockplane drift`: is the live schema still what the ledger last recorded? Once, for CI
//! (exit status 2 on drift), or on a schedule (`--watch 5m`), printing each change of state.
//! A drift found again is reported again but recorded once (see `check_drift`).

use std::time::Duration;

use lockplane_actors::Drift;

use super::plan::{attached, Settings};
use super::{ledger, print, CliError};

/// Flags of `lockplane drift`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The database (else DATABASE_URL, else the PG* variables).
    #[arg(long)]
    database_url: Option<String>,
    /// The database's id in the ledger; default `host:port/dbname`.
    #[arg(long, env = "LOCKPLANE_DB_ID", value_name = "ID")]
    db_id: Option<String>,
    /// Check again every interval (`30s`, `5m`, `1h`) until interrupted, printing a line each
    /// time the state changes (drift found, drift gone).
    #[arg(long, value_name = "INTERVAL", value_parser = parse_interval)]
    watch: Option<Duration>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `500ms`, `30s`, `5m`, `1h` (a bare number is seconds).
pub(crate) fn parse_interval(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not an interval like 30s, 5m or 1h"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" | "secs" => n,
        "ms" => n / 1000.0,
        "m" | "min" | "mins" => n * 60.0,
        "h" | "hour" | "hours" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use ms, s, m or h"
            ))
        }
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("`{text}`: the interval must be positive"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn describe(d: &Drift) -> String {
    if !d.drifted {
        return format!(
            "no drift: {} is at {}, as the ledger recorded",
            d.database, d.live_hash
        );
    }
    let mut s = format!(
        "drift: {} is at {}, the ledger expected {} (recorded as seq {})",
        d.database,
        d.live_hash,
        d.recorded_hash
            .as_ref()
            .map(|h| h.0.as_str())
            .unwrap_or("nothing"),
        d.seq.map(|s| s.to_string()).unwrap_or_else(|| "-".into())
    );
    for difference in &d.differences {
        s.push_str("\n  ");
        s.push_str(difference);
    }
    s
}

fn show(d: &Drift, json: bool) -> Result<(), CliError> {
    if json {
        print(&serde_json::to_string_pretty(d).map_err(|e| CliError::Output(e.to_string()))?)
    } else {
        print(&describe(d))
    }
}

/// Runs `lockplane drift`.
pub(crate) async fn run(at: &ledger::LedgerAt, actor: &str, args: Args) -> Result<(), CliError> {
    let settings = Settings {
        dry_run: false,
        ..Settings::default()
    };
    let (runtime, db) = attached(
        at,
        settings,
        args.database_url.as_deref(),
        args.db_id.as_deref(),
    )
    .await?;
    let Some(every) = args.watch else {
        let d = runtime.check_drift(&db, actor).await?;
        show(&d, args.json)?;
        return if d.drifted {
            Err(CliError::Drifted(format!(
                "{} drifted from what the ledger recorded",
                d.database
            )))
        } else {
            Ok(())
        };
    };
    let mut last: Option<(bool, String)> = None;
    loop {
        match runtime.check_drift(&db, actor).await {
            Ok(d) => {
                let state = (d.drifted, d.live_hash.0.clone());
                if last.as_ref() != Some(&state) {
                    show(&d, args.json)?;
                    last = Some(state);
                }
            }
            // A database that is briefly unreachable is reported, and checked again.
            Err(e) => eprintln!("lockplane: drift check failed: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_read_like_people_write_them() {
        assert_eq!(parse_interval("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_interval("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_interval("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        assert!(parse_interval("5 weeks").is_err());
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("soon").is_err());
    }
}

//! Test helper for the store's crash and locking tests; not part of the product.
//!
//! `ledger-crash-child <dir> append`: appends to the ledger in `<dir>` from four threads as fast
//! as it can (two threads with expected-head retries, two without), and after each
//! acknowledged append prints `ack <first_seq> <last_seq> <head_hash>` on stdout. The parent
//! kills it at random moments and checks every acknowledged record survived.
//!
//! `ledger-crash-child <dir> hold`: opens the ledger, prints `ready`, and keeps it open until
//! stdin closes, so the parent can check the lock-holder error.
//!
//! `ledger-crash-child --pg <url> <ledger> append`: the same appends to a [`PgStore`] ledger,
//! through two separate connections, each used by one thread with expected-head retries and one
//! without (so appends also race across connections through the head row lock).

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;

use lockplane_store::{NewRecord, PgStore, SledStore, Store, StoreError};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--pg") {
        return pg_main(&args[2..]);
    }
    let (Some(dir), Some(mode)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: ledger-crash-child <dir> append|hold | --pg <url> <ledger> append");
        return ExitCode::from(2);
    };
    let store = match SledStore::open(dir) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("open failed: {e}");
            return ExitCode::from(1);
        }
    };
    match mode.as_str() {
        "append" => append_forever(&[store]),
        "hold" => {
            println!("ready");
            // Block until the parent closes our stdin.
            for _ in std::io::stdin().lock().lines() {}
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("unknown mode {mode:?}");
            ExitCode::from(2)
        }
    }
}

fn pg_main(args: &[String]) -> ExitCode {
    let (Some(url), Some(ledger), Some("append")) =
        (args.first(), args.get(1), args.get(2).map(String::as_str))
    else {
        eprintln!("usage: ledger-crash-child --pg <url> <ledger> append");
        return ExitCode::from(2);
    };
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..2 {
        match PgStore::open_url(url, ledger) {
            Ok(s) => stores.push(Arc::new(s)),
            Err(e) => {
                eprintln!("open failed: {e}");
                return ExitCode::from(1);
            }
        }
    }
    append_forever(&stores)
}

fn append_forever<S: Store + ?Sized + 'static>(stores: &[Arc<S>]) -> ExitCode {
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let store = Arc::clone(&stores[t as usize % stores.len()]);
            std::thread::spawn(move || writer(&*store, t))
        })
        .collect();
    for t in threads {
        if let Ok(Err(e)) = t.join() {
            eprintln!("writer failed: {e}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

fn writer<S: Store + ?Sized>(store: &S, thread: u64) -> Result<(), StoreError> {
    let mut expected = store.head()?;
    for n in 0u64.. {
        let batch: Vec<NewRecord> = (0..=(n % 3))
            .map(|i| {
                let payload = format!("thread {thread} append {n} item {i}").into_bytes();
                NewRecord::now(format!("db-{thread}"), "CrashTest", payload)
            })
            .collect();
        let len = batch.len() as u64;
        let head = if thread < 2 {
            // Exercise the optimistic path: retry on conflict with the head we are told.
            loop {
                match store.append(Some(expected), batch.clone()) {
                    Ok(h) => break h,
                    Err(StoreError::Conflict { actual, .. }) => expected = actual,
                    Err(e) => return Err(e),
                }
            }
        } else {
            store.append(None, batch)?
        };
        expected = head;
        let mut out = std::io::stdout().lock();
        // A closed pipe means the parent is gone; stop quietly.
        if writeln!(
            out,
            "ack {} {} {}",
            head.seq + 1 - len,
            head.seq,
            head.hash.to_hex()
        )
        .and_then(|()| out.flush())
        .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

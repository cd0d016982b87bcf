//! Helpers for tests, benchmarks and demos that need a real server: one throwaway cluster per
//! process, shared, and a fresh database per caller so they stay independent.
//!
//! The shared cluster lives in a `static` and is never dropped; its reaper process (see
//! [`crate::cluster`]) stops it and removes its directory when the process exits.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use crate::cluster::{Cluster, ClusterError};

static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The process-wide shared cluster, started on first use.
pub fn shared_cluster() -> Result<&'static Cluster, ClusterError> {
    let started = SHARED.get_or_init(|| Cluster::start_default().map_err(|e| e.to_string()));
    started.as_ref().map_err(|message| ClusterError::Failed {
        program: "throwaway cluster".into(),
        status: "not started".into(),
        output: message.clone(),
    })
}

/// The server builds tests run on: the local one, then each `major=bin_dir` pair listed in
/// `LOCKPLANE_PG_MATRIX` (set by `make test`) of another major version.
pub fn pg_matrix() -> Result<Vec<crate::cluster::PgBinaries>, ClusterError> {
    use crate::cluster::PgBinaries;
    let mut all = vec![PgBinaries::locate(None)?];
    let listed = std::env::var("LOCKPLANE_PG_MATRIX").unwrap_or_default();
    for spec in listed.split_whitespace() {
        let dir = spec.split_once('=').map_or(spec, |(_, dir)| dir);
        let bins = PgBinaries::locate(Some(std::path::Path::new(dir)))?;
        if all.iter().all(|b| b.major != bins.major) {
            all.push(bins);
        }
    }
    Ok(all)
}

/// Creates a new, empty database on the shared cluster and returns its name.
pub async fn fresh_database(prefix: &str) -> Result<String, ClusterError> {
    let cluster = shared_cluster()?;
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    cluster.create_database(&name).await?;
    Ok(name)
}

/// Environment variable naming the folder of corpus schemas (Chinook, Pagila).
pub const CORPUS_ENV: &str = "LOCKPLANE_CORPUS";

/// The SQL of corpus schema `file` (e.g. `pagila-schema.sql`), from `$LOCKPLANE_CORPUS` or the
/// `shared/corpus` folder beside the repository. `None`, with a one-line notice on stderr,
/// when neither has it (a user's clone has no `shared/`).
pub fn corpus_sql(file: &str) -> Option<String> {
    let dir = std::env::var_os(CORPUS_ENV)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus")
        });
    let path = dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(sql) => Some(sql),
        Err(_) => {
            eprintln!(
                "corpus {} not found (set {CORPUS_ENV}); skipping",
                path.display()
            );
            None
        }
    }
}

/// Environment variable naming the folder of pgroll's format (its `schema.json`, test cases
/// and examples).
pub const PGROLL_ENV: &str = "LOCKPLANE_PGROLL_DIR";

/// The folder holding pgroll's `schema.json`, `testdata/` and `examples/`: `$LOCKPLANE_PGROLL_DIR`
/// or the `shared/pgroll` folder beside the repository. `None`, with a one-line notice on
/// stderr, when neither has its `schema.json` (a user's clone has no `shared/`).
pub fn pgroll_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os(PGROLL_ENV)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/pgroll")
        });
    if dir.join("schema.json").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "pgroll format {} not found (set {PGROLL_ENV}); skipping",
            dir.display()
        );
        None
    }
}

/// The README's DSL example (the YAML block starting with the `users` table), read from the
/// repository's README.md: tests run it through every surface, so the README cannot drift
/// from what works.
pub fn readme_dsl_example() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).unwrap_or_default();
    let marker = "```yaml\nversion: 1\nschemas:\n  public:\n    tables:\n      users:";
    let Some(start) = readme.find(marker) else {
        return String::new();
    };
    let body = &readme[start + "```yaml\n".len()..];
    body[..body.find("```").unwrap_or(body.len())].to_owned()
}

/// SQL that installs a DDL log Lockplane cannot see (the `lockplane` schema is never part of
/// a catalog): event triggers write each DDL command's backend, transaction and time into
/// `lockplane.ddl_log`. Concurrency tests read it with [`ddl_transactions`] to prove, from
/// Postgres' own record, that no two applies ran DDL at the same time.
pub const DDL_LOG: &str = "
CREATE SCHEMA lockplane;
CREATE TABLE lockplane.ddl_log (
    id bigserial PRIMARY KEY, pid int NOT NULL, xid bigint NOT NULL,
    at timestamptz NOT NULL, tag text NOT NULL);
CREATE FUNCTION lockplane.log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO lockplane.ddl_log (pid, xid, at, tag)
  VALUES (pg_backend_pid(), txid_current(), clock_timestamp(), TG_TAG);
END $$;
CREATE EVENT TRIGGER lp_ddl_start ON ddl_command_start EXECUTE FUNCTION lockplane.log_ddl();
CREATE EVENT TRIGGER lp_ddl_end ON ddl_command_end EXECUTE FUNCTION lockplane.log_ddl();
";

/// How many transactions ran DDL according to the [`DDL_LOG`]; `Err` names the first two
/// whose spans (first to last logged command) intersect.
pub async fn ddl_transactions(client: &tokio_postgres::Client) -> Result<usize, String> {
    let rows = client
        .query(
            "SELECT xid, min(at)::text, max(at)::text, min(at) AS s, max(at) AS e \
             FROM lockplane.ddl_log GROUP BY xid ORDER BY s",
            &[],
        )
        .await
        .map_err(|e| format!("reading lockplane.ddl_log: {e}"))?;
    type Span = (
        i64,
        String,
        String,
        std::time::SystemTime,
        std::time::SystemTime,
    );
    let spans: Vec<Span> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    for pair in spans.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.3 <= a.4 {
            return Err(format!(
                "transactions {} ({} – {}) and {} ({} – {}) ran DDL at the same time",
                a.0, a.1, a.2, b.0, b.1, b.2
            ));
        }
    }
    Ok(spans.len())
}

/// What [`app_table_sql`] needs first: an enum type, and the two roles its grants name
/// (cluster-wide, created unless they exist).
pub const APP_SCHEMA_PRELUDE: &str = "
CREATE TYPE public.app_status AS ENUM ('active', 'suspended', 'archived');
DO $$ BEGIN CREATE ROLE lp_bench_reader; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE lp_bench_writer; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
";

/// Table `t{i}` of a schema shaped like real applications', using every kind the manifest
/// covers, for benchmarks and plan-shape tests at thousands of tables: an identity primary key,
/// a serial column, a uuid tenant column, a stored generated column, an enum column with a
/// default, a foreign key to the previous table, unique and check constraints, a partial, an
/// expression and a multi-column index, table and column comments, table and column grants,
/// row-level security with one policy; every 10th table also a view, a sequence and an
/// exclusion constraint, every 20th a trigger and its function (objects the manifest lists as
/// unsupported). Run [`APP_SCHEMA_PRELUDE`] once first.
pub fn app_table_sql(i: usize) -> String {
    let parent = i.saturating_sub(1);
    let mut sql = format!(
        "CREATE TABLE public.t{i} (
           id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
           seq_no serial,
           tenant_id uuid NOT NULL,
           parent_id bigint REFERENCES public.t{parent} (id) ON DELETE CASCADE,
           code varchar(50) NOT NULL,
           status public.app_status NOT NULL DEFAULT 'active',
           qty integer NOT NULL DEFAULT 0 CHECK (qty >= 0),
           price numeric(10,2),
           total numeric GENERATED ALWAYS AS (qty * price) STORED,
           created timestamptz NOT NULL DEFAULT now(),
           note text,
           UNIQUE (tenant_id, code));
         CREATE INDEX t{i}_active_ix ON public.t{i} (created) WHERE status = 'active';
         CREATE INDEX t{i}_code_ix ON public.t{i} (lower(code));
         CREATE INDEX t{i}_tenant_ix ON public.t{i} (tenant_id, created DESC);
         COMMENT ON TABLE public.t{i} IS 'table {i}';
         COMMENT ON COLUMN public.t{i}.code IS 'the code';
         GRANT SELECT ON public.t{i} TO lp_bench_reader;
         GRANT INSERT, UPDATE ON public.t{i} TO lp_bench_writer;
         GRANT UPDATE (note) ON public.t{i} TO lp_bench_reader;
         ALTER TABLE public.t{i} ENABLE ROW LEVEL SECURITY;
         CREATE POLICY tenant ON public.t{i}
           USING (tenant_id = pg_catalog.current_setting('app.tenant_id', true)::uuid);"
    );
    if i.is_multiple_of(10) {
        sql.push_str(&format!(
            "CREATE VIEW public.v{i} AS SELECT id, code FROM public.t{i} WHERE status = 'active';
             CREATE SEQUENCE public.s{i} START 100 INCREMENT 5;
             ALTER TABLE public.t{i} ADD COLUMN period tstzrange,
               ADD CONSTRAINT t{i}_no_overlap EXCLUDE USING gist (period WITH &&);"
        ));
    }
    if i.is_multiple_of(20) {
        sql.push_str(&format!(
            "CREATE FUNCTION public.touch{i}() RETURNS trigger LANGUAGE plpgsql
               AS $$ BEGIN NEW.note := 'touched'; RETURN NEW; END $$;
             CREATE TRIGGER touch BEFORE UPDATE ON public.t{i}
               FOR EACH ROW EXECUTE FUNCTION public.touch{i}();"
        ));
    }
    sql
}

/// Builds `tables` tables of [`app_table_sql`] (after [`APP_SCHEMA_PRELUDE`]) in `client`'s
/// database, a hundred per round trip, then `ANALYZE`s it (catalogs included) so plans are
/// made with real sizes.
pub async fn build_app_schema(
    client: &tokio_postgres::Client,
    tables: usize,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(APP_SCHEMA_PRELUDE).await?;
    let mut batch = String::new();
    for i in 0..tables {
        batch.push_str(&app_table_sql(i));
        batch.push('\n');
        if (i + 1).is_multiple_of(100) || i + 1 == tables {
            client
                .batch_execute(&format!("BEGIN; {batch} COMMIT;"))
                .await?;
            batch.clear();
        }
    }
    client.batch_execute("ANALYZE").await
}

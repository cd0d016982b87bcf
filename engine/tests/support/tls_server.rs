//! A Postgres server set up like a production one, for the connection tests of the engine,
//! the runtime and the binary (each includes this file with `#[path]`): `ssl = on` with a
//! certificate for `localhost` signed by a CA the test makes (rcgen), and a `pg_hba.conf` that
//! takes TCP connections over TLS only, with scram-sha-256 passwords, or a client certificate
//! for one role.
//!
//! One server per test process, started on first use; its files (certificates, keys) live in
//! its data directory, so the cluster's reaper removes them with it when the process exits.

#![allow(dead_code)] // each test crate uses its own part

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lockplane_engine::cluster::{Cluster, ClusterSetup, PgBinaries};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// The role that logs in with a password.
pub const ROLE: &str = "lp_tls_user";
/// Its password.
pub const PASSWORD: &str = "tls-Secret-1";
/// The role that logs in with a client certificate (its CN).
pub const CERT_ROLE: &str = "lp_tls_cert";
/// The database both may use.
pub const DB: &str = "app";

/// The running server and the files a client needs.
pub struct TlsServer {
    cluster: Cluster,
}

impl TlsServer {
    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.cluster.port()
    }

    /// The CA that signed the server's and the client's certificates.
    pub fn ca(&self) -> PathBuf {
        self.file("ca.crt")
    }

    /// Another CA, which signed nothing the server has.
    pub fn other_ca(&self) -> PathBuf {
        self.file("other-ca.crt")
    }

    /// The client certificate of [`CERT_ROLE`] and its key (mode 0600).
    pub fn client_cert(&self) -> (PathBuf, PathBuf) {
        (self.file("client.crt"), self.file("client.key"))
    }

    fn file(&self, name: &str) -> PathBuf {
        self.cluster.data_dir().join(name)
    }

    /// A URL for `user` (with `password`, if any) reaching the server as `host` (the name the
    /// certificate is checked against) at 127.0.0.1, with the extra parameters `params`
    /// (`sslmode=…&…`).
    pub fn url(&self, user: &str, password: Option<&str>, host: &str, params: &str) -> String {
        let auth = match password {
            Some(p) => format!("{user}:{p}"),
            None => user.to_owned(),
        };
        let mut url = format!(
            "postgres://{auth}@{host}:{}/{DB}?hostaddr=127.0.0.1",
            self.port()
        );
        if !params.is_empty() {
            url.push('&');
            url.push_str(params);
        }
        url
    }

    /// [`TlsServer::url`] for [`ROLE`] with its password, as `localhost`.
    pub fn password_url(&self, params: &str) -> String {
        self.url(ROLE, Some(PASSWORD), "localhost", params)
    }

    /// `sslmode=verify-full&sslrootcert=<the CA>`.
    pub fn verify_full(&self) -> String {
        format!("sslmode=verify-full&sslrootcert={}", self.ca().display())
    }
}

/// The process-wide TLS server, started on first use (blocking: initdb and start, a few
/// seconds).
pub fn server() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    SERVER.get_or_init(start)
}

fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert, Issuer::new(params, key))
}

fn leaf(names: &[&str], common_name: &str, issuer: &Issuer<'static, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let cert = params.signed_by(&key, issuer).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

fn start() -> TlsServer {
    let (ca_cert, ca_issuer) = ca("Lockplane test CA");
    let (other_ca_cert, _) = ca("Lockplane other test CA");
    // The server's certificate names `localhost` only: reaching it as 127.0.0.1 is a wrong
    // host name for verify-full.
    let (server_cert, server_key) = leaf(&["localhost"], "localhost", &ca_issuer);
    let (client_cert, client_key) = leaf(&[], CERT_ROLE, &ca_issuer);
    let hba = format!(
        "local all all trust\n\
         hostssl all postgres 127.0.0.1/32 trust\n\
         hostssl all {CERT_ROLE} 127.0.0.1/32 cert\n\
         hostssl all all 127.0.0.1/32 scram-sha-256\n"
    );
    let setup = ClusterSetup {
        settings: vec![
            "ssl = on".into(),
            "ssl_cert_file = 'server.crt'".into(),
            "ssl_key_file = 'server.key'".into(),
            "ssl_ca_file = 'ca.crt'".into(),
            "password_encryption = 'scram-sha-256'".into(),
        ],
        files: vec![
            ("server.crt".into(), server_cert.into_bytes()),
            ("server.key".into(), server_key.into_bytes()),
            ("ca.crt".into(), ca_cert.pem().into_bytes()),
            ("other-ca.crt".into(), other_ca_cert.pem().into_bytes()),
            ("client.crt".into(), client_cert.into_bytes()),
            ("client.key".into(), client_key.into_bytes()),
        ],
        hba: Some(hba),
    };
    let bins = PgBinaries::locate(None).expect("Postgres binaries");
    let cluster = Cluster::start_with(&bins, &setup).expect("TLS cluster");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let admin = cluster
            .connect("postgres")
            .await
            .expect("superuser over TLS");
        for sql in [
            format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'"),
            format!("CREATE ROLE {CERT_ROLE} LOGIN"),
            format!("CREATE DATABASE {DB} OWNER {ROLE}"),
            format!("GRANT ALL ON DATABASE {DB} TO {CERT_ROLE}"),
        ] {
            admin.batch_execute(&sql).await.expect("roles and database");
        }
    });
    TlsServer { cluster }
}

/// Sets `path`'s permission bits.
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A listener that accepts TCP connections and never says a word: a server that hangs. It
/// holds what it accepted until the process ends (a test process lives seconds).
pub fn silent_listener() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    port
}

/// [`server`] from async code (its start blocks).
pub async fn tls_server() -> &'static TlsServer {
    tokio::task::spawn_blocking(server)
        .await
        .expect("starting the TLS server")
}

//! The streamable HTTP transport: rmcp's `StreamableHttpService` (one handler and context per
//! MCP session, via its session manager) behind an axum middleware, served by hyper connections
//! of our own.
//!
//! The middleware, on every request, the session's first included:
//! - refuses a browser `Origin` that is neither loopback nor listed with `--allowed-origin`
//!   (403): the DNS-rebinding defence the MCP transport specification asks for (a page of
//!   another site that resolves its name to 127.0.0.1 still sends its own origin);
//! - requires `Authorization: Bearer <token>` (401; the scheme is case-insensitive, RFC 7235);
//! - refuses a new session beyond `--max-sessions` (503, with a JSON-RPC error naming the
//!   limit). Idle sessions close after rmcp's keep-alive (5 minutes without a request).
//!
//! rmcp checks the `Host` header against loopback names; the address the server is bound to is
//! added, so any loopback address (`127.0.0.2`) works. Connections that do not finish their
//! request headers within `--header-timeout` are closed (slowloris), idle keep-alive ones too.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{json, Value};

use super::tools::{LockplaneMcp, Shared};
use super::ServeError;

/// Bytes of randomness in a generated token (hex-encoded: 64 characters).
const TOKEN_BYTES: usize = 32;
/// The largest request body read to decide whether a session-less POST is an `initialize`
/// (rmcp's own limit on request bodies).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// How long a graceful shutdown waits for open connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How `lockplane serve --http` listens and whom it lets in.
pub(super) struct HttpOptions {
    /// Where to listen.
    pub addr: SocketAddr,
    /// The bearer token.
    pub token: String,
    /// A non-loopback address is allowed (no Host check then).
    pub allow_remote: bool,
    /// Browser origins allowed besides loopback ones (`scheme://host[:port]`, or `null`).
    pub allowed_origins: Vec<String>,
    /// The most MCP sessions open at once.
    pub max_sessions: usize,
    /// How long a connection may take to send a request's headers.
    pub header_timeout: Duration,
}

/// The bearer token: the first line of `file` (created with a new random token, readable by
/// its owner only, when it does not exist yet, so that restarts keep the token clients are
/// configured with), or 32 random bytes (hex) printed once on standard error.
pub(super) fn token(file: Option<&Path>) -> Result<String, ServeError> {
    if let Some(file) = file {
        if !file.exists() {
            let token = random_token()?;
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    ServeError::Http(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(file)
                .and_then(|mut f| writeln!(f, "{token}"))
                .map_err(|e| ServeError::Http(format!("cannot write {}: {e}", file.display())))?;
            eprintln!(
                "lockplane: wrote a new bearer token to {} (kept across restarts)",
                file.display()
            );
            return Ok(token);
        }
        let text = std::fs::read_to_string(file)
            .map_err(|e| ServeError::Http(format!("cannot read {}: {e}", file.display())))?;
        let token = text.lines().next().unwrap_or("").trim().to_owned();
        if token.len() < 16 {
            return Err(ServeError::Http(format!(
                "the token in {} is shorter than 16 characters: use a long random token \
                 (e.g. `head -c 32 /dev/urandom | xxd -p -c 64`)",
                file.display()
            )));
        }
        return Ok(token);
    }
    let token = random_token()?;
    eprintln!(
        "lockplane: bearer token (shown once, pass it as `Authorization: Bearer …`; use \
         --token-file to keep one across restarts): {token}"
    );
    Ok(token)
}

fn random_token() -> Result<String, ServeError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| ServeError::Http(format!("cannot read /dev/urandom for a token: {e}")))?;
    Ok(hex::encode(bytes))
}

/// Loopback only, unless the operator said otherwise.
pub(super) fn check_address(addr: SocketAddr, allow_remote: bool) -> Result<(), ServeError> {
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(ServeError::Http(format!(
            "{addr} is not a loopback address: the server binds to loopback unless \
             --allow-remote is given (and then needs TLS in front)"
        )));
    }
    Ok(())
}

/// Checks `--allowed-origin` values: `null` or `scheme://host[:port]`.
pub(super) fn check_origins(origins: &[String]) -> Result<(), ServeError> {
    for origin in origins {
        if origin != "null" && parse_origin(origin).is_none() {
            return Err(ServeError::Http(format!(
                "--allowed-origin {origin:?} is not an origin: write scheme://host[:port] \
                 (e.g. https://app.example.com) or null"
            )));
        }
    }
    Ok(())
}

/// What the middleware needs.
struct Gate {
    token: String,
    /// Allowed origins besides loopback ones, normalised (`scheme://host:port`, or `null`).
    origins: Vec<String>,
    sessions: Arc<LocalSessionManager>,
    max_sessions: usize,
    /// Held while a session opens (see `check_request`).
    opening: tokio::sync::Mutex<()>,
}

/// Serves until interrupted (SIGINT/SIGTERM).
pub(super) async fn serve(shared: Shared, options: HttpOptions) -> Result<(), ServeError> {
    let HttpOptions {
        addr,
        token,
        allow_remote,
        allowed_origins,
        max_sessions,
        header_timeout,
    } = options;
    check_address(addr, allow_remote)?;
    check_origins(&allowed_origins)?;
    let mut config = StreamableHttpServerConfig::default();
    if allow_remote {
        config = config.disable_allowed_hosts();
    } else {
        // rmcp accepts `localhost`, `127.0.0.1` and `::1` by default; any other loopback
        // address the server is bound to must be accepted too.
        let bound = match addr.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        let mut hosts = config.allowed_hosts.clone();
        if !hosts.contains(&bound) {
            hosts.push(bound);
        }
        config = config.with_allowed_hosts(hosts);
    }
    let cancel = config.cancellation_token.clone();
    let sessions = Arc::new(LocalSessionManager::default());
    let factory_shared = shared.clone();
    let service = StreamableHttpService::new(
        move || Ok(LockplaneMcp::new(factory_shared.clone())),
        sessions.clone(),
        config,
    );
    let gate = Arc::new(Gate {
        token,
        origins: allowed_origins
            .iter()
            .map(|o| normal_origin(o).unwrap_or_else(|| o.clone()))
            .collect(),
        sessions,
        max_sessions,
        opening: tokio::sync::Mutex::new(()),
    });
    let app = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(middleware::from_fn_with_state(gate, check_request));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::Http(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| ServeError::Http(e.to_string()))?;
    eprintln!(
        "lockplane: MCP server listening on http://{bound}/mcp for {} ({} access)",
        shared.db,
        shared.runtime.access_mode()
    );

    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    eprintln!("lockplane: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Timeouts and resets end a connection; nothing to report.
            let _ = connection.await;
        });
    }
    drop(listener);
    // Ends the sessions and their event streams, then lets open requests finish.
    cancel.cancel();
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {}
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Origin, then bearer token, then the session limit.
async fn check_request(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !origin_allowed(origin, &gate.origins) {
            return (
                StatusCode::FORBIDDEN,
                format!(
                    "origin {origin:?} is not allowed: lockplane serve accepts requests from \
                     loopback origins and those given with --allowed-origin (a defence against \
                     DNS rebinding)\n"
                ),
            )
                .into_response();
        }
    }
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .is_some_and(|given| constant_time_eq(given.as_bytes(), gate.token.as_bytes()));
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong bearer token: send `Authorization: Bearer <token>` (the token \
             lockplane serve printed at start, or the one in its --token-file)\n",
        )
            .into_response();
    }
    let sessionless_post =
        request.method() == Method::POST && !request.headers().contains_key("mcp-session-id");
    if !sessionless_post {
        return next.run(request).await;
    }
    // A POST without a session: an `initialize` opens one (other such POSTs are 2026-07-28
    // requests and `server/discover`, served without one).
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {MAX_BODY_BYTES} bytes\n"),
            )
                .into_response()
        }
    };
    let message: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let request = Request::from_parts(parts, Body::from(bytes));
    if message.get("method").and_then(Value::as_str) != Some("initialize") {
        return next.run(request).await;
    }
    // One session opens at a time, so the count cannot be passed by a race; rmcp has the
    // session in its map before the initialize answer starts.
    let _opening = gate.opening.lock().await;
    if gate.sessions.sessions.read().await.len() < gate.max_sessions {
        return next.run(request).await;
    }
    let error = json!({
        "jsonrpc": "2.0",
        "id": message.get("id").cloned().unwrap_or(Value::Null),
        "error": {
            "code": -32000,
            "message": format!(
                "too many MCP sessions: this server allows {} at once (lockplane serve \
                 --max-sessions); close one (HTTP DELETE with its Mcp-Session-Id) or wait \
                 for an idle one to expire (5 minutes without a request), then connect again",
                gate.max_sessions
            ),
        }
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/json")],
        error.to_string(),
    )
        .into_response()
}

/// The token of `Bearer <token>`, the scheme in any case (RFC 7235), spaces around it skipped.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// `scheme://host[:port]` → (scheme, host without brackets, port with the scheme's default).
fn parse_origin(origin: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => match scheme.as_str() {
            "https" | "wss" => 443,
            _ => 80,
        },
    };
    if host.is_empty() {
        return None;
    }
    Some((scheme, host.to_ascii_lowercase(), port))
}

/// An origin as compared: `scheme://host:port` (brackets around IPv6 hosts).
fn normal_origin(origin: &str) -> Option<String> {
    if origin == "null" {
        return Some("null".to_owned());
    }
    let (scheme, host, port) = parse_origin(origin)?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Some(format!("{scheme}://{host}:{port}"))
}

/// A loopback origin (`localhost`, `127.0.0.0/8`, `[::1]`, any port), or one of `allowed`.
fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    if let Some(normal) = normal_origin(origin) {
        if allowed.contains(&normal) {
            return true;
        }
    }
    let Some((scheme, host, _)) = parse_origin(origin) else {
        return false;
    };
    if !matches!(scheme.as_str(), "http" | "https") {
        return false;
    }
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Compares without an early exit, so response timing does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_token_file_is_created_once_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("conf").join("token");
        let first = token(Some(&file)).expect("created");
        assert_eq!(first.len(), TOKEN_BYTES * 2);
        let mode = std::fs::metadata(&file).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "owner only");
        assert_eq!(
            token(Some(&file)).expect("read back"),
            first,
            "kept across restarts"
        );
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }

    #[test]
    fn origins() {
        let allowed = vec![normal_origin("https://App.example.com").unwrap()];
        for ok in [
            "http://localhost:3000",
            "http://127.0.0.1",
            "http://127.0.0.2:8080",
            "http://[::1]:5173",
            "https://app.example.com:443",
            "https://app.example.com",
            "http://foo.localhost:1",
        ] {
            assert!(origin_allowed(ok, &allowed), "{ok}");
        }
        for refused in [
            "http://evil.example",
            "https://app.example.com:8443",
            "http://app.example.com",
            "null",
            "file://",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "",
        ] {
            assert!(!origin_allowed(refused, &allowed), "{refused}");
        }
        assert!(origin_allowed("null", &["null".to_owned()]));
        assert!(check_origins(&["https://x.example/path".to_owned()]).is_err());
    }
}

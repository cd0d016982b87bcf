//! The streamable HTTP transport: rmcp's `StreamableHttpService` (one handler and context per
//! MCP session, via its session manager) behind an axum middleware that requires
//! `Authorization: Bearer <token>` on every request, the session's first included.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use super::tools::{LockplaneMcp, Shared};
use super::ServeError;

/// Bytes of randomness in a generated token (hex-encoded: 64 characters).
const TOKEN_BYTES: usize = 32;

/// The bearer token: the first line of `file`, or 32 random bytes (hex) printed once on
/// standard error so the operator can hand it to the client.
pub(super) fn token(file: Option<&Path>) -> Result<String, ServeError> {
    if let Some(file) = file {
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
    let mut bytes = [0u8; TOKEN_BYTES];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| ServeError::Http(format!("cannot read /dev/urandom for a token: {e}")))?;
    let token = hex::encode(bytes);
    eprintln!(
        "lockplane: bearer token (shown once, pass it as `Authorization: Bearer …`): {token}"
    );
    Ok(token)
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

/// Serves until interrupted (SIGINT/SIGTERM).
pub(super) async fn serve(
    shared: Shared,
    addr: SocketAddr,
    token: String,
    allow_remote: bool,
) -> Result<(), ServeError> {
    check_address(addr, allow_remote)?;
    let mut config = StreamableHttpServerConfig::default();
    if allow_remote {
        config = config.disable_allowed_hosts();
    }
    let cancel = config.cancellation_token.clone();
    let factory_shared = shared.clone();
    let service = StreamableHttpService::new(
        move || Ok(LockplaneMcp::new(factory_shared.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let app =
        axum::Router::new()
            .nest_service("/mcp", service)
            .layer(middleware::from_fn_with_state(
                Arc::new(token),
                require_bearer,
            ));
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
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            cancel.cancel();
        })
        .await
        .map_err(|e| ServeError::Http(e.to_string()))
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

/// 401 unless the request carries exactly `Authorization: Bearer <token>`.
async fn require_bearer(
    State(token): State<Arc<String>>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => {
            next.run(request).await
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong bearer token: send `Authorization: Bearer <token>` (the token \
             lockplane serve printed at start, or the one in its --token-file)\n",
        )
            .into_response(),
    }
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
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}

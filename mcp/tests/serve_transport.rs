//! `lockplane serve`'s transports at the byte level, without an SDK: what it does with bad
//! input and hostile connections.
//!
//! HTTP: a foreign `Origin` refused (403), absent and loopback ones accepted; the `Bearer`
//! scheme in any case; a connection that never finishes its headers closed after
//! `--header-timeout`; sessions beyond `--max-sessions` refused with a clear error; a loopback
//! address other than 127.0.0.1; the client's name in the ledger for stateless (2026-07-28)
//! requests. Stdio: a line that is not JSON, not UTF-8 or too long each answered with a parse
//! error while the session goes on. Both: an answer over `--max-result-bytes` cut with a note.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{audit_log, database, serve_args, Server, BIN};
use serde_json::{json, Value};

const TOKEN: &str = "transport-token-0123456789abcdef0123456789";

/// A server over HTTP with the token and `extra` flags, at `addr`.
async fn http_server(prefix: &str, addr: &str, extra: &[&str]) -> (Server, tempfile::TempDir) {
    let (url, shadow) = database(prefix).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let mut args = serve_args(&dir.path().join("ledger"), &url, &shadow);
    args.extend(["--token-file".to_owned(), token_file.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    (Server::start_at(&args, addr), dir)
}

/// What came back from one raw HTTP/1.1 request.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    /// The JSON-RPC message in the body (plain JSON, or the `data:` line of an SSE event).
    fn message(&self) -> Value {
        if let Ok(v) = serde_json::from_str(&self.body) {
            return v;
        }
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .find(|v| v.get("id").is_some())
            .unwrap_or_else(|| panic!("no JSON-RPC message in {:?}", self.body))
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`), read to the end.
fn request(addr: &str, method: &str, headers: &[(&str, String)], body: &str) -> Reply {
    let mut text = format!(
        "{method} /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream.write_all(text.as_bytes()).expect("write");
    let mut raw = Vec::new();
    // SSE streams end with the response; Connection: close ends the rest.
    let _ = stream.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn bearer() -> (&'static str, String) {
    ("Authorization", format!("Bearer {TOKEN}"))
}

fn initialize(name: &str) -> String {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": name, "version": "0"}}
    })
    .to_string()
}

/// initialize → its reply (200 carries the session id).
fn open_session(addr: &str, extra: &[(&str, String)]) -> Reply {
    let mut headers = vec![bearer()];
    headers.extend(extra.iter().cloned());
    request(addr, "POST", &headers, &initialize("raw"))
}

/// One tool call in a session (after `notifications/initialized`): the JSON-RPC reply.
fn call_in_session(addr: &str, session: &str, tool: &str, arguments: Value) -> Value {
    let headers = vec![
        bearer(),
        ("Mcp-Session-Id", session.to_owned()),
        ("MCP-Protocol-Version", "2025-11-25".to_owned()),
    ];
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let r = request(addr, "POST", &headers, &initialized.to_string());
    assert_eq!(r.status, 202, "{}", r.body);
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": tool, "arguments": arguments}});
    let r = request(addr, "POST", &headers, &call.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    r.message()
}

#[tokio::test]
async fn origins_from_other_sites_are_refused() {
    let (server, _dir) = http_server(
        "tr_origin",
        "127.0.0.1:0",
        &["--allowed-origin", "https://app.example.com"],
    )
    .await;
    let with = |origin: &str| open_session(&server.addr, &[("Origin", origin.to_owned())]).status;
    // A page of another site (a DNS-rebinding attack resolves its name to 127.0.0.1, but the
    // browser still sends the page's origin): refused even with the right token.
    for foreign in [
        "http://evil.example",
        "https://evil.example:8443",
        "http://localhost.evil.example",
        "null",
        "https://app.example.com:8443",
    ] {
        let r = open_session(&server.addr, &[("Origin", foreign.to_owned())]);
        assert_eq!(r.status, 403, "{foreign}: {}", r.body);
        assert!(r.body.contains("--allowed-origin"), "{}", r.body);
        assert!(r.header("mcp-session-id").is_none());
    }
    // No Origin (a non-browser client), loopback pages, and the origin allowed by flag.
    assert_eq!(open_session(&server.addr, &[]).status, 200);
    for ok in [
        "http://localhost:5173",
        "http://127.0.0.1:3000",
        "http://[::1]:8080",
        "https://app.example.com",
    ] {
        assert_eq!(with(ok), 200, "{ok}");
    }
    assert!(server.stop().success());
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let (server, _dir) = http_server("tr_bearer", "127.0.0.1:0", &[]).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = request(
            &server.addr,
            "POST",
            &[("Authorization", format!("{scheme} {TOKEN}"))],
            &initialize("raw"),
        );
        assert_eq!(r.status, 200, "{scheme}: {}", r.body);
    }
    for wrong in [
        format!("Basic {TOKEN}"),
        format!("bearer {TOKEN}x"),
        TOKEN.to_owned(),
    ] {
        let r = request(
            &server.addr,
            "POST",
            &[("Authorization", wrong.clone())],
            &initialize("raw"),
        );
        assert_eq!(r.status, 401, "{wrong}");
    }
    assert!(server.stop().success());
}

#[tokio::test]
async fn connections_that_never_finish_their_headers_are_closed() {
    let (server, _dir) = http_server("tr_slow", "127.0.0.1:0", &["--header-timeout", "2"]).await;
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let started = Instant::now();
    // A request line and one header, then nothing: the headers never end.
    stream
        .write_all(format!("POST /mcp HTTP/1.1\r\nHost: {}\r\n", server.addr).as_bytes())
        .expect("write");
    let mut buf = [0u8; 1024];
    let outcome = stream.read(&mut buf);
    let waited = started.elapsed();
    match outcome {
        // Closed (possibly after a 408 the server may write first).
        Ok(n) => assert!(
            n == 0 || String::from_utf8_lossy(&buf[..n]).contains(" 408 "),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "the server did not close the connection: {e}"
        ),
    }
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
        "closed after {waited:?}"
    );
    // The server is fine and still serving.
    assert_eq!(open_session(&server.addr, &[]).status, 200);
    assert!(server.stop().success());
}

#[tokio::test]
async fn sessions_beyond_the_limit_are_refused() {
    let (server, _dir) = http_server("tr_sessions", "127.0.0.1:0", &["--max-sessions", "2"]).await;
    let first = open_session(&server.addr, &[]);
    assert_eq!(first.status, 200, "{}", first.body);
    let second = open_session(&server.addr, &[]);
    assert_eq!(second.status, 200);
    let third = open_session(&server.addr, &[]);
    assert_eq!(third.status, 503, "{}", third.body);
    let error = third.message();
    assert_eq!(error["id"], 1, "{error}");
    let message = error["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("too many MCP sessions") && message.contains("--max-sessions"),
        "{message}"
    );
    // Requests of open sessions still work, and closing one makes room.
    let session = first.header("mcp-session-id").expect("session id");
    let reply = call_in_session(&server.addr, &session, "list_plans", json!({}));
    assert!(
        reply["result"]["structuredContent"]["plans"].is_array(),
        "{reply}"
    );
    let closed = request(
        &server.addr,
        "DELETE",
        &[bearer(), ("Mcp-Session-Id", session)],
        "",
    );
    assert!(closed.status < 300, "{}: {}", closed.status, closed.body);
    assert_eq!(open_session(&server.addr, &[]).status, 200);
    assert!(server.stop().success());
}

#[tokio::test]
async fn another_loopback_address_works() {
    let (server, _dir) = http_server("tr_loopback", "127.0.0.2:0", &[]).await;
    assert!(server.addr.starts_with("127.0.0.2:"), "{}", server.addr);
    let opened = open_session(&server.addr, &[]);
    assert_eq!(opened.status, 200, "{}", opened.body);
    let session = opened.header("mcp-session-id").expect("session id");
    let reply = call_in_session(&server.addr, &session, "introspect_catalog", json!({}));
    let hash = &reply["result"]["structuredContent"]["catalog_hash"];
    assert!(
        hash.as_str().unwrap_or("").starts_with("sha3-256:"),
        "{reply}"
    );
    assert!(server.stop().success());
}

#[tokio::test]
async fn stateless_requests_record_the_client_name() {
    let (url, shadow) = database("tr_stateless").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let mut args = serve_args(&ledger, &url, &shadow);
    args.extend([
        "--token-file".to_owned(),
        token_file.display().to_string(),
        "--stateless".to_owned(),
    ]);
    let server = Server::start(&args);
    // 2026-07-28: no initialize, no session; the client introduces itself in every request.
    let call = |id: u64, tool: &str| {
        let body = json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": {}, "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "stateless-agent", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {}
            }}
        });
        let r = request(
            &server.addr,
            "POST",
            &[
                bearer(),
                ("MCP-Protocol-Version", "2026-07-28".to_owned()),
                ("Mcp-Method", "tools/call".to_owned()),
                ("Mcp-Name", tool.to_owned()),
            ],
            &body.to_string(),
        );
        assert_eq!(r.status, 200, "{tool}: {}", r.body);
        assert!(r.header("mcp-session-id").is_none());
        r.message()
    };
    let introspected = call(1, "introspect_catalog");
    assert!(
        introspected["result"]["structuredContent"]["seq"].is_u64(),
        "{introspected}"
    );
    // A context cannot outlive a stateless request: refused, saying why and what instead.
    let context = call(2, "set_context");
    assert_eq!(context["result"]["isError"], true, "{context}");
    assert_eq!(
        context["result"]["structuredContent"]["error"]["code"],
        "needs_session"
    );
    assert!(server.stop().success());

    let records = audit_log(&ledger);
    let actors: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "CatalogIntrospected")
        .filter_map(|r| r["actor"].as_str())
        // The runtime's own introspection when it attached the database.
        .filter(|a| *a != "lockplane-attach")
        .collect();
    assert_eq!(actors, ["agent:e2e/stateless-agent"], "{records:?}");
}

/// A `lockplane serve --stdio` child driven with raw lines.
struct StdioServer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl StdioServer {
    async fn start(prefix: &str, extra: &[&str]) -> (StdioServer, tempfile::TempDir) {
        let (url, shadow) = database(prefix).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(BIN)
            .args(serve_args(&dir.path().join("ledger"), &url, &shadow))
            .arg("--stdio")
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn lockplane serve --stdio");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        (
            StdioServer {
                child,
                stdin,
                lines,
            },
            dir,
        )
    }

    fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).expect("write");
        stdin.write_all(b"\n").expect("write");
        stdin.flush().expect("flush");
    }

    fn send_json(&mut self, message: Value) {
        self.send(message.to_string().as_bytes());
    }

    /// The next line the server writes, as JSON, with its length.
    fn next(&self) -> (Value, usize) {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a reply from the server");
        let value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:.200}"));
        (value, line.len())
    }

    fn handshake(&mut self) {
        self.send(initialize("raw-stdio").as_bytes());
        let (reply, _) = self.next();
        assert_eq!(reply["id"], 1, "{reply}");
        assert!(reply["result"]["protocolVersion"].is_string(), "{reply}");
        self.send_json(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    }

    fn call(&mut self, id: u64, tool: &str, arguments: Value) -> (Value, usize) {
        self.send_json(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                              "params": {"name": tool, "arguments": arguments}}));
        self.next()
    }

    fn close(mut self) {
        drop(self.stdin.take());
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "{status:?}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("lockplane serve --stdio did not exit when its input closed");
    }
}

impl Drop for StdioServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A parse error as JSON-RPC wants it: code -32700, no id (none could be read).
fn assert_parse_error(reply: &Value, says: &str) {
    assert_eq!(reply["error"]["code"], -32700, "{reply}");
    assert!(
        reply.get("id").is_none() || reply["id"].is_null(),
        "{reply}"
    );
    let message = reply["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains(says), "{message}");
}

#[tokio::test]
async fn stdio_answers_lines_that_are_not_messages() {
    let (mut server, _dir) = StdioServer::start("tr_stdio", &[]).await;
    server.handshake();

    server.send(b"this is not JSON");
    assert_parse_error(&server.next().0, "not JSON");
    server.send(b"{\"jsonrpc\": \"2.0\", \"id\": 5, \"method\": \"ping\", \xff\xfe}");
    assert_parse_error(&server.next().0, "UTF-8");
    // Longer than 16 MiB, written while the server reads (it never buffers past the limit).
    let mut stdin = server.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..17 {
            stdin.write_all(&chunk).expect("write");
        }
        stdin.write_all(b"\n").expect("write");
        stdin
    });
    let (reply, _) = server.next();
    assert_parse_error(&reply, "longer than 16777216 bytes");
    server.stdin = Some(writer.join().expect("writer"));
    // Valid JSON that is no message: Invalid Request, with its id.
    server.send_json(json!({"jsonrpc": "2.0", "id": 9, "nothing": true}));
    let (reply, _) = server.next();
    assert_eq!(reply["error"]["code"], -32600, "{reply}");
    assert_eq!(reply["id"], 9, "{reply}");

    // The session goes on.
    let (reply, _) = server.call(10, "list_plans", json!({}));
    assert_eq!(reply["id"], 10, "{reply}");
    assert!(
        reply["result"]["structuredContent"]["plans"].is_array(),
        "{reply}"
    );
    server.close();
}

#[tokio::test]
async fn answers_over_the_cap_are_cut_with_a_note() {
    let cap = 65_536;
    let (mut server, _dir) =
        StdioServer::start("tr_cap", &["--max-result-bytes", &cap.to_string()]).await;
    server.handshake();
    // Agent SQL runs under the allowed role (the server has an allow-list).
    let (reply, _) = server.call(20, "set_context", json!({"role": common::ROLE}));
    assert_eq!(reply["result"]["isError"], false, "{reply}");
    // Small answers pass whole.
    let (reply, _) = server.call(2, "apply_sql", json!({"sql": "SELECT 1 AS one"}));
    assert_eq!(
        reply["result"]["structuredContent"]["result"],
        json!([["1"]]),
        "{reply}"
    );
    // 200 rows of 1000 bytes: 400 KB as structured content and text.
    let (reply, size) = server.call(
        3,
        "apply_sql",
        json!({"sql": "SELECT repeat('x', 1000) AS x FROM generate_series(1, 200)"}),
    );
    assert!(size < cap + 1024, "the answer is {size} bytes");
    let result = &reply["result"];
    assert_eq!(result["isError"], true, "{reply:.500}");
    let error = &result["structuredContent"]["error"];
    assert_eq!(error["code"], "result_too_large");
    let message = error["message"].as_str().unwrap_or("");
    assert!(
        message.contains(&format!("cap of {cap} bytes")) && message.contains("do not run it again"),
        "{message}"
    );
    assert_eq!(error["partial"]["rows"], 200, "{error}");
    assert!(error["partial"]["seq"].is_u64(), "{error}");
    assert!(error["next"].as_str().unwrap_or("").contains("LIMIT"));
    let texts: Vec<&str> = result["content"]
        .as_array()
        .expect("content")
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("bytes of the answer (cut)")),
        "{texts:?}"
    );
    server.close();
}

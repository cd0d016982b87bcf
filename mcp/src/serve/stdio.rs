//! The stdio transport: newline-delimited JSON-RPC on standard input/output, like rmcp's
//! `AsyncRwTransport`, except that a line that cannot be a message is answered instead of
//! dropped.
//!
//! JSON-RPC 2.0 asks for an error response to input that does not parse (`-32700`) and to
//! JSON that is not a valid request (`-32600`); rmcp ignores unparsable lines, so a client
//! whose request was mangled waits for an answer that never comes. Here a non-UTF-8 line, a
//! line that is not JSON and a line longer than [`MAX_LINE_BYTES`] (never buffered past the
//! limit) each get a parse error without an `id` (MCP 2026-07-28 and the TypeScript SDK omit
//! the `id` an error cannot name), and the session goes on. Valid JSON that is no message gets
//! Invalid Request, with its `id` when it has a usable one; a notification that is not ours is
//! ignored, as notifications are never answered.

use std::sync::Arc;

use rmcp::model::{ErrorData, RequestId};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::RoleServer;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

/// The longest line read (one message): rmcp's own default, 16 MiB.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Newline-delimited JSON-RPC over a reader and a writer (standard input and output).
pub struct LineTransport<R, W> {
    read: BufReader<R>,
    /// The line read so far; kept across cancelled `receive` calls.
    line: Vec<u8>,
    /// Skipping the rest of a line already answered as too long.
    discarding: bool,
    max_line: usize,
    write: Arc<Mutex<Option<W>>>,
}

/// One bounded line read.
enum LineRead {
    Line,
    TooLong,
    Eof,
}

impl<R, W> LineTransport<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// A transport over `read` and `write` with the default line limit.
    pub fn new(read: R, write: W) -> Self {
        LineTransport {
            read: BufReader::new(read),
            line: Vec::new(),
            discarding: false,
            max_line: MAX_LINE_BYTES,
            write: Arc::new(Mutex::new(Some(write))),
        }
    }

    /// Reads one `\n`-terminated line into `self.line`, never holding more than `max_line`
    /// bytes. Cancel-safe: bytes are moved from the reader's buffer into `self.line` (or
    /// skipped) with no await in between, and `self.line`/`self.discarding` persist.
    async fn read_line(&mut self) -> std::io::Result<LineRead> {
        loop {
            let available = self.read.fill_buf().await?;
            if available.is_empty() {
                return Ok(LineRead::Eof);
            }
            let newline = available.iter().position(|b| *b == b'\n');
            let take = newline.map_or(available.len(), |i| i + 1);
            let outcome = if self.discarding {
                if newline.is_some() {
                    self.discarding = false;
                }
                None
            } else if self.line.len() + take > self.max_line {
                self.line.clear();
                self.discarding = newline.is_none();
                Some(LineRead::TooLong)
            } else {
                self.line.extend_from_slice(&available[..take]);
                newline.map(|_| LineRead::Line)
            };
            self.read.consume(take);
            if let Some(outcome) = outcome {
                return Ok(outcome);
            }
        }
    }

    /// Answers a line that carried no message, without blocking the reader: the reply is
    /// written by its own task, under the same lock as every other message.
    fn reply(&self, error: ErrorData, id: Option<RequestId>) {
        let message = TxJsonRpcMessage::<RoleServer>::error(error, id);
        let write = self.write.clone();
        tokio::spawn(async move {
            let _ = write_message(&write, &message).await;
        });
    }

    /// What a whole line holds: a message to hand on, or `None` after answering it.
    fn parse(&self, line: &[u8]) -> Option<RxJsonRpcMessage<RoleServer>> {
        let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        let Ok(text) = std::str::from_utf8(line) else {
            self.reply(
                ErrorData::parse_error("Parse error: the line is not valid UTF-8", None),
                None,
            );
            return None;
        };
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(e) => {
                self.reply(
                    ErrorData::parse_error(format!("Parse error: the line is not JSON: {e}"), None),
                    None,
                );
                return None;
            }
        };
        let is_notification = value.get("method").is_some() && value.get("id").is_none();
        let id = value
            .get("id")
            .and_then(|id| serde_json::from_value::<RequestId>(id.clone()).ok());
        match serde_json::from_value::<RxJsonRpcMessage<RoleServer>>(value) {
            Ok(message) => Some(message),
            // Notifications are never answered; unknown ones (another protocol's) are ignored.
            Err(_) if is_notification => None,
            Err(e) => {
                self.reply(
                    ErrorData::invalid_request(
                        format!("Invalid Request: not a JSON-RPC message this server takes: {e}"),
                        None,
                    ),
                    id,
                );
                None
            }
        }
    }
}

/// One message and its newline, written and flushed under the lock.
async fn write_message<W: AsyncWrite + Unpin>(
    write: &Mutex<Option<W>>,
    message: &TxJsonRpcMessage<RoleServer>,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(message)?;
    bytes.push(b'\n');
    let mut guard = write.lock().await;
    let Some(writer) = guard.as_mut() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            "the transport is closed",
        ));
    };
    writer.write_all(&bytes).await?;
    writer.flush().await
}

impl<R, W> Transport<RoleServer> for LineTransport<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send + 'static {
        let write = self.write.clone();
        async move { write_message(&write, &item).await }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            match self.read_line().await {
                Ok(LineRead::Line) => {}
                Ok(LineRead::TooLong) => {
                    self.reply(
                        ErrorData::parse_error(
                            format!(
                                "Parse error: the line is longer than {} bytes, the most this \
                                 server reads as one message",
                                self.max_line
                            ),
                            None,
                        ),
                        None,
                    );
                    continue;
                }
                Ok(LineRead::Eof) => return None,
                Err(e) => {
                    eprintln!("lockplane: reading standard input: {e}");
                    return None;
                }
            }
            let line = std::mem::take(&mut self.line);
            let trimmed = line.strip_suffix(b"\n").unwrap_or(&line);
            let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
            let parsed = if trimmed.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                self.parse(trimmed)
            };
            // Keep the buffer's capacity for the next line.
            self.line = line;
            self.line.clear();
            if let Some(message) = parsed {
                return Some(message);
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        let mut guard = self.write.lock().await;
        if let Some(mut writer) = guard.take() {
            writer.shutdown().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Feeds `input` to a transport and returns what it received and what it answered.
    async fn run(input: Vec<u8>, max_line: usize) -> (usize, Vec<Value>) {
        let (mut client, server_in) = tokio::io::duplex(1 << 16);
        let (server_out, mut replies) = tokio::io::duplex(1 << 16);
        let mut transport = LineTransport::new(server_in, server_out);
        transport.max_line = max_line;
        client.write_all(&input).await.unwrap();
        drop(client);
        let mut received = 0;
        while transport.receive().await.is_some() {
            received += 1;
        }
        // Let the reply tasks finish, then close the writer.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        transport.close().await.unwrap();
        let mut out = String::new();
        replies.read_to_string(&mut out).await.unwrap();
        let answers = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (received, answers)
    }

    #[tokio::test]
    async fn bad_lines_are_answered_and_good_ones_pass() {
        let ping = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        let mut input = Vec::new();
        input.extend_from_slice(b"not json\n");
        input.extend_from_slice(b"\xff\xfe{}\n");
        input.extend_from_slice(&[b'x'; 300]);
        input.push(b'\n');
        input.extend_from_slice(br#"{"jsonrpc":"2.0","id":7,"nothing":true}"#);
        input.push(b'\n');
        // A notification that is no message (a number for a method): never answered.
        input.extend_from_slice(br#"{"jsonrpc":"2.0","method":5}"#);
        input.push(b'\n');
        input.extend_from_slice(b"\r\n");
        input.extend_from_slice(ping);
        input.push(b'\n');
        let (received, answers) = run(input, 200).await;
        assert_eq!(received, 1);
        let codes: Vec<i64> = answers
            .iter()
            .map(|a| a["error"]["code"].as_i64().unwrap())
            .collect();
        let mut sorted = codes.clone();
        sorted.sort();
        assert_eq!(sorted, vec![-32700, -32700, -32700, -32600], "{answers:?}");
        let invalid = answers
            .iter()
            .find(|a| a["error"]["code"] == -32600)
            .unwrap();
        assert_eq!(invalid["id"], 7);
        assert!(answers
            .iter()
            .any(|a| a["error"]["message"].as_str().unwrap().contains("UTF-8")));
        assert!(answers.iter().any(|a| a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("longer than 200")));
    }
}

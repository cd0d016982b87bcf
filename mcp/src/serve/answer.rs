//! What every `tools/call` answers, whatever the tool: arguments that do not fit the input
//! schema as a tool error with a code, and an answer no larger than the server's cap.
//!
//! rmcp turns a `Parameters<T>` that fails to deserialise into a tool result with `isError:
//! true` and the serde message as its only text; [`finish`] gives it the `{"error": {code:
//! "invalid_arguments", …}}` every other tool error has. Common MCP clients read a message of at
//! most 10 MiB (a line on stdio, an event over HTTP); an answer over the cap becomes a
//! `result_too_large` error that says so, keeps the answer's small top-level fields (so an agent
//! still learns the plan id or the seq of what ran) and shows the answer's beginning.

use std::borrow::Cow;

use rmcp::model::{CallToolResponse, CallToolResult, ContentBlock};
use serde_json::{Map, Value};

use super::tools::ToolError;

/// The default cap on one tool answer (the serialised `CallToolResult`): well under the 10 MiB
/// message size common clients accept, with room for the JSON-RPC envelope.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 4 * 1024 * 1024;
/// The smallest cap `--max-result-bytes` accepts: room for an error and its preview.
pub const MIN_MAX_RESULT_BYTES: usize = 16 * 1024;

/// The prefix rmcp gives a `Parameters<T>` deserialisation failure.
const ARGUMENT_ERROR_PREFIX: &str = "failed to deserialize parameters:";

/// Strings longer than this are left out of a `result_too_large` error's `partial`.
const PARTIAL_STRING_MAX: usize = 512;

/// Gives argument errors their code and bounds the answer's size.
pub fn finish(
    tool: &str,
    response: Result<CallToolResponse, rmcp::ErrorData>,
    max_bytes: usize,
) -> Result<CallToolResponse, rmcp::ErrorData> {
    let result = match response? {
        CallToolResponse::Complete(result) => result,
        other => return Ok(other),
    };
    let result = if result.is_error == Some(true) && result.structured_content.is_none() {
        argument_error(tool, &result).into_result()
    } else {
        result
    };
    Ok(bounded(tool, result, max_bytes).into())
}

/// The text of a result's text blocks.
fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A tool error rmcp made without structured content: the arguments did not deserialise.
fn argument_error(tool: &str, result: &CallToolResult) -> ToolError {
    let text = text_of(result);
    let (code, detail) = match text.strip_prefix(ARGUMENT_ERROR_PREFIX) {
        Some(detail) => ("invalid_arguments", detail.trim().to_owned()),
        None => ("internal", text.trim().to_owned()),
    };
    let mut error = if code == "invalid_arguments" {
        ToolError::new(
            code,
            format!("the arguments of {tool} do not fit its input schema: {detail}"),
        )
    } else {
        ToolError::new(code, detail)
    };
    if code == "invalid_arguments" {
        error.next = Some(Cow::Owned(format!(
            "call {tool} again with arguments that match its inputSchema (tools/list shows it)"
        )));
    }
    error
}

/// `result` when its serialised size is within `max_bytes`, else a `result_too_large` error.
fn bounded(tool: &str, result: CallToolResult, max_bytes: usize) -> CallToolResult {
    let size = match serde_json::to_vec(&result) {
        Ok(bytes) => bytes.len(),
        Err(_) => return result,
    };
    if size <= max_bytes {
        return result;
    }
    let was_error = result.is_error == Some(true);
    let mut error = ToolError::new(
        "result_too_large",
        format!(
            "the answer of {tool} is {size} bytes, more than this server's cap of {max_bytes} \
             bytes (lockplane serve --max-result-bytes), so it was cut: {}",
            if was_error {
                "the tool failed, and its error message was too long to send".to_owned()
            } else {
                format!(
                    "{} `partial` holds its small fields and the text below shows its beginning",
                    done(tool)
                )
            }
        ),
    );
    error.next = Some(Cow::Borrowed(narrower(tool)));
    if !was_error {
        error.partial = result
            .structured_content
            .as_ref()
            .map(|v| Box::new(small_fields(v)));
    }
    let mut cut = error.into_result();
    // The beginning of what would have been sent, cut at a character boundary.
    let preview_max = (max_bytes / 4).min(256 * 1024);
    let text = match &result.structured_content {
        Some(value) => value.to_string(),
        None => text_of(&result),
    };
    let mut end = preview_max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    cut.content.push(ContentBlock::text(format!(
        "The first {end} of {} bytes of the answer (cut):\n{}",
        text.len(),
        &text[..end]
    )));
    cut
}

/// What already happened when the answer of `tool` is too large to send.
fn done(tool: &str) -> &'static str {
    match tool {
        "apply_sql" => "the statement ran and is recorded in the ledger (do not run it again);",
        "apply_plan" => "the plan was applied and is recorded in the ledger;",
        "diff_catalog" | "merge_plans" => {
            "the plan was proposed and recorded (its plan_id is in `partial`);"
        }
        "introspect_catalog" => "the introspection is recorded in the ledger;",
        _ => "the call completed;",
    }
}

/// How to ask `tool` for a smaller answer.
fn narrower(tool: &str) -> &'static str {
    match tool {
        "apply_sql" => {
            "to read the rows, run a SELECT that returns fewer rows or narrower columns (LIMIT, \
             OFFSET, fewer or shortened columns)"
        }
        "audit_log" => "call audit_log with a smaller limit",
        "explain_sql" => "call explain_sql without analyze, or on a smaller statement",
        "list_plans" => {
            "call audit_log with a small limit for the latest proposals, or apply_plan with a \
             plan_id you know"
        }
        "diff_catalog" | "merge_plans" | "apply_plan" => {
            "call list_plans or audit_log for where the plan stands; propose smaller changes \
             (fewer schemas per document) for plans you can read whole"
        }
        _ => {
            "ask the operator to raise lockplane serve --max-result-bytes (clients must then \
             accept larger messages)"
        }
    }
}

/// The top-level fields of `value` that are small: numbers, booleans, nulls and short strings.
fn small_fields(value: &Value) -> Value {
    let Value::Object(object) = value else {
        return Value::Object(Map::new());
    };
    Value::Object(
        object
            .iter()
            .filter(|(_, v)| match v {
                Value::String(s) => s.len() <= PARTIAL_STRING_MAX,
                Value::Number(_) | Value::Bool(_) | Value::Null => true,
                _ => false,
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn argument_errors_get_a_code() {
        let rmcp = CallToolResult::error(vec![ContentBlock::text(
            "failed to deserialize parameters: missing field `sql`",
        )]);
        let Ok(CallToolResponse::Complete(r)) = finish("apply_sql", Ok(rmcp.into()), 1 << 20)
        else {
            panic!("a complete result");
        };
        let error = &r.structured_content.expect("structured")["error"];
        assert_eq!(error["code"], "invalid_arguments");
        assert!(error["message"]
            .as_str()
            .unwrap()
            .contains("missing field `sql`"));
        assert!(error["next"].as_str().unwrap().contains("apply_sql"));
        assert_eq!(r.is_error, Some(true));
    }

    #[test]
    fn large_answers_are_cut_with_their_small_fields() {
        let big = "x".repeat(100_000);
        let ok = CallToolResult::structured(json!({
            "seq": 7, "resulting_hash": "sha3-256:ab", "result": [[big]]
        }));
        let Ok(CallToolResponse::Complete(r)) = finish("apply_sql", Ok(ok.into()), 32 * 1024)
        else {
            panic!("a complete result");
        };
        assert_eq!(r.is_error, Some(true));
        let size = serde_json::to_vec(&r).unwrap().len();
        assert!(size < 32 * 1024, "{size}");
        let error = &r.structured_content.expect("structured")["error"];
        assert_eq!(error["code"], "result_too_large");
        assert_eq!(
            error["partial"],
            json!({"seq": 7, "resulting_hash": "sha3-256:ab"})
        );
        assert!(error["message"]
            .as_str()
            .unwrap()
            .contains("do not run it again"));
        let texts: Vec<_> = r.content.iter().filter_map(|c| c.as_text()).collect();
        assert!(texts[1].text.contains("\"seq\":7") || texts[1].text.contains("xxxx"));
    }
}

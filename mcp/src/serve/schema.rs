//! The tools' JSON Schemas as clients receive them: portable JSON Schema 2020-12, and output
//! schemas that admit the error shape.
//!
//! schemars writes what Rust knows: `format: "uint64"` (no JSON Schema format), `type: ["string",
//! "null"]` for an `Option` (legal, but clients that map schemas onto a single-`type` dialect
//! reject it). [`portable`] rewrites those to standard spellings (`integer` + `minimum: 0`;
//! `anyOf` branches of one type each).
//!
//! A tool error is a result too (`isError: true`) and carries `{"error": {code, message, next,
//! confirmation}}` as structured content. The TypeScript SDK (and so the Inspector) validates any
//! structured content against the tool's output schema, error or not, and turns a mismatch into
//! a protocol error that hides the tool error. [`with_error`] makes every output schema a
//! `oneOf` of the tool's result and the error object, so both validate.

use serde_json::{json, Map, Value};

/// The formats JSON Schema 2020-12 defines; any other `format` is dropped.
const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// Keywords that only apply to instances of one type: they go into that type's `anyOf` branch
/// when a `type` array is split.
fn keyword_type(keyword: &str) -> Option<&'static str> {
    Some(match keyword {
        "properties"
        | "additionalProperties"
        | "required"
        | "patternProperties"
        | "propertyNames"
        | "minProperties"
        | "maxProperties"
        | "dependentRequired"
        | "dependentSchemas"
        | "unevaluatedProperties" => "object",
        "items" | "prefixItems" | "minItems" | "maxItems" | "uniqueItems" | "contains"
        | "minContains" | "maxContains" | "unevaluatedItems" => "array",
        "minLength" | "maxLength" | "pattern" | "format" | "contentEncoding"
        | "contentMediaType" => "string",
        "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" | "multipleOf" => "number",
        _ => return None,
    })
}

/// Whether `keyword` (of type `of`) belongs in the branch of `branch_type`.
fn belongs(of: &str, branch_type: &str) -> bool {
    of == branch_type || (of == "number" && branch_type == "integer")
}

/// Rewrites a schema (and every schema inside it) to portable JSON Schema: standard formats
/// only (unsigned integer formats become `minimum: 0`), and `type` arrays split into `anyOf`.
pub fn portable(schema: &mut Value) {
    let Value::Object(node) = schema else {
        return;
    };
    if let Some(Value::String(format)) = node.get("format") {
        if !STANDARD_FORMATS.contains(&format.as_str()) {
            let unsigned = format.starts_with("uint");
            node.remove("format");
            if unsigned && !node.contains_key("minimum") {
                node.insert("minimum".into(), json!(0));
            }
        }
    }
    if let Some(Value::Array(types)) = node.get("type").cloned() {
        split_type_union(node, &types);
    }
    for key in ["properties", "$defs", "definitions", "patternProperties"] {
        if let Some(Value::Object(map)) = node.get_mut(key) {
            map.values_mut().for_each(portable);
        }
    }
    for key in ["anyOf", "oneOf", "allOf", "prefixItems"] {
        if let Some(Value::Array(list)) = node.get_mut(key) {
            list.iter_mut().for_each(portable);
        }
    }
    for key in [
        "items",
        "additionalProperties",
        "not",
        "if",
        "then",
        "else",
        "contains",
    ] {
        if let Some(sub) = node.get_mut(key) {
            portable(sub);
        }
    }
}

/// `{"type": ["string", "null"], "format": …, "description": …}` → `{"anyOf": [{"type":
/// "string", "format": …}, {"type": "null"}], "description": …}`.
fn split_type_union(node: &mut Map<String, Value>, types: &[Value]) {
    let names: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
    if names.len() != types.len() {
        return;
    }
    if names.len() == 1 {
        node.insert("type".into(), json!(names[0]));
        return;
    }
    node.remove("type");
    let typed: Vec<(String, Value, &'static str)> = node
        .iter()
        .filter_map(|(k, v)| keyword_type(k).map(|t| (k.clone(), v.clone(), t)))
        .collect();
    for (key, _, _) in &typed {
        node.remove(key);
    }
    let branches: Vec<Value> = names
        .iter()
        .map(|name| {
            let mut branch = Map::new();
            branch.insert("type".into(), json!(name));
            for (key, value, of) in &typed {
                if belongs(of, name) {
                    branch.insert(key.clone(), value.clone());
                }
            }
            Value::Object(branch)
        })
        .collect();
    match node.remove("anyOf") {
        // Both a type union and an anyOf: the value must satisfy both.
        Some(existing) => {
            node.insert(
                "allOf".into(),
                json!([{ "anyOf": branches }, { "anyOf": existing }]),
            );
        }
        None => {
            node.insert("anyOf".into(), Value::Array(branches));
        }
    }
}

/// The schema of the error object every tool may return as structured content.
pub fn error_schema() -> Value {
    json!({
        "type": "object",
        "title": "error",
        "description": "A tool error (the result has isError: true).",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {
                        "type": "string",
                        "description": "Stable machine-readable kind: needs_confirmation, \
                                        wrong_confirmation, stale_plan, sql_refused, \
                                        invalid_arguments, result_too_large, …"
                    },
                    "message": {
                        "type": "string",
                        "description": "What went wrong and what to do about it."
                    },
                    "next": {
                        "type": "string",
                        "description": "The next step, naming the tool to call."
                    },
                    "confirmation": {
                        "type": "string",
                        "description": "What to pass as `confirm` once the agent decides to \
                                        go ahead (a plan id, or the confirmation id bound to an \
                                        exact SQL text)."
                    },
                    "partial": {
                        "type": "object",
                        "additionalProperties": true,
                        "description": "With result_too_large: the answer's small top-level \
                                        fields (ids, hashes, seq, counts); the operation itself \
                                        completed."
                    }
                },
                "required": ["code", "message"]
            }
        },
        "required": ["error"]
    })
}

/// An output schema that admits the tool's result or the error object: the result's own
/// schema (minus `$schema` and `$defs`, which stay at the root so `#/$defs/…` references still
/// resolve) becomes the first branch of a root `oneOf`, the error object the second. The root
/// keeps `type: "object"`, as MCP requires. A result never has an `error` property and an
/// error has none of the result's required properties, so exactly one branch matches.
pub fn with_error(output: &Value) -> Value {
    let Value::Object(output) = output else {
        return output.clone();
    };
    let mut result = output.clone();
    let mut root = Map::new();
    root.insert("type".into(), json!("object"));
    for key in ["$schema", "$defs"] {
        if let Some(value) = result.remove(key) {
            root.insert(key.into(), value);
        }
    }
    result.entry("title").or_insert(json!("result"));
    root.insert(
        "oneOf".into(),
        json!([Value::Object(result), error_schema()]),
    );
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_type_unions_become_standard() {
        let mut schema = json!({
            "type": "object",
            "properties": {
                "seq": {"type": "integer", "format": "uint64", "minimum": 0},
                "limit": {"type": ["integer", "null"], "format": "uint", "minimum": 0,
                          "default": null, "description": "d"},
                "at": {"type": "integer", "format": "int64"},
                "when": {"type": "string", "format": "date-time"},
                "rows": {"type": "array", "items": {"type": "array",
                         "items": {"type": ["string", "null"]}}},
                "event": {"type": ["object", "null"], "additionalProperties": true}
            },
            "$defs": {"C": {"type": "object", "properties": {
                "role": {"type": ["string", "null"]}}}}
        });
        portable(&mut schema);
        let p = &schema["properties"];
        assert_eq!(p["seq"], json!({"type": "integer", "minimum": 0}));
        assert_eq!(
            p["limit"],
            json!({"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}],
                   "default": null, "description": "d"})
        );
        assert_eq!(p["at"], json!({"type": "integer"}));
        assert_eq!(p["when"]["format"], "date-time");
        assert_eq!(
            p["rows"]["items"]["items"],
            json!({"anyOf": [{"type": "string"}, {"type": "null"}]})
        );
        assert_eq!(
            p["event"],
            json!({"anyOf": [{"type": "object", "additionalProperties": true},
                             {"type": "null"}]})
        );
        assert_eq!(
            schema["$defs"]["C"]["properties"]["role"],
            json!({"anyOf": [{"type": "string"}, {"type": "null"}]})
        );
    }

    #[test]
    fn output_schemas_admit_the_error_object() {
        let out = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {"ok": {"type": "boolean"}, "e": {"$ref": "#/$defs/E"}},
            "required": ["ok"],
            "$defs": {"E": {"type": "string"}}
        });
        let both = with_error(&out);
        assert_eq!(both["type"], "object");
        assert_eq!(both["$defs"]["E"]["type"], "string");
        assert_eq!(both["oneOf"][0]["required"], json!(["ok"]));
        assert!(both["oneOf"][0].get("$defs").is_none());
        assert_eq!(both["oneOf"][1]["required"], json!(["error"]));
    }
}

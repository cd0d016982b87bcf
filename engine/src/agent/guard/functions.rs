//! The function allow-list and the documented deny-list.
//!
//! Names are compared after the guard has resolved qualification: `pg_catalog.lower` is looked
//! up as `lower`, Lockplane's helpers keep their schema (`lockplane.tenant_id`). Postgres folds
//! unquoted identifiers to lower case before the guard sees them, and a quoted name with upper
//! case letters is a different (and here unknown) function, so comparison is exact.
//!
//! Why an allow-list: a deny-list of dangerous functions is only as good as its author's memory
//! and the server version (every release adds functions). Everything not listed here is refused.
//! The deny-list below exists only to give better reasons for the well-known dangerous ones.

use super::AccessMode;

/// Built-in functions any access mode may call: pure computations over their arguments, plus a
/// few read-only facts about the session and the catalog. None reads or writes server files,
/// runs a query string, signals other backends, sleeps, takes locks or changes settings.
pub const FUNCTIONS: &[&str] = &[
    // Aggregates.
    "any_value",
    "array_agg",
    "avg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "corr",
    "count",
    "covar_pop",
    "covar_samp",
    "every",
    "json_agg",
    "json_agg_strict",
    "json_object_agg",
    "json_object_agg_strict",
    "json_object_agg_unique",
    "json_object_agg_unique_strict",
    "jsonb_agg",
    "jsonb_agg_strict",
    "jsonb_object_agg",
    "jsonb_object_agg_strict",
    "jsonb_object_agg_unique",
    "jsonb_object_agg_unique_strict",
    "max",
    "min",
    "mode",
    "percentile_cont",
    "percentile_disc",
    "range_agg",
    "range_intersect_agg",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "sum",
    "var_pop",
    "var_samp",
    "variance",
    "xmlagg",
    // Window functions (rank & co. double as hypothetical-set aggregates).
    "cume_dist",
    "dense_rank",
    "first_value",
    "lag",
    "last_value",
    "lead",
    "nth_value",
    "ntile",
    "percent_rank",
    "rank",
    "row_number",
    // Strings and bytea.
    "ascii",
    "bit_count",
    "bit_length",
    "btrim",
    "casefold",
    "char_length",
    "character_length",
    "chr",
    "concat",
    "concat_ws",
    "convert",
    "convert_from",
    "convert_to",
    "crc32",
    "crc32c",
    "decode",
    "encode",
    "format",
    "get_bit",
    "get_byte",
    "initcap",
    "is_normalized",
    "left",
    "length",
    "like_escape",
    "lower",
    "lpad",
    "ltrim",
    "md5",
    "normalize",
    "octet_length",
    "overlay",
    "position",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "regexp_count",
    "regexp_instr",
    "regexp_like",
    "regexp_match",
    "regexp_matches",
    "regexp_replace",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "regexp_substr",
    "repeat",
    "replace",
    "reverse",
    "right",
    "rpad",
    "rtrim",
    "set_bit",
    "set_byte",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "similar_to_escape",
    "split_part",
    "starts_with",
    "string_to_array",
    "string_to_table",
    "strpos",
    "substr",
    "substring",
    "to_ascii",
    "to_bin",
    "to_hex",
    "to_oct",
    "translate",
    "unistr",
    "upper",
    // Numbers.
    "abs",
    "acos",
    "acosd",
    "acosh",
    "asin",
    "asind",
    "asinh",
    "atan",
    "atan2",
    "atan2d",
    "atand",
    "atanh",
    "cbrt",
    "ceil",
    "ceiling",
    "cos",
    "cosd",
    "cosh",
    "cot",
    "cotd",
    "degrees",
    "div",
    "erf",
    "erfc",
    "exp",
    "factorial",
    "floor",
    "gamma",
    "gcd",
    "lcm",
    "lgamma",
    "ln",
    "log",
    "log10",
    "min_scale",
    "mod",
    "pi",
    "pow",
    "power",
    "radians",
    "random",
    "random_normal",
    "round",
    "scale",
    "sign",
    "sin",
    "sind",
    "sinh",
    "sqrt",
    "tan",
    "tand",
    "tanh",
    "trim_scale",
    "trunc",
    "width_bucket",
    // Formatting.
    "to_char",
    "to_date",
    "to_number",
    "to_timestamp",
    // Date and time.
    "age",
    "clock_timestamp",
    "date_add",
    "date_bin",
    "date_part",
    "date_subtract",
    "date_trunc",
    "extract",
    "isfinite",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "make_date",
    "make_interval",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "now",
    "overlaps",
    "statement_timestamp",
    "timeofday",
    "timezone",
    "transaction_timestamp",
    // Set-returning helpers (bounded by the statement timeout like any query).
    "generate_series",
    "generate_subscripts",
    "unnest",
    // JSON and JSONB.
    "array_to_json",
    "json_array_elements",
    "json_array_elements_text",
    "json_array_length",
    "json_build_array",
    "json_build_object",
    "json_each",
    "json_each_text",
    "json_extract_path",
    "json_extract_path_text",
    "json_object",
    "json_object_keys",
    "json_populate_record",
    "json_populate_recordset",
    "json_strip_nulls",
    "json_to_record",
    "json_to_recordset",
    "json_typeof",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "jsonb_array_length",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_each",
    "jsonb_each_text",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "jsonb_insert",
    "jsonb_object",
    "jsonb_object_keys",
    "jsonb_path_exists",
    "jsonb_path_exists_tz",
    "jsonb_path_match",
    "jsonb_path_match_tz",
    "jsonb_path_query",
    "jsonb_path_query_array",
    "jsonb_path_query_array_tz",
    "jsonb_path_query_first",
    "jsonb_path_query_first_tz",
    "jsonb_path_query_tz",
    "jsonb_populate_record",
    "jsonb_populate_record_valid",
    "jsonb_populate_recordset",
    "jsonb_pretty",
    "jsonb_set",
    "jsonb_set_lax",
    "jsonb_strip_nulls",
    "jsonb_to_record",
    "jsonb_to_recordset",
    "jsonb_typeof",
    "row_to_json",
    "to_json",
    "to_jsonb",
    // Arrays.
    "array_append",
    "array_cat",
    "array_dims",
    "array_fill",
    "array_length",
    "array_lower",
    "array_ndims",
    "array_position",
    "array_positions",
    "array_prepend",
    "array_remove",
    "array_replace",
    "array_reverse",
    "array_sample",
    "array_shuffle",
    "array_sort",
    "array_to_string",
    "array_upper",
    "cardinality",
    "trim_array",
    // Ranges.
    "daterange",
    "int4range",
    "int8range",
    "isempty",
    "lower_inc",
    "lower_inf",
    "numrange",
    "range_merge",
    "tsrange",
    "tstzrange",
    "upper_inc",
    "upper_inf",
    // Full-text search (not ts_stat or ts_rewrite, which take query strings).
    "array_to_tsvector",
    "phraseto_tsquery",
    "plainto_tsquery",
    "setweight",
    "strip",
    "to_tsquery",
    "to_tsvector",
    "ts_headline",
    "ts_rank",
    "ts_rank_cd",
    "tsvector_to_array",
    "websearch_to_tsquery",
    // UUIDs.
    "gen_random_uuid",
    "uuid_extract_timestamp",
    "uuid_extract_version",
    "uuidv4",
    "uuidv7",
    // Comparison helpers (COALESCE, NULLIF, GREATEST and LEAST are syntax, not functions).
    "num_nonnulls",
    "num_nulls",
    // Session and catalog facts, read-only.
    "col_description",
    "current_database",
    "current_schema",
    "current_schemas",
    "current_setting",
    "format_type",
    "has_column_privilege",
    "has_schema_privilege",
    "has_sequence_privilege",
    "has_table_privilege",
    "obj_description",
    "pg_backend_pid",
    "pg_collation_for",
    "pg_column_size",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    "pg_get_constraintdef",
    "pg_get_indexdef",
    "pg_get_serial_sequence",
    "pg_get_viewdef",
    "pg_has_role",
    "pg_indexes_size",
    "pg_relation_size",
    "pg_size_pretty",
    "pg_table_is_visible",
    "pg_table_size",
    "pg_total_relation_size",
    "pg_typeof",
    "row_security_active",
    "system_user",
    "to_regclass",
    "to_regtype",
    "txid_current",
    "txid_current_if_assigned",
    "version",
    // Functions of the trusted extensions CREATE EXTENSION accepts (see `TRUSTED_EXTENSIONS`).
    // pgcrypto:
    "armor",
    "crypt",
    "dearmor",
    "digest",
    "gen_random_bytes",
    "gen_salt",
    "hmac",
    "pgp_sym_decrypt",
    "pgp_sym_encrypt",
    // pg_trgm:
    "show_trgm",
    "similarity",
    "strict_word_similarity",
    "word_similarity",
    // uuid-ossp:
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v3",
    "uuid_generate_v4",
    "uuid_generate_v5",
    "uuid_nil",
    "uuid_ns_dns",
    "uuid_ns_oid",
    "uuid_ns_url",
    "uuid_ns_x500",
    // hstore:
    "akeys",
    "avals",
    "defined",
    "delete",
    "each",
    "exist",
    "hstore",
    "hstore_to_json",
    "hstore_to_jsonb",
    "skeys",
    "slice",
    "svals",
    // fuzzystrmatch and unaccent:
    "difference",
    "dmetaphone",
    "levenshtein",
    "metaphone",
    "soundex",
    "unaccent",
    // Lockplane's context helpers, unqualified (they resolve through the search path).
    "tenant_id",
    "user_id",
];

/// Functions that write (or read session state tied to writes): allowed from data mode on.
/// `nextval` and `setval` advance or reset a sequence, which no read-only transaction may do.
pub const DATA_FUNCTIONS: &[&str] = &["currval", "lastval", "nextval", "setval"];

/// Lockplane's helpers, the only schema-qualified names accepted besides `pg_catalog.*`.
pub const LOCKPLANE_FUNCTIONS: &[&str] = &["lockplane.tenant_id", "lockplane.user_id"];

/// Table sampling methods (`TABLESAMPLE method(...)`) built into Postgres. Others are handler
/// functions from extensions.
pub const TABLESAMPLE_METHODS: &[&str] = &["bernoulli", "system"];

/// Extensions CREATE EXTENSION may install: contrib modules Postgres marks trusted, with no
/// file, network or query-string access.
pub const TRUSTED_EXTENSIONS: &[&str] = &[
    "btree_gin",
    "btree_gist",
    "citext",
    "fuzzystrmatch",
    "hstore",
    "pg_trgm",
    "pgcrypto",
    "unaccent",
    "uuid-ossp",
];

/// Well-known dangerous functions and why: by exact name, or by prefix when the name ends in
/// `*`. They are not on the allow-list anyway; this table only makes the refusal specific.
const DENIED: &[(&str, &str)] = &[
    ("pg_read_file", "reads a file on the database server"),
    ("pg_read_binary_file", "reads a file on the database server"),
    ("pg_ls_*", "lists a directory on the database server"),
    ("pg_stat_file", "inspects a file on the database server"),
    ("pg_file_*", "writes or removes a file on the database server"),
    ("pg_logdir_ls", "lists the server's log directory"),
    ("pg_current_logfile", "reveals the server's log file path"),
    ("lo_*", "moves large objects between the database and server files"),
    ("dblink*", "opens a connection to another database and runs queries there"),
    ("pg_terminate_backend", "kills another session's backend process"),
    ("pg_cancel_backend", "cancels another session's query"),
    ("pg_reload_conf", "reloads the server's configuration"),
    ("pg_rotate_logfile", "rotates the server's log file"),
    ("pg_promote", "promotes a standby server"),
    ("pg_switch_wal", "forces a WAL segment switch"),
    ("pg_create_restore_point", "writes a restore point into the WAL"),
    ("pg_backup_*", "starts or stops a server backup"),
    ("pg_create_*_replication_slot", "creates a replication slot that retains WAL"),
    ("pg_drop_replication_slot", "drops a replication slot"),
    ("pg_logical_*", "emits or reads logical replication data"),
    ("pg_replication_origin_*", "manages replication origins"),
    ("pg_stat_reset*", "resets server statistics"),
    ("pg_notify", "sends a notification to every listening session"),
    (
        "set_config",
        "changes a session setting (including `role`); Lockplane sets the session context itself \
         (set_context, with bound parameters)",
    ),
    ("pg_sleep*", "sleeps, holding a connection and its locks (denial of service)"),
    (
        "pg_advisory_*",
        "takes an advisory lock, which would interfere with the lock Lockplane holds while applying",
    ),
    (
        "pg_try_advisory_*",
        "takes an advisory lock, which would interfere with the lock Lockplane holds while applying",
    ),
    ("query_to_xml*", "runs a query string the guard cannot inspect"),
    ("table_to_xml*", "reads a table named by a string, out of the guard's sight"),
    ("cursor_to_xml*", "reads from a cursor, session state the guard cannot inspect"),
    ("schema_to_xml*", "dumps a whole schema named by a string"),
    ("database_to_xml*", "dumps the whole database"),
    ("ts_stat", "runs a query string the guard cannot inspect"),
    ("ts_rewrite", "can run a query string the guard cannot inspect"),
    ("crosstab*", "runs query strings the guard cannot inspect"),
    ("xpath_table", "runs a query built from strings the guard cannot inspect"),
    ("pg_import_system_collations", "imports collations from the operating system"),
    ("pg_log_backend_memory_contexts", "writes another backend's memory state to the server log"),
];

/// Why `name` (already resolved) is refused, if it is a well-known dangerous function.
pub(super) fn denied(name: &str) -> Option<&'static str> {
    DENIED.iter().find_map(|(pattern, why)| {
        let hit = match pattern.split_once('*') {
            Some((prefix, suffix)) => {
                name.len() >= prefix.len() + suffix.len()
                    && name.starts_with(prefix)
                    && name.ends_with(suffix)
            }
            None => name == *pattern,
        };
        hit.then_some(*why)
    })
}

/// The lowest access mode in which `name` (already resolved) may be called, or `None` when it
/// is not on the allow-list.
pub fn required_mode(name: &str) -> Option<AccessMode> {
    if FUNCTIONS.contains(&name) || LOCKPLANE_FUNCTIONS.contains(&name) {
        Some(AccessMode::ReadOnly)
    } else if DATA_FUNCTIONS.contains(&name) {
        Some(AccessMode::Data)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_function_is_both_allowed_and_denied() {
        for name in FUNCTIONS
            .iter()
            .chain(DATA_FUNCTIONS)
            .chain(LOCKPLANE_FUNCTIONS)
        {
            assert_eq!(denied(name), None, "{name} is on both lists");
        }
    }

    #[test]
    fn lists_have_no_duplicates() {
        let mut all: Vec<&str> = FUNCTIONS.iter().chain(DATA_FUNCTIONS).copied().collect();
        all.sort_unstable();
        let before = all.len();
        all.dedup();
        assert_eq!(before, all.len());
    }

    #[test]
    fn prefix_patterns_match() {
        assert!(denied("dblink_exec").is_some());
        assert!(denied("pg_advisory_xact_lock").is_some());
        assert!(denied("pg_create_logical_replication_slot").is_some());
        assert!(denied("lo_import").is_some());
        assert!(denied("lower").is_none());
        assert!(denied("pg_sleep_for").is_some());
    }
}

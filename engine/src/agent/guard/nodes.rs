//! The allow-list of parse-tree node types, the specific reasons for well-known refused ones,
//! and the types of the parse tree's struct-typed fields.
//!
//! Node type names are those of pg_query's `protobuf::node::Node` variants (pg_query 18), the
//! keys of the JSON form the guard walks (`{"node": {"SelectStmt": {...}}}`).

use super::AccessMode;

/// Query and expression nodes: anything a read-only SELECT (or SHOW) is made of.
const READ_ONLY: &[&str] = &[
    "AArrayExpr",
    "AConst",
    "AExpr",
    "AIndices",
    "AIndirection",
    "AStar",
    "Alias",
    "BitString",
    "BoolExpr",
    "Boolean",
    "BooleanTest",
    "CaseExpr",
    "CaseWhen",
    "CoalesceExpr",
    "CollateClause",
    // Also the column definition list of a function in FROM: `f() AS t(a int)`.
    "ColumnDef",
    "ColumnRef",
    "CommonTableExpr",
    "CtecycleClause",
    "CtesearchClause",
    "Float",
    "FuncCall",
    "GroupingFunc",
    "GroupingSet",
    "Integer",
    "JoinExpr",
    "JsonAggConstructor",
    "JsonArgument",
    "JsonArrayAgg",
    "JsonArrayConstructor",
    "JsonArrayQueryConstructor",
    "JsonBehavior",
    "JsonFormat",
    "JsonFuncExpr",
    "JsonIsPredicate",
    "JsonKeyValue",
    "JsonObjectAgg",
    "JsonObjectConstructor",
    "JsonOutput",
    "JsonParseExpr",
    "JsonReturning",
    "JsonScalarExpr",
    "JsonSerializeExpr",
    "JsonTable",
    "JsonTableColumn",
    "JsonTablePathSpec",
    "JsonValueExpr",
    "List",
    "LockingClause",
    "MinMaxExpr",
    "MultiAssignRef",
    "NamedArgExpr",
    "NullTest",
    "ParamRef",
    "RangeFunction",
    "RangeSubselect",
    "RangeTableFunc",
    "RangeTableFuncCol",
    "RangeTableSample",
    "RangeVar",
    "ResTarget",
    "RowExpr",
    "SelectStmt",
    "SetToDefault",
    "SortBy",
    "SqlvalueFunction",
    "String",
    "SubLink",
    "TypeCast",
    "TypeName",
    "VariableShowStmt",
    "WindowDef",
    "WithClause",
    "XmlExpr",
    "XmlSerialize",
];

/// Data-modifying statements and their clauses.
const DATA: &[&str] = &[
    "DeleteStmt",
    "IndexElem",
    "InferClause",
    "InsertStmt",
    "MergeStmt",
    "MergeSupportFunc",
    "MergeWhenClause",
    "OnConflictClause",
    "ReturningClause",
    "ReturningOption",
    "TruncateStmt",
    "UpdateStmt",
];

/// The DDL Lockplane manages, and the nodes it is made of. Sub-kinds (ALTER TABLE subcommands,
/// object types of DROP/GRANT/COMMENT/RENAME, extensions) are narrowed further by the walker.
const SCHEMA: &[&str] = &[
    "AccessPriv",
    "AlterEnumStmt",
    "AlterPolicyStmt",
    "AlterSeqStmt",
    "AlterTableCmd",
    "AlterTableStmt",
    "AtalterConstraint",
    "CommentStmt",
    "Constraint",
    "CreateEnumStmt",
    "CreateExtensionStmt",
    "CreatePolicyStmt",
    "CreateSchemaStmt",
    "CreateSeqStmt",
    "CreateStmt",
    "DefElem",
    "DropStmt",
    "GrantStmt",
    "IndexStmt",
    "PartitionBoundSpec",
    "PartitionElem",
    "PartitionRangeDatum",
    "PartitionSpec",
    "RenameStmt",
    "RoleSpec",
    "TableLikeClause",
    "ViewStmt",
];

/// The lowest access mode in which a node of type `ty` may appear, or `None` when the type is
/// not on the allow-list.
pub(super) fn required_mode(ty: &str) -> Option<AccessMode> {
    if READ_ONLY.contains(&ty) {
        Some(AccessMode::ReadOnly)
    } else if DATA.contains(&ty) {
        Some(AccessMode::Data)
    } else if SCHEMA.contains(&ty) {
        Some(AccessMode::Schema)
    } else {
        None
    }
}

const ROLES: &str = "role administration (CREATE/ALTER/DROP ROLE, USER or GROUP) is never done \
     through Lockplane; ask a database administrator";
const OWNERSHIP: &str = "ownership changes (… OWNER TO, REASSIGN OWNED) hand an object, and the \
     right to alter or drop it, to another role; Lockplane's migrator role owns what it manages";
const FUNCTION_BODIES: &str = "function and procedure definitions are refused in v1: their bodies \
     are opaque strings, possibly in untrusted languages, that the guard cannot inspect; \
     Lockplane installs its own helpers (lockplane.tenant_id(), lockplane.user_id())";
const TRANSACTIONS: &str = "transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, SET \
     CONSTRAINTS …) belongs to Lockplane, which runs each statement in its own transaction with a \
     statement_timeout; send the statements one call at a time";
const MAINTENANCE: &str = "maintenance commands (VACUUM, ANALYZE, CLUSTER, REINDEX) are refused \
     in v1: they run long or take heavy locks, and some cannot run in a transaction; run them from \
     operations tooling";
const REMOTE: &str = "foreign servers, wrappers, user mappings and foreign tables connect the \
     database to outside systems (and user mappings store their credentials)";
const REPLICATION: &str =
    "publications and subscriptions connect the database to other servers through replication";
const SESSION: &str = "session state (cursors, prepared statements, LISTEN, temporary objects) \
     would outlive this call on a connection Lockplane shares; send self-contained statements";
const TABLESPACES: &str = "tablespaces map to directories on the database server";
const DATABASES: &str = "database-level administration is not done through Lockplane";
const CODE_BINDINGS: &str = "casts, operators, aggregates, access methods, operator classes and \
     transforms bind SQL to functions; they are not managed by Lockplane";

/// A specific reason for well-known refused node types; others get the generic
/// "not on the allow-list" refusal.
pub(super) fn refusal(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "DoStmt" | "InlineCodeBlock" => {
            "DO runs an anonymous code block whose body is an opaque string the guard cannot \
             inspect; write the work as plain SQL statements, one per call"
        }
        "AlterSystemStmt" => {
            "ALTER SYSTEM rewrites the server's configuration file; server settings belong to the \
             deployment, not to an agent"
        }
        "LoadStmt" => "LOAD loads a shared library into the server process",
        "CreateRoleStmt" | "AlterRoleStmt" | "AlterRoleSetStmt" | "DropRoleStmt" => ROLES,
        "GrantRoleStmt" => {
            "GRANT/REVOKE of role membership changes who may act as whom; only privileges on \
             tables, sequences, schemas and types may be granted through Lockplane"
        }
        "AlterOwnerStmt" | "ReassignOwnedStmt" => OWNERSHIP,
        "DropOwnedStmt" => "DROP OWNED drops every object a role owns",
        "CreateFunctionStmt" | "AlterFunctionStmt" | "FunctionParameter" => FUNCTION_BODIES,
        "CallStmt" | "CallContext" => "CALL runs a procedure whose body the guard cannot inspect",
        "CreatePlangStmt" => {
            "CREATE LANGUAGE installs a procedural language, possibly an untrusted one that runs \
             arbitrary code on the server"
        }
        "CreateEventTrigStmt" | "AlterEventTrigStmt" => {
            "event triggers run a function on every DDL command of every role"
        }
        "CreateTrigStmt" | "TriggerTransition" => {
            "triggers run a function the guard cannot inspect on every row change; triggers are \
             not managed in v1"
        }
        "RuleStmt" => "rules rewrite queries behind the caller's back; they are not managed",
        "CreateSubscriptionStmt"
        | "AlterSubscriptionStmt"
        | "DropSubscriptionStmt"
        | "CreatePublicationStmt"
        | "AlterPublicationStmt"
        | "PublicationObjSpec"
        | "PublicationTable" => REPLICATION,
        "CreateFdwStmt"
        | "AlterFdwStmt"
        | "CreateForeignServerStmt"
        | "AlterForeignServerStmt"
        | "CreateUserMappingStmt"
        | "AlterUserMappingStmt"
        | "DropUserMappingStmt"
        | "ImportForeignSchemaStmt"
        | "CreateForeignTableStmt" => REMOTE,
        "ListenStmt" | "UnlistenStmt" | "DeclareCursorStmt" | "FetchStmt" | "ClosePortalStmt" => {
            SESSION
        }
        "NotifyStmt" => {
            "NOTIFY sends a message to every listening session; application messaging is not \
             done through Lockplane"
        }
        "PrepareStmt" | "ExecuteStmt" | "DeallocateStmt" => {
            "PREPARE/EXECUTE/DEALLOCATE store and run statements in the session: EXECUTE would \
             run a statement prepared earlier and not checked now; send the statement itself"
        }
        "TransactionStmt" | "ConstraintsSetStmt" => TRANSACTIONS,
        "VacuumStmt" | "VacuumRelation" | "ClusterStmt" | "ReindexStmt" => MAINTENANCE,
        "CheckPointStmt" => "CHECKPOINT is a server-wide operation",
        "DiscardStmt" => {
            "DISCARD resets session state (role, settings, prepared statements) that Lockplane \
             set up"
        }
        "ExplainStmt" => {
            "EXPLAIN is not accepted here: call explain_sql with the bare statement (EXPLAIN \
             ANALYZE would execute it)"
        }
        "CreateTableAsStmt" | "IntoClause" => {
            "CREATE TABLE … AS, SELECT … INTO and CREATE MATERIALIZED VIEW create a table from a \
             query; declare the table with CREATE TABLE and fill it with INSERT … SELECT"
        }
        "RefreshMatViewStmt" => "materialized views are not managed in v1",
        "LockStmt" => {
            "LOCK TABLE is refused: Lockplane manages locks and transactions, and an explicit \
             lock would be released at the end of this statement's transaction anyway"
        }
        "CurrentOfExpr" => "WHERE CURRENT OF needs a cursor, and cursors are refused",
        "CreatedbStmt"
        | "DropdbStmt"
        | "AlterDatabaseStmt"
        | "AlterDatabaseSetStmt"
        | "AlterDatabaseRefreshCollStmt" => DATABASES,
        "CreateTableSpaceStmt"
        | "DropTableSpaceStmt"
        | "AlterTableSpaceOptionsStmt"
        | "AlterTableMoveAllStmt" => TABLESPACES,
        "AlterDefaultPrivilegesStmt" => {
            "ALTER DEFAULT PRIVILEGES silently grants on objects created later; grant explicitly"
        }
        "SecLabelStmt" => "security labels belong to label providers, not to Lockplane",
        "CreateCastStmt"
        | "CreateTransformStmt"
        | "CreateConversionStmt"
        | "CreateAmStmt"
        | "CreateOpClassStmt"
        | "CreateOpClassItem"
        | "CreateOpFamilyStmt"
        | "AlterOpFamilyStmt"
        | "DefineStmt"
        | "AlterOperatorStmt" => CODE_BINDINGS,
        "AlterExtensionStmt" | "AlterExtensionContentsStmt" => {
            "ALTER EXTENSION (updates, adding or removing members) is not managed; extensions are \
             created from the trusted list and dropped"
        }
        "ReturnStmt" | "PlassignStmt" => "PL/pgSQL fragments are not statements Lockplane runs",
        _ => return None,
    })
}

/// A human name for a refused statement node, for messages (`CreateTrigStmt` → `CREATE
/// TRIGGER`); falls back to the node type.
pub(super) fn label(ty: &str) -> &str {
    match ty {
        "DoStmt" => "DO",
        "CopyStmt" => "COPY",
        "AlterSystemStmt" => "ALTER SYSTEM",
        "LoadStmt" => "LOAD",
        "VariableSetStmt" => "SET",
        "CreateRoleStmt" => "CREATE ROLE",
        "AlterRoleStmt" | "AlterRoleSetStmt" => "ALTER ROLE",
        "DropRoleStmt" => "DROP ROLE",
        "GrantRoleStmt" => "GRANT/REVOKE role",
        "AlterOwnerStmt" => "ALTER … OWNER TO",
        "ReassignOwnedStmt" => "REASSIGN OWNED",
        "DropOwnedStmt" => "DROP OWNED",
        "CreateFunctionStmt" => "CREATE FUNCTION/PROCEDURE",
        "AlterFunctionStmt" => "ALTER FUNCTION",
        "CallStmt" => "CALL",
        "CreatePlangStmt" => "CREATE LANGUAGE",
        "CreateEventTrigStmt" => "CREATE EVENT TRIGGER",
        "CreateTrigStmt" => "CREATE TRIGGER",
        "RuleStmt" => "CREATE RULE",
        "CreateSubscriptionStmt" => "CREATE SUBSCRIPTION",
        "CreatePublicationStmt" => "CREATE PUBLICATION",
        "CreateForeignServerStmt" => "CREATE SERVER",
        "CreateFdwStmt" => "CREATE FOREIGN DATA WRAPPER",
        "CreateUserMappingStmt" => "CREATE USER MAPPING",
        "CreateForeignTableStmt" => "CREATE FOREIGN TABLE",
        "ListenStmt" => "LISTEN",
        "UnlistenStmt" => "UNLISTEN",
        "NotifyStmt" => "NOTIFY",
        "PrepareStmt" => "PREPARE",
        "ExecuteStmt" => "EXECUTE",
        "DeallocateStmt" => "DEALLOCATE",
        "TransactionStmt" => "transaction control",
        "ConstraintsSetStmt" => "SET CONSTRAINTS",
        "VacuumStmt" => "VACUUM/ANALYZE",
        "ClusterStmt" => "CLUSTER",
        "ReindexStmt" => "REINDEX",
        "CheckPointStmt" => "CHECKPOINT",
        "DiscardStmt" => "DISCARD",
        "ExplainStmt" => "EXPLAIN",
        "CreateTableAsStmt" => "CREATE TABLE AS",
        "IntoClause" => "SELECT … INTO",
        "LockStmt" => "LOCK",
        "DeclareCursorStmt" => "DECLARE CURSOR",
        "FetchStmt" => "FETCH",
        "CreatedbStmt" => "CREATE DATABASE",
        "DropdbStmt" => "DROP DATABASE",
        "CreateTableSpaceStmt" => "CREATE TABLESPACE",
        "AlterDefaultPrivilegesStmt" => "ALTER DEFAULT PRIVILEGES",
        "CreateDomainStmt" => "CREATE DOMAIN",
        "CompositeTypeStmt" => "CREATE TYPE … AS",
        "CreateRangeStmt" => "CREATE TYPE … AS RANGE",
        "DefineStmt" => "CREATE AGGREGATE/OPERATOR/TYPE",
        "CreateCastStmt" => "CREATE CAST",
        "AlterExtensionStmt" => "ALTER EXTENSION",
        "AlterObjectSchemaStmt" => "ALTER … SET SCHEMA",
        "CreateStatsStmt" => "CREATE STATISTICS",
        "RefreshMatViewStmt" => "REFRESH MATERIALIZED VIEW",
        other => other,
    }
}

/// The node type of a struct-typed field (one that is not a generic `Node`), by parent node
/// type and field name. Generated from pg_query 18.1.0's `protobuf.rs`, named as the `Node`
/// variants are (`CteSearchClause` is the variant `CtesearchClause`). The walker gives these
/// the same allow-list treatment as wrapped nodes; a struct-typed field missing here (a new
/// field of a future grammar) is refused rather than trusted.
pub(super) fn field_type(parent: &str, field: &str) -> Option<&'static str> {
    Some(match (parent, field) {
        ("AlterDatabaseSetStmt", "setstmt") => "VariableSetStmt",
        ("AlterDefaultPrivilegesStmt", "action") => "GrantStmt",
        ("AlterFunctionStmt", "func") => "ObjectWithArgs",
        ("AlterObjectDependsStmt", "extname") => "String",
        ("AlterObjectDependsStmt", "relation") => "RangeVar",
        ("AlterObjectSchemaStmt", "relation") => "RangeVar",
        ("AlterOperatorStmt", "opername") => "ObjectWithArgs",
        ("AlterOwnerStmt", "newowner") => "RoleSpec",
        ("AlterOwnerStmt", "relation") => "RangeVar",
        ("AlterPolicyStmt", "table") => "RangeVar",
        ("AlterRoleSetStmt", "role") => "RoleSpec",
        ("AlterRoleSetStmt", "setstmt") => "VariableSetStmt",
        ("AlterRoleStmt", "role") => "RoleSpec",
        ("AlterSeqStmt", "sequence") => "RangeVar",
        ("AlterSystemStmt", "setstmt") => "VariableSetStmt",
        ("AlterTableCmd", "newowner") => "RoleSpec",
        ("AlterTableStmt", "relation") => "RangeVar",
        ("AlterUserMappingStmt", "user") => "RoleSpec",
        ("CallStmt", "funccall") => "FuncCall",
        ("CallStmt", "funcexpr") => "FuncExpr",
        ("ClusterStmt", "relation") => "RangeVar",
        ("ColumnDef", "coll_clause") => "CollateClause",
        ("ColumnDef", "identity_sequence") => "RangeVar",
        ("ColumnDef", "type_name") => "TypeName",
        ("CommonTableExpr", "cycle_clause") => "CtecycleClause",
        ("CommonTableExpr", "search_clause") => "CtesearchClause",
        ("CompositeTypeStmt", "typevar") => "RangeVar",
        ("Constraint", "pktable") => "RangeVar",
        ("CopyStmt", "relation") => "RangeVar",
        ("CreateCastStmt", "func") => "ObjectWithArgs",
        ("CreateCastStmt", "sourcetype") => "TypeName",
        ("CreateCastStmt", "targettype") => "TypeName",
        ("CreateDomainStmt", "coll_clause") => "CollateClause",
        ("CreateDomainStmt", "type_name") => "TypeName",
        ("CreateForeignTableStmt", "base_stmt") => "CreateStmt",
        ("CreateFunctionStmt", "return_type") => "TypeName",
        ("CreateOpClassItem", "name") => "ObjectWithArgs",
        ("CreateOpClassItem", "storedtype") => "TypeName",
        ("CreateOpClassStmt", "datatype") => "TypeName",
        ("CreatePolicyStmt", "table") => "RangeVar",
        ("CreateSchemaStmt", "authrole") => "RoleSpec",
        ("CreateSeqStmt", "sequence") => "RangeVar",
        ("CreateStmt", "of_typename") => "TypeName",
        ("CreateStmt", "partbound") => "PartitionBoundSpec",
        ("CreateStmt", "partspec") => "PartitionSpec",
        ("CreateStmt", "relation") => "RangeVar",
        ("CreateTableAsStmt", "into") => "IntoClause",
        ("CreateTableSpaceStmt", "owner") => "RoleSpec",
        ("CreateTransformStmt", "fromsql") => "ObjectWithArgs",
        ("CreateTransformStmt", "tosql") => "ObjectWithArgs",
        ("CreateTransformStmt", "type_name") => "TypeName",
        ("CreateTrigStmt", "constrrel") => "RangeVar",
        ("CreateTrigStmt", "relation") => "RangeVar",
        ("CreateUserMappingStmt", "user") => "RoleSpec",
        ("DeleteStmt", "relation") => "RangeVar",
        ("DeleteStmt", "returning_clause") => "ReturningClause",
        ("DeleteStmt", "with_clause") => "WithClause",
        ("DropUserMappingStmt", "user") => "RoleSpec",
        ("FuncCall", "over") => "WindowDef",
        ("FunctionParameter", "arg_type") => "TypeName",
        ("GrantRoleStmt", "grantor") => "RoleSpec",
        ("GrantStmt", "grantor") => "RoleSpec",
        ("IndexStmt", "relation") => "RangeVar",
        ("InsertStmt", "on_conflict_clause") => "OnConflictClause",
        ("InsertStmt", "relation") => "RangeVar",
        ("InsertStmt", "returning_clause") => "ReturningClause",
        ("InsertStmt", "with_clause") => "WithClause",
        ("IntoClause", "rel") => "RangeVar",
        ("IntoClause", "view_query") => "Query",
        ("JoinExpr", "alias") => "Alias",
        ("JoinExpr", "join_using_alias") => "Alias",
        ("JsonAggConstructor", "output") => "JsonOutput",
        ("JsonAggConstructor", "over") => "WindowDef",
        ("JsonArgument", "val") => "JsonValueExpr",
        ("JsonArrayAgg", "arg") => "JsonValueExpr",
        ("JsonArrayAgg", "constructor") => "JsonAggConstructor",
        ("JsonArrayConstructor", "output") => "JsonOutput",
        ("JsonArrayQueryConstructor", "format") => "JsonFormat",
        ("JsonArrayQueryConstructor", "output") => "JsonOutput",
        ("JsonFuncExpr", "context_item") => "JsonValueExpr",
        ("JsonFuncExpr", "on_empty") => "JsonBehavior",
        ("JsonFuncExpr", "on_error") => "JsonBehavior",
        ("JsonFuncExpr", "output") => "JsonOutput",
        ("JsonIsPredicate", "format") => "JsonFormat",
        ("JsonKeyValue", "value") => "JsonValueExpr",
        ("JsonObjectAgg", "arg") => "JsonKeyValue",
        ("JsonObjectAgg", "constructor") => "JsonAggConstructor",
        ("JsonObjectConstructor", "output") => "JsonOutput",
        ("JsonOutput", "returning") => "JsonReturning",
        ("JsonOutput", "type_name") => "TypeName",
        ("JsonParseExpr", "expr") => "JsonValueExpr",
        ("JsonParseExpr", "output") => "JsonOutput",
        ("JsonReturning", "format") => "JsonFormat",
        ("JsonScalarExpr", "output") => "JsonOutput",
        ("JsonSerializeExpr", "expr") => "JsonValueExpr",
        ("JsonSerializeExpr", "output") => "JsonOutput",
        ("JsonTable", "alias") => "Alias",
        ("JsonTable", "context_item") => "JsonValueExpr",
        ("JsonTable", "on_error") => "JsonBehavior",
        ("JsonTable", "pathspec") => "JsonTablePathSpec",
        ("JsonTableColumn", "format") => "JsonFormat",
        ("JsonTableColumn", "on_empty") => "JsonBehavior",
        ("JsonTableColumn", "on_error") => "JsonBehavior",
        ("JsonTableColumn", "pathspec") => "JsonTablePathSpec",
        ("JsonTableColumn", "type_name") => "TypeName",
        ("JsonValueExpr", "format") => "JsonFormat",
        ("MergeStmt", "relation") => "RangeVar",
        ("MergeStmt", "returning_clause") => "ReturningClause",
        ("MergeStmt", "with_clause") => "WithClause",
        ("OnConflictClause", "infer") => "InferClause",
        ("PartitionCmd", "bound") => "PartitionBoundSpec",
        ("PartitionCmd", "name") => "RangeVar",
        ("PlassignStmt", "val") => "SelectStmt",
        ("PublicationObjSpec", "pubtable") => "PublicationTable",
        ("PublicationTable", "relation") => "RangeVar",
        ("RangeFunction", "alias") => "Alias",
        ("RangeSubselect", "alias") => "Alias",
        ("RangeTableFunc", "alias") => "Alias",
        ("RangeTableFuncCol", "type_name") => "TypeName",
        ("RangeVar", "alias") => "Alias",
        ("ReassignOwnedStmt", "newrole") => "RoleSpec",
        ("RefreshMatViewStmt", "relation") => "RangeVar",
        ("ReindexStmt", "relation") => "RangeVar",
        ("RenameStmt", "relation") => "RangeVar",
        ("RuleStmt", "relation") => "RangeVar",
        ("SelectStmt", "into_clause") => "IntoClause",
        ("SelectStmt", "larg") => "SelectStmt",
        ("SelectStmt", "rarg") => "SelectStmt",
        ("SelectStmt", "with_clause") => "WithClause",
        ("TableLikeClause", "relation") => "RangeVar",
        ("TypeCast", "type_name") => "TypeName",
        ("UpdateStmt", "relation") => "RangeVar",
        ("UpdateStmt", "returning_clause") => "ReturningClause",
        ("UpdateStmt", "with_clause") => "WithClause",
        ("VacuumRelation", "relation") => "RangeVar",
        ("ViewStmt", "view") => "RangeVar",
        ("XmlSerialize", "type_name") => "TypeName",
        _ => return None,
    })
}

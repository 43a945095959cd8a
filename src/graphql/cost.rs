//! What an operation costs, computed from its document before anything runs, the way
//! GitHub's node limit and Shopify's calculated query cost work.
//!
//! Every field counts once per object it is resolved on, and a list multiplies what is
//! selected under it by how long it can be: its `first` argument (or that argument's
//! default), a fixed bound, or, for a connection's `edges`, the connection's page. Two
//! numbers come out: the cost (fields resolved) and the nodes (objects returned). A field
//! that calls a hypervisor ([`HOST_CALLS`]) costs [`HOST_CALL_COST`].
//!
//! Some lists are *levels*: their elements are distinct objects, and the elements of the
//! same list under distinct parents are distinct again. A snapshot's `children` are
//! such a list (a snapshot has one parent), and so are a type's `fields` in
//! introspection. Below one anchor (a VM, a snapshot, the schema), a chain of levels can
//! never hold more objects per level than exist: a VM has at most `snapshots_per_vm`
//! snapshots, however deep its tree is walked. So a level holds at most
//! `min(total, parents × length)` objects, rather than `parents × length`; without this,
//! walking a tree 50 levels deep would look exponential. Going back up (`parent`, `type`)
//! starts a new anchor, and multiplies again, as it really does.
//!
//! A walk down a tree is bounded tighter still. Below the roots (or the children of one
//! snapshot), no snapshot appears twice on one path of `children`, so the snapshots on
//! any path number at most `snapshots_per_vm`, and the whole walk costs at most that many
//! times what one snapshot on its dearest level costs ([`Walker::tree`]).
//!
//! A selection set's cost depends only on the set, its page and how many objects it is
//! resolved on, so each fragment is measured once per such context: a document whose
//! fragments spread each other twice over costs what it would cost expanded, without ever
//! being expanded. Arithmetic saturates instead of overflowing.

use std::collections::HashMap;

use async_graphql::parser::types::{
    BaseType, DocumentOperations, ExecutableDocument, Field, FieldDefinition, OperationDefinition,
    OperationType, Selection, SelectionSet, Type, TypeKind, TypeSystemDefinition,
};
use async_graphql::{Name, Value, Variables};

use super::MAX_PAGE;
use crate::error::AppError;

/// Cost of a field that asks a hypervisor: a host round trip (a process, perhaps an SSH
/// session) against microseconds for a field read from memory or the database.
pub const HOST_CALL_COST: u64 = 1_000;

/// Fields that ask a host.
const HOST_CALLS: &[(&str, &str)] = &[("Vm", "drift")];

/// Cost of a field that reads a whole set of rows per object it is resolved on: a
/// policy's preview reads the snapshots of every VM the policy covers.
pub const WIDE_READ_COST: u64 = 100;

/// Fields that read that widely.
const WIDE_READS: &[(&str, &str)] = &[("Policy", "preview")];

/// Lists of a VM's snapshots whose elements are distinct (see the module's comment).
const SNAPSHOT_LEVELS: &[(&str, &str)] = &[
    ("Vm", "snapshotTree"),
    ("Vm", "snapshots"),
    ("Snapshot", "children"),
];

/// Levels whose elements, under one parent, are also unrelated: the roots of a tree, or
/// the children of one snapshot. Walked down through `children`, no snapshot below them
/// appears twice on one path, so a whole walk holds at most `snapshots_per_vm` snapshots
/// per path, however deep it goes.
const TREE_WALKS: &[(&str, &str)] = &[("Vm", "snapshotTree"), ("Snapshot", "children")];

/// Lists with a fixed bound, which their resolvers hold to.
const FIXED: &[(&str, &str, u64)] = &[
    ("Vm", "drift", super::MAX_DRIFT as u64),
    ("Mutation", "importVms", crate::service::IMPORT_BATCH as u64),
];

/// The introspection types, which `Schema::sdl` leaves out, as the GraphQL specification
/// defines them; their lists are bounded by what this schema holds.
const INTROSPECTION_SDL: &str = r#"
type __Schema { description: String types: [__Type!]! queryType: __Type! mutationType: __Type
  subscriptionType: __Type directives: [__Directive!]! }
type __Type { kind: __TypeKind! name: String description: String specifiedByURL: String
  fields(includeDeprecated: Boolean = false): [__Field!] interfaces: [__Type!]
  possibleTypes: [__Type!] enumValues(includeDeprecated: Boolean = false): [__EnumValue!]
  inputFields(includeDeprecated: Boolean = false): [__InputValue!] ofType: __Type isOneOf: Boolean }
type __Field { name: String! description: String args(includeDeprecated: Boolean = false): [__InputValue!]!
  type: __Type! isDeprecated: Boolean! deprecationReason: String }
type __InputValue { name: String! description: String type: __Type! defaultValue: String
  isDeprecated: Boolean! deprecationReason: String }
type __EnumValue { name: String! description: String isDeprecated: Boolean! deprecationReason: String }
type __Directive { name: String! description: String locations: [__DirectiveLocation!]!
  args(includeDeprecated: Boolean = false): [__InputValue!]! isRepeatable: Boolean! }
enum __TypeKind { SCALAR OBJECT INTERFACE UNION ENUM INPUT_OBJECT LIST NON_NULL }
enum __DirectiveLocation { QUERY MUTATION SUBSCRIPTION FIELD FRAGMENT_DEFINITION
  FRAGMENT_SPREAD INLINE_FRAGMENT VARIABLE_DEFINITION SCHEMA SCALAR OBJECT FIELD_DEFINITION
  ARGUMENT_DEFINITION INTERFACE UNION ENUM ENUM_VALUE INPUT_OBJECT INPUT_FIELD_DEFINITION }
"#;

/// Directives every schema has (skip, include, deprecated, specifiedBy, oneOf), and the
/// most arguments one of them takes: generous counts.
const BUILTIN_DIRECTIVES: u64 = 8;
const DIRECTIVE_ARGS: u64 = 4;

/// How long a list field can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bound {
    /// Its `first` argument, or this default.
    Page(u64),
    /// At most this many.
    Fixed(u64),
    /// A connection's `edges`: the page of the field that returned the connection.
    ConnectionPage,
    /// A list with no rule (none should exist: a test checks): a full page.
    Unruled,
}

/// What the cost model knows of a field.
#[derive(Clone, Debug)]
struct FieldInfo {
    /// The named type it returns (without list and non-null wrappers).
    ty: String,
    /// `None` for a single value.
    list: Option<Bound>,
    /// `Some(total)` for a level: at most `total` distinct elements below one anchor.
    level: Option<u64>,
    /// Its own cost per resolution.
    weight: u64,
    /// The default of its `first` argument, when it has one.
    first: Option<u64>,
}

/// The schema's object types and fields, as the cost model needs them.
pub struct Catalog {
    /// Fields by type name, then field name.
    types: HashMap<String, HashMap<String, FieldInfo>>,
    /// The root types of queries, mutations and subscriptions.
    roots: [String; 3],
}

/// An operation's measure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Measured {
    /// Fields resolved, at most.
    pub cost: u64,
    /// Objects returned, at most.
    pub nodes: u64,
    /// Deepest field nesting.
    pub depth: usize,
}

impl Catalog {
    /// The catalog of the schema printed as `sdl`, whose VMs have at most
    /// `snapshots_per_vm` non-closed snapshots.
    pub fn new(sdl: &str, snapshots_per_vm: u64) -> Self {
        let doc = async_graphql::parser::parse_schema(format!("{sdl}\n{INTROSPECTION_SDL}"))
            .expect("the schema's own SDL parses");
        let mut roots = ["Query", "Mutation", "Subscription"].map(str::to_owned);
        let mut sizes = Sizes::default();
        let mut types = HashMap::new();
        for definition in &doc.definitions {
            match definition {
                TypeSystemDefinition::Schema(schema) => {
                    let s = &schema.node;
                    let named = [&s.query, &s.mutation, &s.subscription];
                    for (root, name) in roots.iter_mut().zip(named) {
                        if let Some(name) = name {
                            *root = name.node.to_string();
                        }
                    }
                }
                TypeSystemDefinition::Type(ty) => {
                    sizes.types += 1;
                    let name = ty.node.name.node.to_string();
                    let fields = match &ty.node.kind {
                        TypeKind::Object(object) => {
                            sizes.interfaces = sizes.interfaces.max(object.implements.len());
                            &object.fields
                        }
                        TypeKind::Interface(interface) => {
                            // Every type could implement it.
                            sizes.possible = sizes.possible.max(doc.definitions.len());
                            &interface.fields
                        }
                        TypeKind::Union(union) => {
                            sizes.possible = sizes.possible.max(union.members.len());
                            continue;
                        }
                        TypeKind::Enum(e) => {
                            sizes.enum_values.add(e.values.len());
                            continue;
                        }
                        TypeKind::InputObject(input) => {
                            sizes.input_fields.add(input.fields.len());
                            continue;
                        }
                        TypeKind::Scalar => continue,
                    };
                    let fields: Vec<&FieldDefinition> = fields.iter().map(|f| &f.node).collect();
                    sizes.fields.add(fields.len());
                    for field in &fields {
                        sizes.args.add(field.arguments.len());
                    }
                    types.insert(name.clone(), fields_of(&name, &fields, snapshots_per_vm));
                }
                TypeSystemDefinition::Directive(_) => {}
            }
        }
        // The built-in scalars (Int, Float, String, Boolean, ID) are not printed.
        sizes.types += 5;
        let mut catalog = Self { types, roots };
        catalog.bound_introspection(&sizes);
        catalog
    }

    /// Gives the introspection lists their bounds from what this schema holds, and puts
    /// `__schema` and `__type` on the query root.
    fn bound_introspection(&mut self, sizes: &Sizes) {
        let n = |v: usize| v as u64;
        // (type, field, longest under one parent, distinct in all: a level)
        let bounds = [
            ("__Schema", "types", sizes.types, Some(sizes.types)),
            ("__Schema", "directives", BUILTIN_DIRECTIVES, None),
            (
                "__Type",
                "fields",
                n(sizes.fields.most),
                Some(n(sizes.fields.all)),
            ),
            ("__Type", "interfaces", n(sizes.interfaces), None),
            ("__Type", "possibleTypes", n(sizes.possible), None),
            (
                "__Type",
                "enumValues",
                n(sizes.enum_values.most),
                Some(n(sizes.enum_values.all)),
            ),
            (
                "__Type",
                "inputFields",
                n(sizes.input_fields.most),
                Some(n(sizes.input_fields.all)),
            ),
            (
                "__Field",
                "args",
                n(sizes.args.most),
                Some(n(sizes.args.all)),
            ),
            ("__Directive", "args", DIRECTIVE_ARGS, None),
            ("__Directive", "locations", 19, None),
        ];
        for (ty, field, most, level) in bounds {
            if let Some(info) = self.types.get_mut(ty).and_then(|t| t.get_mut(field)) {
                info.list = Some(Bound::Fixed(most));
                info.level = level;
            }
        }
        let query = self.types.entry(self.roots[0].clone()).or_default();
        for (field, ty) in [("__schema", "__Schema"), ("__type", "__Type")] {
            let info = FieldInfo {
                ty: ty.to_owned(),
                list: None,
                level: None,
                weight: 1,
                first: None,
            };
            query.insert(field.to_owned(), info);
        }
    }

    /// Every list field and its bound, for tests and documentation.
    pub fn lists(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .types
            .iter()
            .flat_map(|(ty, fields)| {
                fields.iter().filter_map(move |(name, info)| {
                    let level = info
                        .level
                        .map_or(String::new(), |t| format!(", level of {t}"));
                    info.list.map(|b| format!("{ty}.{name}: {b:?}{level}"))
                })
            })
            .collect();
        out.sort();
        out
    }

    /// Measures the operation `operation` names (every one when `None` names none
    /// clearly), and every fragment the document defines: unused fragments are still
    /// walked by the validator, so they must not be able to cost more than an operation.
    pub fn measure(
        &self,
        doc: &ExecutableDocument,
        operation: Option<&str>,
        variables: &Variables,
    ) -> Result<Measured, AppError> {
        let mut walker = Walker::new(self, doc, variables);
        let mut measured = Measured::default();
        for (name, fragment) in &doc.fragments {
            let ty = fragment.node.type_condition.node.on.node.as_str();
            measured = measured.max(walker.spread(name, ty, None, 1)?.measured());
        }
        for op in operations(doc, operation) {
            walker.defaults = op
                .variable_definitions
                .iter()
                .filter_map(|v| {
                    let default = v.node.default_value.as_ref()?.node.clone();
                    Some((v.node.name.node.clone(), default))
                })
                .collect();
            let root = match op.ty {
                OperationType::Query => &self.roots[0],
                OperationType::Mutation => &self.roots[1],
                OperationType::Subscription => &self.roots[2],
            };
            let set = walker.selection_set(&op.selection_set.node, root, None, 1)?;
            measured = measured.max(set.measured());
        }
        Ok(measured)
    }
}

/// The operations of `doc` that `name` selects (all of them when it selects none).
fn operations<'d>(doc: &'d ExecutableDocument, name: Option<&str>) -> Vec<&'d OperationDefinition> {
    match (&doc.operations, name) {
        (DocumentOperations::Single(op), _) => vec![&op.node],
        (DocumentOperations::Multiple(ops), Some(name)) => {
            ops.get(name).map(|op| vec![&op.node]).unwrap_or_default()
        }
        (DocumentOperations::Multiple(ops), None) => ops.values().map(|op| &op.node).collect(),
    }
}

/// How many of something the schema has: the most under one parent, and in all.
#[derive(Clone, Copy, Default)]
struct Count {
    /// The most under one parent (one type's fields, one field's arguments).
    most: usize,
    /// The sum over every parent.
    all: usize,
}

impl Count {
    fn add(&mut self, n: usize) {
        self.most = self.most.max(n);
        self.all += n;
    }
}

/// What the schema holds, which bounds the introspection lists.
#[derive(Default)]
struct Sizes {
    /// Named types, the introspection types and the five built-in scalars included.
    types: u64,
    /// Fields of object and interface types.
    fields: Count,
    /// Arguments of those fields.
    args: Count,
    /// Values of enum types.
    enum_values: Count,
    /// Fields of input types.
    input_fields: Count,
    /// The most interfaces one object type implements.
    interfaces: usize,
    /// The most possible types of a union or an interface (every definition, for one).
    possible: usize,
}

fn fields_of(ty: &str, fields: &[&FieldDefinition], snapshots: u64) -> HashMap<String, FieldInfo> {
    let mut out = HashMap::new();
    for field in fields {
        let name = field.name.node.to_string();
        let first = field
            .arguments
            .iter()
            .find(|a| a.node.name.node == "first")
            .map(|a| {
                a.node
                    .default_value
                    .as_ref()
                    .and_then(|d| page(&d.node))
                    .unwrap_or(MAX_PAGE as u64)
            });
        let (named, is_list) = unwrap_type(&field.ty.node);
        let here = (ty, name.as_str());
        let fixed = FIXED.iter().find(|f| (f.0, f.1) == here).map(|f| f.2);
        let list = is_list.then(|| match (fixed, first) {
            (Some(n), _) => Bound::Fixed(n),
            (None, Some(first)) => Bound::Page(first),
            (None, None) if SNAPSHOT_LEVELS.contains(&here) => Bound::Fixed(snapshots),
            (None, None) if ty.ends_with("Connection") => Bound::ConnectionPage,
            // Introspection lists get their bounds in `Catalog::bound_introspection`.
            (None, None) => Bound::Unruled,
        });
        // A paged level (`Vm.snapshots`) holds no more than its pages ask for.
        let level = SNAPSHOT_LEVELS
            .contains(&here)
            .then_some(if first.is_some() { u64::MAX } else { snapshots });
        let weight = if HOST_CALLS.contains(&here) {
            HOST_CALL_COST
        } else if WIDE_READS.contains(&here) {
            WIDE_READ_COST
        } else {
            1
        };
        out.insert(
            name,
            FieldInfo {
                ty: named,
                list,
                level,
                weight,
                first,
            },
        );
    }
    out
}

/// The named type inside a type's wrappers, and whether it is a list.
fn unwrap_type(ty: &Type) -> (String, bool) {
    match &ty.base {
        BaseType::Named(name) => (name.to_string(), false),
        BaseType::List(inner) => (unwrap_type(inner).0, true),
    }
}

/// A page size from an argument's value: what `first` can make a list hold.
fn page(value: &Value) -> Option<u64> {
    match value {
        // Out of range is refused when it runs; count it as the largest page meanwhile.
        Value::Number(n) => Some(
            n.as_i64()
                .filter(|n| (0..=i64::from(MAX_PAGE)).contains(n))
                .map_or(MAX_PAGE as u64, |n| n as u64),
        ),
        _ => None,
    }
}

mod walk;

use walk::Walker;

#[cfg(test)]
mod tests;

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
        let mut walker = Walker {
            catalog: self,
            doc,
            variables,
            defaults: HashMap::new(),
            memo: HashMap::new(),
            tree_memo: HashMap::new(),
            visiting: Vec::new(),
        };
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

/// Fields and objects, saturating.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    /// Fields resolved, each at its weight: the cost.
    fields: u64,
    /// Objects returned: the nodes.
    objects: u64,
}

impl Tally {
    /// Each part at its largest: a bound on either.
    fn max(self, other: Tally) -> Tally {
        Tally {
            fields: self.fields.max(other.fields),
            objects: self.objects.max(other.objects),
        }
    }

    fn fields(n: u64) -> Self {
        Self {
            fields: n,
            objects: 0,
        }
    }

    fn objects(n: u64) -> Self {
        Self {
            fields: 0,
            objects: n,
        }
    }

    fn add(self, other: Tally) -> Tally {
        Tally {
            fields: self.fields.saturating_add(other.fields),
            objects: self.objects.saturating_add(other.objects),
        }
    }

    fn times(self, n: u64) -> Tally {
        Tally {
            fields: self.fields.saturating_mul(n),
            objects: self.objects.saturating_mul(n),
        }
    }
}

/// What a selection set costs on all the objects it is resolved on, and how deep it goes.
#[derive(Clone, Copy, Debug, Default)]
struct SetCost {
    /// The set's cost and nodes, summed over every object it is resolved on.
    tally: Tally,
    /// Its deepest field nesting (1 for a set of leaves).
    depth: usize,
}

impl SetCost {
    fn merge(&mut self, other: SetCost) {
        self.tally = self.tally.add(other.tally);
        self.depth = self.depth.max(other.depth);
    }

    fn measured(&self) -> Measured {
        Measured {
            cost: self.tally.fields,
            nodes: self.tally.objects,
            depth: self.depth,
        }
    }
}

impl Measured {
    fn max(self, other: Measured) -> Measured {
        Measured {
            cost: self.cost.max(other.cost),
            nodes: self.nodes.max(other.nodes),
            depth: self.depth.max(other.depth),
        }
    }
}

/// A selection set on the snapshots of a tree walk: per snapshot, what it costs apart
/// from the walk's deeper levels (`own`), and what those levels cost per snapshot a path
/// may hold (`below`).
#[derive(Clone, Copy, Debug, Default)]
struct TreeCost {
    /// Per snapshot, what the set costs besides its deeper tree levels.
    own: Tally,
    /// What the deeper tree levels cost per snapshot a path may hold.
    below: Tally,
    /// The set's deepest field nesting.
    depth: usize,
}

impl TreeCost {
    fn merge(&mut self, other: TreeCost) {
        self.own = self.own.add(other.own);
        self.below = self.below.add(other.below);
        self.depth = self.depth.max(other.depth);
    }

    /// Per snapshot a path may hold, for the level this set is selected on: a path puts
    /// its snapshots on this level (each one object and its own cost) or below it.
    fn per_snapshot(&self) -> Tally {
        Tally::objects(1).add(self.own).max(self.below)
    }
}

/// One walk over a document.
struct Walker<'a> {
    /// The schema's fields and their bounds.
    catalog: &'a Catalog,
    /// The document walked, with the fragments its spreads name.
    doc: &'a ExecutableDocument,
    /// The request's variables, which a `first: $n` is read from before its default.
    variables: &'a Variables,
    /// The current operation's variable defaults.
    defaults: HashMap<Name, Value>,
    /// Fragments measured so far, by name, the page they were spread under and the
    /// number of objects they were resolved on.
    memo: HashMap<(&'a str, Option<u64>, u64), SetCost>,
    /// Fragments measured on a tree walk's snapshots.
    tree_memo: HashMap<&'a str, TreeCost>,
    /// Fragments being measured (a spread of one of them is a cycle).
    visiting: Vec<&'a str>,
}

impl<'a> Walker<'a> {
    /// `set` on type `ty`, resolved on `n` objects: distinct ones of one anchor when
    /// `n > 1` (a level), a single one otherwise.
    fn selection_set(
        &mut self,
        set: &'a SelectionSet,
        ty: &str,
        page: Option<u64>,
        n: u64,
    ) -> Result<SetCost, AppError> {
        let mut cost = SetCost::default();
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => cost.merge(self.field(&field.node, ty, page, n)?),
                Selection::InlineFragment(inline) => {
                    let inline = &inline.node;
                    let on = inline.type_condition.as_ref();
                    let on = on.map_or(ty, |c| c.node.on.node.as_str());
                    cost.merge(self.selection_set(&inline.selection_set.node, on, page, n)?);
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    let Some(fragment) = self.doc.fragments.get(name) else {
                        continue; // the validator reports it
                    };
                    let on = fragment.node.type_condition.node.on.node.as_str();
                    cost.merge(self.spread(name, on, page, n)?);
                }
            }
        }
        Ok(cost)
    }

    fn spread(
        &mut self,
        name: &'a str,
        ty: &str,
        page: Option<u64>,
        n: u64,
    ) -> Result<SetCost, AppError> {
        if let Some(known) = self.memo.get(&(name, page, n)) {
            return Ok(*known);
        }
        if self.visiting.contains(&name) {
            return Err(AppError::validation(format!(
                "The fragment {name} spreads itself; fragments must not form a cycle."
            )));
        }
        let fragment = &self.doc.fragments[name];
        self.visiting.push(name);
        let cost = self.selection_set(&fragment.node.selection_set.node, ty, page, n);
        self.visiting.pop();
        let cost = cost?;
        self.memo.insert((name, page, n), cost);
        Ok(cost)
    }

    /// `field` of type `ty`, resolved on `n` objects.
    fn field(
        &mut self,
        field: &'a Field,
        ty: &str,
        page: Option<u64>,
        n: u64,
    ) -> Result<SetCost, AppError> {
        let leaf = |fields: u64| SetCost {
            tally: Tally::fields(fields).times(n),
            depth: 1,
        };
        let Some(info) = self
            .catalog
            .types
            .get(ty)
            .and_then(|t| t.get(field.name.node.as_str()))
        else {
            // `__typename`, or a field the validator will refuse.
            return Ok(leaf(1));
        };
        let first = info.first.map(|default| self.first(field, default));
        let length = info.list.map(|bound| self.length(bound, first, page));
        if !self.catalog.types.contains_key(&info.ty) {
            // A scalar or enum, or a list of them: each value counts.
            return Ok(leaf(info.weight.saturating_add(length.unwrap_or(0))));
        }
        let sub_set = &field.selection_set.node;
        let itself = Tally::fields(info.weight).times(n);
        if n == 1 && TREE_WALKS.contains(&(ty, field.name.node.as_str())) {
            let walk = self.tree(sub_set, &info.ty)?;
            let bound = length.unwrap_or(1);
            return Ok(SetCost {
                tally: itself.add(walk.per_snapshot().times(bound)),
                depth: walk.depth + 1,
            });
        }
        let (tally, sub) = match (length, info.level) {
            // A level: its elements are distinct, so there are no more than exist.
            (Some(length), Some(total)) => {
                let m = total.min(n.saturating_mul(length));
                let sub = self.selection_set(sub_set, &info.ty, None, m)?;
                (Tally::objects(m).add(sub.tally), sub)
            }
            // Otherwise each element is an object of its own.
            (length, _) => {
                // A connection hands its page down to its `edges`.
                let inner_page = if length.is_none() { first } else { None };
                let sub = self.selection_set(sub_set, &info.ty, inner_page, 1)?;
                let each = Tally::objects(1).add(sub.tally);
                (each.times(length.unwrap_or(1)).times(n), sub)
            }
        };
        Ok(SetCost {
            tally: itself.add(tally),
            depth: sub.depth + 1,
        })
    }

    /// `set` on the snapshots of a tree walk (see [`TreeCost`]): `children` goes on down
    /// the walk; every other field costs per snapshot.
    fn tree(&mut self, set: &'a SelectionSet, ty: &str) -> Result<TreeCost, AppError> {
        let mut cost = TreeCost::default();
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let down = TREE_WALKS.contains(&(ty, field.name.node.as_str()));
                    let info = self
                        .catalog
                        .types
                        .get(ty)
                        .and_then(|t| t.get(field.name.node.as_str()));
                    match info {
                        Some(info) if down => {
                            let below = self.tree(&field.selection_set.node, &info.ty)?;
                            cost.merge(TreeCost {
                                own: Tally::fields(info.weight),
                                below: below.per_snapshot(),
                                depth: below.depth + 1,
                            });
                        }
                        _ => {
                            let one = self.field(field, ty, None, 1)?;
                            cost.merge(TreeCost {
                                own: one.tally,
                                below: Tally::default(),
                                depth: one.depth,
                            });
                        }
                    }
                }
                Selection::InlineFragment(inline) => {
                    let inline = &inline.node;
                    let on = inline.type_condition.as_ref();
                    let on = on.map_or(ty, |c| c.node.on.node.as_str());
                    cost.merge(self.tree(&inline.selection_set.node, on)?);
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    let Some(fragment) = self.doc.fragments.get(name) else {
                        continue;
                    };
                    if let Some(known) = self.tree_memo.get(name) {
                        cost.merge(*known);
                        continue;
                    }
                    if self.visiting.contains(&name) {
                        return Err(AppError::validation(format!(
                            "The fragment {name} spreads itself; fragments must not form a cycle."
                        )));
                    }
                    let on = fragment.node.type_condition.node.on.node.as_str();
                    self.visiting.push(name);
                    let measured = self.tree(&fragment.node.selection_set.node, on);
                    self.visiting.pop();
                    let measured = measured?;
                    self.tree_memo.insert(name, measured);
                    cost.merge(measured);
                }
            }
        }
        Ok(cost)
    }

    /// How long a list can be under one parent.
    fn length(&self, bound: Bound, first: Option<u64>, page: Option<u64>) -> u64 {
        let full = MAX_PAGE as u64;
        match bound {
            Bound::Page(default) => first.unwrap_or(default),
            Bound::Fixed(n) => n,
            Bound::ConnectionPage => page.unwrap_or(full),
            Bound::Unruled => full,
        }
    }

    /// The page size a field's `first` asks for (a literal or a variable), or `default`.
    fn first(&self, field: &Field, default: u64) -> u64 {
        let Some(value) = field.get_argument("first") else {
            return default;
        };
        let resolved = value.node.clone().into_const_with(|name| {
            let given = self
                .variables
                .get(&name)
                .or_else(|| self.defaults.get(&name));
            given.cloned().ok_or(())
        });
        match resolved {
            // Absent or null: the argument's default applies.
            Err(()) | Ok(Value::Null) => default,
            Ok(value) => page(&value).unwrap_or(MAX_PAGE as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::new(&crate::graphql::sdl(), 100)
    }

    fn measure(query: &str) -> Result<Measured, AppError> {
        let doc = async_graphql::parser::parse_query(query).unwrap();
        catalog().measure(&doc, None, &Variables::default())
    }

    fn cost(query: &str) -> u64 {
        measure(query).unwrap().cost
    }

    #[test]
    fn every_list_has_a_bound_of_its_own() {
        let lists = catalog().lists();
        let unruled: Vec<&String> = lists.iter().filter(|l| l.contains("Unruled")).collect();
        assert!(unruled.is_empty(), "lists without a rule: {unruled:?}");
    }

    #[test]
    fn scalars_count_once_and_lists_by_their_page() {
        assert_eq!(cost("{ vm(id: 1) { id name } }"), 3);
        // The connection's `edges` take its page: 5 edges of (edge + node + 2 fields).
        let paged = "{ vms(first: 5) { edges { node { id name } } } }";
        assert_eq!(measure(paged).unwrap().nodes, 1 + 5 * 2);
        assert_eq!(cost(paged), 1 + 1 + 5 * (1 + 2));
    }

    #[test]
    fn nested_lists_multiply() {
        let nested = "{ vm(id: 1) { host { vms { host { vms { host { vms { id } } } } } } } }";
        let m = measure(nested).unwrap();
        assert!(m.nodes > 50 * 50 * 50, "{m:?}");
    }

    #[test]
    fn variables_and_defaults_set_the_page() {
        let doc = async_graphql::parser::parse_query(
            "query($n: Int = 3) { vms(first: $n) { edges { node { id } } } }",
        )
        .unwrap();
        let c = catalog();
        let by_default = c.measure(&doc, None, &Variables::default()).unwrap();
        let vars = Variables::from_json(serde_json::json!({ "n": 7 }));
        let given = c.measure(&doc, None, &vars).unwrap();
        assert_eq!(by_default.nodes, 1 + 3 * 2);
        assert_eq!(given.nodes, 1 + 7 * 2);
    }

    #[test]
    fn tree_levels_cost_per_vm_not_per_parent() {
        let mut chain = String::from("{ vm(id: 1) { snapshotTree { id name ");
        for _ in 0..49 {
            chain.push_str("children { id name ");
        }
        chain.push_str(&"}".repeat(51));
        chain.push('}');
        let m = measure(&chain).unwrap();
        // At most 100 snapshots on a path, each with 2 fields and its `children`.
        assert_eq!(m.nodes, 1 + 100);
        assert_eq!(m.cost, 2 + 100 * 3);
        assert_eq!(m.depth, 52);
        // Below `snapshots` (a page of 200, parents and children alike), each level can
        // hold every snapshot again.
        let flat = chain.replacen("snapshotTree", "snapshots", 1);
        assert_eq!(measure(&flat).unwrap().nodes, 1 + 200 + 49 * 100);
    }

    #[test]
    fn tree_walks_count_the_dearest_level_and_every_branch() {
        // The deepest level asks for the history; a path may hold 100 snapshots there.
        let deep =
            "{ vm(id: 1) { snapshotTree { id children { id history(first: 10) { at } } } } }";
        let m = measure(deep).unwrap();
        assert_eq!(m.nodes, 1 + 100 * (1 + 10));
        // Two aliases of `children` are two walks over the same snapshots.
        let twice = "{ vm(id: 1) { snapshotTree { a: children { id } b: children { id } } } }";
        assert_eq!(measure(twice).unwrap().nodes, 1 + 100 * 2);
    }

    #[test]
    fn going_back_up_the_tree_multiplies_again() {
        let zigzag = "{ snapshot(id: 1) { children { parent { children { parent { children { id } } } } } } }";
        assert!(measure(zigzag).unwrap().nodes >= 100 * 100 * 100);
    }

    #[test]
    fn doubled_fragments_cost_what_they_expand_to_without_expanding() {
        let mut doc = String::from("fragment F0 on Query { hosts { id } }\n");
        for i in 1..=60 {
            doc.push_str(&format!(
                "fragment F{i} on Query {{ ...F{} ...F{} }}\n",
                i - 1,
                i - 1
            ));
        }
        doc.push_str("{ ...F60 }");
        let m = measure(&doc).unwrap();
        assert_eq!(
            m.cost,
            u64::MAX,
            "saturates: 2^60 spreads of a page of hosts"
        );
    }

    #[test]
    fn fragment_cycles_are_refused() {
        let err = measure("fragment A on Query { ...B } fragment B on Query { ...A } { ...A }")
            .unwrap_err();
        assert_eq!(err.code(), "VALIDATION");
    }

    #[test]
    fn host_calls_are_dear() {
        assert!(cost("{ vm(id: 1) { drift { kind } } }") > HOST_CALL_COST);
        // Fifty previews (a page of policies) cost what 5,000 fields do.
        assert!(cost("{ policies { preview { dueAt } } }") >= 50 * WIDE_READ_COST);
    }

    #[test]
    fn introspection_is_bounded_by_what_the_schema_holds() {
        // The query GraphiQL and code generators send.
        let standard = measure(STANDARD_INTROSPECTION).unwrap();
        assert!(standard.cost < 20_000, "{standard:?}");
        // Going from a field back to its type and on starts again, and multiplies.
        let nested =
            "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }";
        assert!(
            measure(nested).unwrap().nodes > 30_000,
            "{:?}",
            measure(nested)
        );
        assert_eq!(cost("{ __schema { queryType { name } } }"), 3);
    }

    const STANDARD_INTROSPECTION: &str = r#"query IntrospectionQuery {
      __schema {
        queryType { name } mutationType { name } subscriptionType { name }
        types { ...FullType }
        directives { name description locations args { ...InputValue } }
      }
    }
    fragment FullType on __Type {
      kind name description
      fields(includeDeprecated: true) { name description args { ...InputValue }
        type { ...TypeRef } isDeprecated deprecationReason }
      inputFields { ...InputValue }
      interfaces { ...TypeRef }
      enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
      possibleTypes { ...TypeRef }
    }
    fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
    fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType {
      kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    } } } } } } } }"#;
}

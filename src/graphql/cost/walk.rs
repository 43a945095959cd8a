//! The walk that measures a document: each selection set once per context (its page and
//! how many objects it is resolved on), fragments memoized, a tree walk bounded by the
//! snapshots on one path.

use super::*;

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
pub(super) struct SetCost {
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

    pub(super) fn measured(&self) -> Measured {
        Measured {
            cost: self.tally.fields,
            nodes: self.tally.objects,
            depth: self.depth,
        }
    }
}

impl Measured {
    pub(super) fn max(self, other: Measured) -> Measured {
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
pub(super) struct Walker<'a> {
    /// The schema's fields and their bounds.
    catalog: &'a Catalog,
    /// The document walked, with the fragments its spreads name.
    doc: &'a ExecutableDocument,
    /// The request's variables, which a `first: $n` is read from before its default.
    variables: &'a Variables,
    /// The current operation's variable defaults.
    pub(super) defaults: HashMap<Name, Value>,
    /// Fragments measured so far, by name, the page they were spread under and the
    /// number of objects they were resolved on.
    memo: HashMap<(&'a str, Option<u64>, u64), SetCost>,
    /// Fragments measured on a tree walk's snapshots.
    tree_memo: HashMap<&'a str, TreeCost>,
    /// Fragments being measured (a spread of one of them is a cycle).
    visiting: Vec<&'a str>,
}

impl<'a> Walker<'a> {
    /// A walk over `doc` with `variables`, measured against `catalog`.
    pub(super) fn new(
        catalog: &'a Catalog,
        doc: &'a ExecutableDocument,
        variables: &'a Variables,
    ) -> Self {
        Self {
            catalog,
            doc,
            variables,
            defaults: HashMap::new(),
            memo: HashMap::new(),
            tree_memo: HashMap::new(),
            visiting: Vec::new(),
        }
    }

    /// `set` on type `ty`, resolved on `n` objects: distinct ones of one anchor when
    /// `n > 1` (a level), a single one otherwise.
    pub(super) fn selection_set(
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

    pub(super) fn spread(
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
                Selection::Field(field) => cost.merge(self.tree_field(&field.node, ty)?),
                Selection::InlineFragment(inline) => {
                    let inline = &inline.node;
                    let on = inline.type_condition.as_ref();
                    let on = on.map_or(ty, |c| c.node.on.node.as_str());
                    cost.merge(self.tree(&inline.selection_set.node, on)?);
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    cost.merge(self.tree_spread(name)?);
                }
            }
        }
        Ok(cost)
    }

    /// `field` of a snapshot in a tree walk: down the walk if it is `children`, else
    /// measured as anywhere else, once per snapshot.
    fn tree_field(&mut self, field: &'a Field, ty: &str) -> Result<TreeCost, AppError> {
        let down = TREE_WALKS.contains(&(ty, field.name.node.as_str()));
        let info = self
            .catalog
            .types
            .get(ty)
            .and_then(|t| t.get(field.name.node.as_str()));
        Ok(match info {
            Some(info) if down => {
                let below = self.tree(&field.selection_set.node, &info.ty)?;
                TreeCost {
                    own: Tally::fields(info.weight),
                    below: below.per_snapshot(),
                    depth: below.depth + 1,
                }
            }
            _ => {
                let one = self.field(field, ty, None, 1)?;
                TreeCost {
                    own: one.tally,
                    below: Tally::default(),
                    depth: one.depth,
                }
            }
        })
    }

    /// Fragment `name` spread on a snapshot in a tree walk, measured once per document
    /// (an unknown one costs nothing: validation refuses it later).
    fn tree_spread(&mut self, name: &'a str) -> Result<TreeCost, AppError> {
        let Some(fragment) = self.doc.fragments.get(name) else {
            return Ok(TreeCost::default());
        };
        if let Some(known) = self.tree_memo.get(name) {
            return Ok(*known);
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
        Ok(measured)
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

//! CloudCIX's list parameters, read as its framework reads them: `search[field]=v` and
//! `search[field__op]=v` filter, `exclude[...]` the same negated (the old style
//! `field__op=v` and `exclude__field=v` still works, with a deprecation warning);
//! `order`, `limit` (default 50, at most 100) and `page` (from 0). What cannot be used
//! (an unknown field, an operator the field does not take, a range of one value) is
//! skipped with a warning for `_metadata.warnings`, never refused; a value the field
//! cannot hold (`search[id]=abc`) is refused (the list's `_001` code).

use std::collections::BTreeMap;

/// What a field holds, which decides its operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Text: `in icontains iendswith iexact istartswith`.
    Text,
    /// An integer: `gt gte in isnull lt lte range`.
    Number,
    /// A boolean: exact match only.
    Flag,
}

/// An operator of the framework's filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Exact,
    In,
    IContains,
    IEndsWith,
    IExact,
    IStartsWith,
    Gt,
    Gte,
    Lt,
    Lte,
    Range,
    IsNull,
}

impl Op {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "in" => Self::In,
            "icontains" => Self::IContains,
            "iendswith" => Self::IEndsWith,
            "iexact" => Self::IExact,
            "istartswith" => Self::IStartsWith,
            "gt" => Self::Gt,
            "gte" => Self::Gte,
            "lt" => Self::Lt,
            "lte" => Self::Lte,
            "range" => Self::Range,
            "isnull" => Self::IsNull,
            _ => return None,
        })
    }

    fn allowed(self, kind: Kind) -> bool {
        use Op::*;
        match kind {
            Kind::Text => matches!(
                self,
                Exact | In | IContains | IEndsWith | IExact | IStartsWith
            ),
            Kind::Number => matches!(self, Exact | Gt | Gte | In | IsNull | Lt | Lte | Range),
            Kind::Flag => self == Exact,
        }
    }
}

/// A filter's value, as its field holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Number(i64),
    Flag(bool),
}

/// One condition on the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub field: &'static str,
    pub op: Op,
    /// One value, two for `range`, any number for `in`.
    pub values: Vec<Value>,
    /// From `exclude`: the rows that do not match.
    pub negated: bool,
}

/// A list request, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListParams {
    pub conditions: Vec<Condition>,
    /// The field to order by, and whether descending.
    pub order: (&'static str, bool),
    pub limit: i64,
    pub page: i64,
    pub warnings: Vec<String>,
}

/// Default and largest page.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 100;

/// Reads `query` for a list of `fields`, ordered by one of `orders` (the first is the
/// default). `Err` names a value its field cannot hold.
pub fn parse(
    query: &str,
    fields: &[(&'static str, Kind)],
    orders: &[&'static str],
) -> Result<ListParams, String> {
    // The last value of a name wins, as in Django's QueryDict.
    let pairs: BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let mut params = ListParams {
        conditions: Vec::new(),
        order: (orders[0], false),
        limit: DEFAULT_LIMIT,
        page: 0,
        warnings: Vec::new(),
    };
    for (key, value) in &pairs {
        match key.as_str() {
            "limit" => {
                params.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .unwrap_or(DEFAULT_LIMIT);
            }
            "page" => params.page = value.parse().ok().filter(|n| *n >= 0).unwrap_or(0),
            "order" => {
                let (name, descending) = match value.strip_prefix('-') {
                    Some(name) => (name, true),
                    None => (value.as_str(), false),
                };
                if let Some(found) = orders.iter().find(|o| **o == name) {
                    params.order = (found, descending);
                }
            }
            _ => {
                let (filter, negated, deprecated) = if let Some(inner) = deep(key, "search") {
                    (inner, false, false)
                } else if let Some(inner) = deep(key, "exclude") {
                    (inner, true, false)
                } else if let Some(inner) = key.strip_prefix("exclude__") {
                    (inner, true, true)
                } else {
                    (key.as_str(), false, true)
                };
                let warning = |what: &str| {
                    format!(
                        "{}: {what} `{key}` is not used.",
                        if negated {
                            "ExcludeFilterWarning"
                        } else {
                            "SearchFilterWarning"
                        }
                    )
                };
                match condition(filter, value, negated, fields)? {
                    Some(condition) => {
                        if deprecated {
                            params.warnings.push(format!(
                                "DeprecationWarning: `{key}` is the old style; use `{}[{filter}]`.",
                                if negated { "exclude" } else { "search" }
                            ));
                        }
                        params.conditions.push(condition);
                    }
                    None => params.warnings.push(warning("the filter")),
                }
            }
        }
    }
    Ok(params)
}

/// `inner` of `name[inner]`.
fn deep<'k>(key: &'k str, name: &str) -> Option<&'k str> {
    key.strip_prefix(name)?
        .strip_prefix('[')?
        .strip_suffix(']')
        .filter(|inner| !inner.is_empty())
}

/// `filter` (`field` or `field__op`) with `raw`: `None` when it cannot be used.
fn condition(
    filter: &str,
    raw: &str,
    negated: bool,
    fields: &[(&'static str, Kind)],
) -> Result<Option<Condition>, String> {
    // A field's own name may hold `__` (`vm__name`): the operator is the last part, if
    // it is one.
    let (name, op) = match filter.rsplit_once("__") {
        Some((name, op)) if Op::parse(op).is_some() => (name, Op::parse(op).unwrap()),
        _ => (filter, Op::Exact),
    };
    let Some(&(field, kind)) = fields.iter().find(|(f, _)| *f == name) else {
        return Ok(None);
    };
    if !op.allowed(kind) {
        return Ok(None);
    }
    let values: Vec<&str> = match op {
        Op::In | Op::Range => raw
            .trim_matches(|c| "[]()'\"".contains(c))
            .split(',')
            .map(|v| v.trim().trim_matches(|c| "'\"".contains(c)))
            .filter(|v| !v.is_empty())
            .collect(),
        _ => vec![raw],
    };
    if op == Op::Range && values.len() != 2 {
        return Ok(None);
    }
    if op == Op::IsNull {
        return Ok(flag(raw).map(|isnull| Condition {
            field,
            op,
            values: vec![Value::Flag(isnull)],
            negated,
        }));
    }
    let values = values
        .into_iter()
        .map(|v| match kind {
            Kind::Text => Ok(Value::Text(v.to_owned())),
            Kind::Number => v
                .parse()
                .map(Value::Number)
                .map_err(|_| format!("{v:?} is not a value of {field}.")),
            Kind::Flag => flag(v)
                .map(Value::Flag)
                .ok_or_else(|| format!("{v:?} is not a value of {field}.")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Condition {
        field,
        op,
        values,
        negated,
    }))
}

/// `true`/`false` in any case.
fn flag(raw: &str) -> Option<bool> {
    match raw.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[(&str, Kind)] = &[
        ("id", Kind::Number),
        ("name", Kind::Text),
        ("vm__name", Kind::Text),
        ("state", Kind::Number),
        ("active", Kind::Flag),
    ];
    const ORDERS: &[&str] = &["id", "name", "state"];

    fn read(query: &str) -> ListParams {
        parse(query, FIELDS, ORDERS).unwrap()
    }

    #[test]
    fn paging_and_order_fall_back_as_cloudcix_does() {
        let p = read("");
        assert_eq!((p.limit, p.page, p.order), (50, 0, ("id", false)));
        for bad in ["limit=0", "limit=101", "limit=x"] {
            assert_eq!(read(bad).limit, 50, "{bad}");
        }
        assert_eq!(read("limit=100").limit, 100);
        assert_eq!(read("page=-1").page, 0);
        assert_eq!(read("page=3").page, 3);
        assert_eq!(read("order=-name").order, ("name", true));
        assert_eq!(read("order=secret").order, ("id", false));
    }

    #[test]
    fn filters_take_their_fields_operators() {
        let p = read("search[vm__name__icontains]=Web&exclude[state]=99&search[id__in]=[4,10]");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert!(p.conditions.contains(&Condition {
            field: "vm__name",
            op: Op::IContains,
            values: vec![Value::Text("Web".into())],
            negated: false,
        }));
        assert!(p.conditions.contains(&Condition {
            field: "state",
            op: Op::Exact,
            values: vec![Value::Number(99)],
            negated: true,
        }));
        assert!(p.conditions.contains(&Condition {
            field: "id",
            op: Op::In,
            values: vec![Value::Number(4), Value::Number(10)],
            negated: false,
        }));
        let p = read("search[active]=TRUE&search[id__range]=(1,5)&search[id__isnull]=false");
        assert_eq!(p.conditions.len(), 3, "{:?}", p.warnings);
    }

    #[test]
    fn what_cannot_be_used_is_a_warning_and_a_bad_value_an_error() {
        let p =
            read("search[nope]=1&search[name__gt]=a&search[id__range]=1&exclude[active__in]=true");
        assert!(p.conditions.is_empty());
        assert_eq!(p.warnings.len(), 4, "{:?}", p.warnings);
        assert!(
            p.warnings[0].starts_with("ExcludeFilterWarning")
                || p.warnings[0].starts_with("SearchFilterWarning")
        );
        let p = read("name__icontains=x");
        assert_eq!(p.conditions.len(), 1);
        assert!(p.warnings[0].starts_with("DeprecationWarning"));
        assert!(parse("search[id]=abc", FIELDS, ORDERS).is_err());
        assert!(parse("search[active]=maybe", FIELDS, ORDERS).is_err());
    }
}

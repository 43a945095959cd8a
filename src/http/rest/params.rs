//! CloudCIX's list parameters, read as its framework reads them: `search[field]=v` and
//! `search[field__op]=v` filter, `exclude[...]` the same negated (the old style
//! `field__op=v` and `exclude__field=v` still works, with a deprecation warning);
//! `order`, `limit` (default 50, at most 100) and `page` (from 0). What cannot be used
//! (an unknown field, an operator the field does not take, a range of one value) is
//! skipped with a warning for `_metadata.warnings`, never refused; a value the field
//! cannot hold (`search[id]=abc`) is refused (the list's `_001` code).

use std::collections::BTreeMap;

use chrono::NaiveDateTime;

use crate::db::listing::{Condition, Listing, Op, Value};

/// What a field holds, which decides its operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Text: `in icontains iendswith iexact istartswith`.
    Text,
    /// An integer: `gt gte in isnull lt lte range`.
    Number,
    /// A time, with a number's operators.
    Time,
    /// A boolean: exact match only.
    Flag,
}

fn op_named(name: &str) -> Option<Op> {
    Some(match name {
        "in" => Op::In,
        "icontains" => Op::IContains,
        "iendswith" => Op::IEndsWith,
        "iexact" => Op::IExact,
        "istartswith" => Op::IStartsWith,
        "gt" => Op::Gt,
        "gte" => Op::Gte,
        "lt" => Op::Lt,
        "lte" => Op::Lte,
        "range" => Op::Range,
        "isnull" => Op::IsNull,
        _ => return None,
    })
}

fn allowed(op: Op, kind: Kind) -> bool {
    use Op::*;
    match kind {
        Kind::Text => matches!(
            op,
            Exact | In | IContains | IEndsWith | IExact | IStartsWith
        ),
        Kind::Number | Kind::Time => {
            matches!(op, Exact | Gt | Gte | In | IsNull | Lt | Lte | Range)
        }
        Kind::Flag => op == Exact,
    }
}

/// A list's fields: the name CloudCIX gives each, what it holds, and the list's own.
pub type Fields<F> = [(&'static str, Kind, F)];

/// A list request, read.
#[derive(Clone, Debug)]
pub struct ListParams<F> {
    /// The filters, order and page as the database query takes them.
    pub listing: Listing<F>,
    /// The page asked for, from 0 (0 when absent, negative or unreadable), for `_metadata`.
    pub page: i64,
    /// The order in effect, as `_metadata` says it (`-name` descending).
    pub order: String,
    /// Why parameters were not used, or are old style, for `_metadata.warnings`.
    pub warnings: Vec<String>,
}

/// Most conditions a list request may carry (CloudCIX's lists have 14 fields at most),
/// and most values an `in` or a text may hold: a bound on what one request costs.
const MAX_CONDITIONS: usize = 32;
const MAX_VALUES: usize = 100;
const MAX_TEXT_BYTES: usize = 256;

/// Default and largest page.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 100;

/// Reads `query` for a list of `fields`, ordered by one of `orders` (the first is the
/// default). `Err` names a value its field cannot hold.
pub fn parse<F: Copy>(
    query: &str,
    fields: &Fields<F>,
    orders: &[(&'static str, F)],
) -> Result<ListParams<F>, String> {
    // The last value of a name wins, as in Django's QueryDict.
    let pairs: BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let (mut order, mut descending) = (orders[0], false);
    let (mut limit, mut page): (i64, i64) = (DEFAULT_LIMIT, 0);
    let mut filters = Filters::default();
    for (key, value) in &pairs {
        match key.as_str() {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .unwrap_or(DEFAULT_LIMIT);
            }
            "page" => page = value.parse().ok().filter(|n| *n >= 0).unwrap_or(0),
            "order" => {
                let (name, down) = match value.strip_prefix('-') {
                    Some(name) => (name, true),
                    None => (value.as_str(), false),
                };
                if let Some(found) = orders.iter().find(|(o, _)| *o == name) {
                    (order, descending) = (*found, down);
                }
            }
            _ => filters.add(key, value, fields)?,
        }
    }
    let Filters {
        conditions,
        warnings,
    } = filters.bounded()?;
    Ok(ListParams {
        listing: Listing {
            conditions,
            order: order.1,
            descending,
            limit,
            offset: page.saturating_mul(limit),
        },
        page,
        order: format!("{}{}", if descending { "-" } else { "" }, order.0),
        warnings,
    })
}

/// The filters of a list request, as they are read.
struct Filters<F> {
    /// The ones used, as the database query takes them.
    conditions: Vec<Condition<F>>,
    /// Why others are not used, or are old style.
    warnings: Vec<String>,
}

impl<F> Default for Filters<F> {
    fn default() -> Self {
        Self {
            conditions: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

impl<F: Copy> Filters<F> {
    /// Adds the filter `key=value` (`search[..]`, `exclude[..]` or the old style), or a
    /// warning saying why it is not used.
    fn add(&mut self, key: &str, value: &str, fields: &Fields<F>) -> Result<(), String> {
        let (filter, negated, old_style) = if let Some(inner) = deep(key, "search") {
            (inner, false, false)
        } else if let Some(inner) = deep(key, "exclude") {
            (inner, true, false)
        } else if let Some(inner) = key.strip_prefix("exclude__") {
            (inner, true, true)
        } else {
            (key, false, true)
        };
        match condition(filter, value, negated, fields)? {
            Some(condition) => {
                if old_style {
                    self.warnings.push(format!(
                        "DeprecationWarning: `{key}` is the old style; use `{}[{filter}]`.",
                        if negated { "exclude" } else { "search" }
                    ));
                }
                self.conditions.push(condition);
            }
            None => self.warnings.push(format!(
                "{}: the filter `{key}` is not used.",
                if negated {
                    "ExcludeFilterWarning"
                } else {
                    "SearchFilterWarning"
                }
            )),
        }
        Ok(())
    }

    /// These filters within their bounds: too many used ones are refused, and warnings
    /// past the bound are counted rather than listed.
    fn bounded(mut self) -> Result<Self, String> {
        if self.conditions.len() > MAX_CONDITIONS {
            return Err(format!("At most {MAX_CONDITIONS} filters are accepted."));
        }
        // Each unused name costs a line of the answer: a bound on what a long query string
        // can make the server write.
        if self.warnings.len() > MAX_CONDITIONS {
            let more = self.warnings.len() - MAX_CONDITIONS;
            self.warnings.truncate(MAX_CONDITIONS);
            self.warnings
                .push(format!("{more} more parameters are not used."));
        }
        Ok(self)
    }
}

/// `inner` of `name[inner]`.
fn deep<'k>(key: &'k str, name: &str) -> Option<&'k str> {
    key.strip_prefix(name)?
        .strip_prefix('[')?
        .strip_suffix(']')
        .filter(|inner| !inner.is_empty())
}

/// `filter` (`field` or `field__op`) with `raw`: `None` when it cannot be used.
/// One function: from a filter's text to a typed condition in steps that each may refuse
/// (field, operator, values, bounds); the last is one conversion per `Kind`.
fn condition<F: Copy>(
    filter: &str,
    raw: &str,
    negated: bool,
    fields: &Fields<F>,
) -> Result<Option<Condition<F>>, String> {
    // A field's own name may hold `__` (`vm__name`): the operator is the last part, if
    // it is one.
    let (name, op) = match filter.rsplit_once("__") {
        Some((name, op)) if op_named(op).is_some() => (name, op_named(op).unwrap()),
        _ => (filter, Op::Exact),
    };
    let Some(&(label, kind, field)) = fields.iter().find(|(f, _, _)| *f == name) else {
        return Ok(None);
    };
    if !allowed(op, kind) {
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
    if values.len() > MAX_VALUES || values.iter().any(|v| v.len() > MAX_TEXT_BYTES) {
        return Err(format!(
            "A filter on {label} may hold at most {MAX_VALUES} values of {MAX_TEXT_BYTES} bytes."
        ));
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
            // NUL cannot be stored in, nor compared with, PostgreSQL's text: no name holds
            // one, so a filter with one is refused rather than sent (it failed the request).
            Kind::Text if v.contains('\0') => {
                Err(format!("A filter on {label} cannot hold a NUL character."))
            }
            Kind::Text => Ok(Value::Text(v.to_owned())),
            Kind::Number => v
                .parse()
                .map(Value::Number)
                .map_err(|_| format!("{v:?} is not a value of {label}.")),
            Kind::Time => time(v)
                .map(Value::Time)
                .ok_or_else(|| format!("{v:?} is not a value of {label}.")),
            Kind::Flag => flag(v)
                .map(Value::Flag)
                .ok_or_else(|| format!("{v:?} is not a value of {label}.")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Condition {
        field,
        op,
        values,
        negated,
    }))
}

/// A date or a naive time as Django takes it (`2024-11-05`, `2024-11-05T12:07:47`,
/// `2024-11-05 12:07:47.123456`).
fn time(raw: &str) -> Option<NaiveDateTime> {
    [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok())
    .or_else(|| {
        chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    })
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

    const FIELDS: &Fields<&str> = &[
        ("id", Kind::Number, "id"),
        ("name", Kind::Text, "name"),
        ("vm__name", Kind::Text, "vm__name"),
        ("state", Kind::Number, "state"),
        ("active", Kind::Flag, "active"),
        ("created", Kind::Time, "created"),
    ];
    const ORDERS: &[(&str, &str)] = &[("id", "id"), ("name", "name"), ("state", "state")];

    fn read(query: &str) -> ListParams<&'static str> {
        parse(query, FIELDS, ORDERS).unwrap()
    }

    fn conditions(query: &str) -> Vec<Condition<&'static str>> {
        read(query).listing.conditions
    }

    #[test]
    fn paging_and_order_fall_back_as_cloudcix_does() {
        let p = read("");
        assert_eq!((p.listing.limit, p.page, p.order.as_str()), (50, 0, "id"));
        for bad in ["limit=0", "limit=101", "limit=x"] {
            assert_eq!(read(bad).listing.limit, 50, "{bad}");
        }
        assert_eq!(read("limit=100").listing.limit, 100);
        assert_eq!(read("page=-1").page, 0);
        let p = read("page=3&limit=20");
        assert_eq!((p.page, p.listing.offset), (3, 60));
        assert_eq!(read(&format!("page={}", i64::MAX)).listing.offset, i64::MAX);
        let p = read("order=-name");
        assert_eq!(
            (p.order.as_str(), p.listing.order, p.listing.descending),
            ("-name", "name", true)
        );
        assert_eq!(read("order=secret").order, "id");
    }

    #[test]
    fn filters_take_their_fields_operators() {
        let p = read("search[vm__name__icontains]=Web&exclude[state]=99&search[id__in]=[4,10]");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let p = p.listing;
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
        assert_eq!(p.listing.conditions.len(), 3, "{:?}", p.warnings);
        let c =
            conditions("search[created__gte]=2024-11-05&search[created__lt]=2024-11-05T12:07:47.5");
        assert_eq!(c.len(), 2);
        assert!(parse("search[created__gt]=yesterday", FIELDS, ORDERS).is_err());
    }

    #[test]
    fn what_cannot_be_used_is_a_warning_and_a_bad_value_an_error() {
        let p =
            read("search[nope]=1&search[name__gt]=a&search[id__range]=1&exclude[active__in]=true");
        assert!(p.listing.conditions.is_empty());
        assert_eq!(p.warnings.len(), 4, "{:?}", p.warnings);
        assert!(
            p.warnings[0].starts_with("ExcludeFilterWarning")
                || p.warnings[0].starts_with("SearchFilterWarning")
        );
        let p = read("name__icontains=x");
        assert_eq!(p.listing.conditions.len(), 1);
        assert!(p.warnings[0].starts_with("DeprecationWarning"));
        assert!(parse("search[id]=abc", FIELDS, ORDERS).is_err());
        assert!(parse("search[active]=maybe", FIELDS, ORDERS).is_err());
    }

    #[test]
    fn a_request_cannot_ask_for_unbounded_work() {
        let many: Vec<String> = (0..101).map(|n| n.to_string()).collect();
        assert!(
            parse(
                &format!("search[id__in]={}", many.join(",")),
                FIELDS,
                ORDERS
            )
            .is_err()
        );
        let long = "x".repeat(257);
        assert!(parse(&format!("search[name__icontains]={long}"), FIELDS, ORDERS).is_err());
        assert!(parse("search[name__icontains]=%00", FIELDS, ORDERS).is_err());
    }
}

//! Searching the message log: checking a [`MessageSearch`], and how both
//! stores find a page of it, the same way on SQLite and PostgreSQL, each
//! filter answered from an index (migrations: SQLite 11, PostgreSQL 7).
//!
//! # Matching
//!
//! * exact filters (AS2-From, AS2-To, MIME type) are `col = value`; the
//!   Message-ID matches the value with and without its angle brackets
//!   (`message_id IN (bare, <bare>)`);
//! * prefixes (subject, file name) are a range, `col >= p AND col < upper(p)`
//!   ([`prefix_upper`]), which an index answers where `LIKE` would not
//!   (SQLite's is case-insensitive and skips indexes; PostgreSQL's needs
//!   `text_pattern_ops`). PostgreSQL compares them `COLLATE "C"` (byte
//!   order, like SQLite's), and its indexes are built so;
//! * dispositions are the literals of the partial index on errors;
//! * dates are compared as text with the stored RFC 3339 UTC times, as
//!   whole seconds ([`time_bound`]);
//! * pages are `id < before_id ORDER BY id DESC LIMIT n`.
//!
//! # Finding a page ([`page`])
//!
//! With an exact filter (or errors only) the page is a backward walk of
//! that filter's index, which ends in the id: 50 index entries, whatever
//! the table holds. Prefixes and dates are ranges, whose index is not in id
//! order: reading it costs one entry per match, and the other way, reading
//! the newest rows until 50 match, costs one row per row skipped. Neither
//! planner can tell which is cheaper (matches are never spread evenly: a
//! date range is one run of ids, a partner's file names stop when it
//! does), so the store finds out, cheaply:
//!
//! 1. the newest [`WINDOW`] rows (below `before_id`) are read: when 50 of
//!    them match (a prefix common lately, a date range reaching today),
//!    that is the page;
//! 2. else, with an upper date bound, `messages_received_at` counts the
//!    rows received after it (those a walk from the newest skips first),
//!    and each range's index counts its matches, as far as it takes to
//!    compare (counting an index entry is cheaper than reading a row);
//! 3. the walk from the newest goes on below the window when its rows cost
//!    less ([`ROW_COST`]) than the narrowest range's matches; otherwise that
//!    range's index is read, keeping the newest ids (SQLite in the store:
//!    its sorter cost twice the read; PostgreSQL's top-N sort).
//!
//! A range of most of the table that ends well before the newest rows
//! remains the slowest case, either way about one index entry per match
//! (about 100 ms for 1,000,000 SQLite rows; `benches/message_search.rs`).
//!
//! Both stores run the statements this module writes; each backend says
//! how to force a plan ([`Dialect`]).

use super::{DispositionFilter, MessageSearch, Result, StoreError};

/// The page size when a search gives none (0).
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page a store returns.
pub const MAX_LIMIT: u32 = 1_000;
/// Rows read from the newest first before counting (step 1).
pub const WINDOW: i64 = 2_048;
/// Rows counted at most that a walk from the newest would skip (step 2):
/// past it, the walk is not worth it.
pub const SKIP_CAP: i64 = 100_000;
/// Matches counted at most per range when there is no walk to weigh
/// against (step 2).
pub const COUNT_CAP: i64 = 50_000;
/// What reading a row costs, in index entries read: rows hold receipts
/// (a kilobyte or more), an index entry a value and an id.
pub const ROW_COST: i64 = 8;

const CONTEXT: &str = "searching messages";

/// The forms a date of a search may take.
pub const DATE_FORMS: &str =
    "use RFC 3339 (2026-11-29T00:23:13Z, 2026-11-29T01:23:13+01:00), YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)";

/// A date bound of a search, in the form every stored `received_at`
/// compares with as text: `YYYY-MM-DDTHH:MM:SS`, UTC, without fraction
/// or `Z`. Stored times are `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, so a bound
/// is a prefix of every time inside its second: `received_at >= bound`
/// holds from the bound's second on (`...00:00:00.5Z` >= `...00:00:00`),
/// and `received_at < bound` stops before it. A bound with a fraction is
/// cut to its second (bounds are whole seconds). `YYYY-MM-DD` and
/// `YYYY-MM-DDTHH:MM` are UTC; an RFC 3339 offset is converted to UTC.
/// `field` names the bound in the error.
pub fn time_bound(field: &str, value: &str) -> Result<String> {
    use time::macros::format_description;
    let bad = || {
        StoreError::new(
            CONTEXT,
            format!("{field} {value:?} is not a date or time: {DATE_FORMS}"),
        )
    };
    let trimmed = value.trim();
    let utc = if trimmed.len() == 10 {
        time::Date::parse(trimmed, format_description!("[year]-[month]-[day]"))
            .map_err(|_| bad())?
            .midnight()
    } else if trimmed.len() == 16 {
        time::PrimitiveDateTime::parse(
            trimmed,
            format_description!("[year]-[month]-[day]T[hour]:[minute]"),
        )
        .map_err(|_| bad())?
    } else {
        let at =
            time::OffsetDateTime::parse(trimmed, &time::format_description::well_known::Rfc3339)
                .map_err(|_| bad())?
                .to_offset(time::UtcOffset::UTC);
        time::PrimitiveDateTime::new(at.date(), at.time())
    };
    if !(0..=9999).contains(&utc.year()) {
        return Err(bad());
    }
    utc.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]"
    ))
    .map_err(|_| bad())
}

/// The smallest string greater than every string starting with `prefix`
/// (in code point order, which is UTF-8 byte order): `prefix` with its last
/// character incremented, skipping the surrogate gap, carrying past
/// `char::MAX`. `None` when there is none (empty, or only `char::MAX`):
/// then `col >= prefix` alone is the prefix match.
pub fn prefix_upper(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            char::MAX => continue,
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(c as u32 + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A value bound into search SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Text(String),
    Int(i64),
}

/// How a backend writes what differs.
pub(crate) struct Dialect {
    /// The placeholder of the n-th value (from 1).
    pub placeholder: fn(usize) -> String,
    /// After a prefix-matched column, so that it compares in byte order.
    pub prefix_collation: &'static str,
    /// A column as an expression no index answers (a filter read from rows).
    pub unindexed: fn(&str) -> String,
    /// After `FROM messages`: read the rows in id order, no other index.
    pub no_index: &'static str,
    /// After `FROM messages`: read this index (`None`: see `index_order`).
    pub index_hint: fn(&str) -> Option<String>,
    /// The `ORDER BY` of a read through a range's index: one the primary
    /// key cannot serve, where there is no index hint.
    pub index_order: &'static str,
    /// A read through a range's index is unsorted, and the store keeps the
    /// newest ids itself ([`Runner::newest_ids`]).
    pub store_keeps_newest: bool,
}

impl Dialect {
    pub(crate) const SQLITE: Dialect = Dialect {
        placeholder: |n| format!("?{n}"),
        prefix_collation: "",
        unindexed: |column| format!("+{column}"),
        no_index: " NOT INDEXED",
        index_hint: |index| Some(format!(" INDEXED BY {index}")),
        index_order: "id DESC",
        store_keeps_newest: true,
    };
    pub(crate) const POSTGRES: Dialect = Dialect {
        placeholder: |n| format!("${n}"),
        prefix_collation: " COLLATE \"C\"",
        unindexed: |column| format!("({column} || '')"),
        no_index: "",
        index_hint: |_| None,
        index_order: "id + 0 DESC",
        store_keeps_newest: false,
    };
}

/// One filter of a search.
#[derive(Debug, Clone)]
enum Filter {
    /// `column = value`, answered by the column's index in id order.
    Exact {
        column: &'static str,
        value: String,
    },
    /// The Message-ID, bare and bracketed.
    MessageId(String),
    /// A prefix: `column >= low AND column < high`.
    Prefix {
        column: &'static str,
        index: &'static str,
        low: String,
        high: Option<String>,
    },
    Errors,
    Processed,
    /// `received_at >= from AND received_at < to` (whole-second bounds).
    Received {
        from: Option<String>,
        to: Option<String>,
    },
}

impl Filter {
    /// Answered by an index in id order (a page is a walk of it).
    fn walks(&self) -> bool {
        matches!(
            self,
            Filter::Exact { .. } | Filter::MessageId(_) | Filter::Errors
        )
    }

    /// A range's index, when the filter is a range.
    fn range_index(&self) -> Option<&'static str> {
        match self {
            Filter::Prefix { index, .. } => Some(index),
            Filter::Received { .. } => Some("messages_received_at"),
            _ => None,
        }
    }
}

/// Writes SQL conditions, numbering the values they bind.
struct Sql<'d> {
    dialect: &'d Dialect,
    values: Vec<Value>,
}

impl Sql<'_> {
    fn bind(&mut self, value: Value) -> String {
        self.values.push(value);
        (self.dialect.placeholder)(self.values.len())
    }

    /// The conditions of `filter`; `indexed`: as its index can answer.
    fn filter(&mut self, filter: &Filter, indexed: bool, out: &mut Vec<String>) {
        let column = |c: &str| {
            if indexed {
                c.to_string()
            } else {
                (self.dialect.unindexed)(c)
            }
        };
        match filter {
            Filter::Exact { column: c, value } => {
                let c = column(c);
                let p = self.bind(Value::Text(value.clone()));
                out.push(format!("{c} = {p}"));
            }
            Filter::MessageId(bare) => {
                let c = column("message_id");
                let a = self.bind(Value::Text(bare.clone()));
                let b = self.bind(Value::Text(format!("<{bare}>")));
                out.push(format!("{c} IN ({a}, {b})"));
            }
            Filter::Prefix {
                column: c,
                low,
                high,
                ..
            } => {
                let c = format!("{}{}", column(c), self.dialect.prefix_collation);
                let p = self.bind(Value::Text(low.clone()));
                out.push(format!("{c} >= {p}"));
                if let Some(high) = high {
                    let p = self.bind(Value::Text(high.clone()));
                    out.push(format!("{c} < {p}"));
                }
            }
            // The literal of the partial index `messages_errors`.
            Filter::Errors => out.push("disposition <> 'processed'".into()),
            Filter::Processed => out.push("disposition = 'processed'".into()),
            Filter::Received { from, to } => {
                let c = column("received_at");
                if let Some(from) = from {
                    let p = self.bind(Value::Text(from.clone()));
                    out.push(format!("{c} >= {p}"));
                }
                if let Some(to) = to {
                    let p = self.bind(Value::Text(to.clone()));
                    out.push(format!("{c} < {p}"));
                }
            }
        }
    }
}

/// A checked search: its filters, page and size.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    filters: Vec<Filter>,
    before_id: Option<i64>,
    limit: u32,
}

/// A statement and the values it binds.
pub(crate) type Statement = (String, Vec<Value>);

/// Ids in `[low, high]`, for [`Query::select_ids`].
#[derive(Debug, Clone, Copy)]
struct Ids {
    low: Option<i64>,
    high: Option<i64>,
}

/// How [`Query::select_ids`] reads.
#[derive(Debug, Clone, Copy)]
enum Read {
    /// As the planner likes, every filter indexable.
    Planned,
    /// Rows in id order, newest first, no other index.
    Newest,
    /// Through this range's index (the others read from rows).
    Index(usize),
}

impl Query {
    /// `SELECT id ..` of a page: the ids in `ids`, read as `read` says.
    fn select_ids(&self, dialect: &Dialect, ids: Ids, read: Read) -> Statement {
        let mut sql = Sql {
            dialect,
            values: Vec::new(),
        };
        let mut conditions = Vec::new();
        for (n, filter) in self.filters.iter().enumerate() {
            let indexed = match read {
                Read::Planned => true,
                Read::Newest => false,
                Read::Index(i) => i == n,
            };
            sql.filter(filter, indexed, &mut conditions);
        }
        if let Some(low) = ids.low {
            let p = sql.bind(Value::Int(low));
            conditions.push(format!("id >= {p}"));
        }
        if let Some(high) = ids.high {
            let p = sql.bind(Value::Int(high));
            conditions.push(format!("id <= {p}"));
        }
        let (hint, order) = match read {
            Read::Planned => (String::new(), "id DESC"),
            Read::Newest => (dialect.no_index.to_string(), "id DESC"),
            Read::Index(i) => {
                let index = self.filters[i].range_index().unwrap_or_default();
                match (dialect.index_hint)(index) {
                    Some(hint) => (hint, "id DESC"),
                    None => (String::new(), dialect.index_order),
                }
            }
        };
        let conditions = where_clause(&conditions);
        if matches!(read, Read::Index(_)) && dialect.store_keeps_newest {
            return (
                format!("SELECT id FROM messages{hint}{conditions}"),
                sql.values,
            );
        }
        let limit = sql.bind(Value::Int(i64::from(self.limit)));
        (
            format!("SELECT id FROM messages{hint}{conditions} ORDER BY {order} LIMIT {limit}"),
            sql.values,
        )
    }

    /// Counts, up to `cap`, the rows matching `filter` alone through its
    /// index.
    fn count(dialect: &Dialect, filter: &Filter, cap: i64) -> Statement {
        let mut sql = Sql {
            dialect,
            values: Vec::new(),
        };
        let mut conditions = Vec::new();
        sql.filter(filter, true, &mut conditions);
        let cap = sql.bind(Value::Int(cap));
        let hint = filter
            .range_index()
            .and_then(dialect.index_hint)
            .unwrap_or_default();
        (
            format!(
                "SELECT count(*) FROM (SELECT 1 FROM messages{hint}{} LIMIT {cap}) AS matching",
                where_clause(&conditions)
            ),
            sql.values,
        )
    }

    /// The highest id a page may hold: below `before_id`, or the newest.
    fn top(&self, runner: &mut dyn Runner) -> Result<i64> {
        match self.before_id {
            Some(before) => Ok(before.saturating_sub(1)),
            None => runner.number("SELECT coalesce(max(id), 0) FROM messages", &[]),
        }
    }

    /// Every statement [`page`] may run, with stand-in ids (for plans).
    pub(crate) fn statements(&self, dialect: &Dialect) -> Vec<Statement> {
        let everything = Ids {
            low: None,
            high: self.before_id.map(|b| b.saturating_sub(1)),
        };
        if !self.reads_ranges() {
            return vec![self.select_ids(dialect, everything, Read::Planned)];
        }
        let mut all = vec![self.select_ids(
            dialect,
            Ids {
                low: Some(1_000),
                high: Some(1_000 + WINDOW),
            },
            Read::Newest,
        )];
        let below = Ids {
            low: None,
            high: Some(999),
        };
        for (n, filter) in self.filters.iter().enumerate() {
            if filter.range_index().is_some() {
                all.push(Query::count(dialect, filter, COUNT_CAP));
                all.push(self.select_ids(dialect, below, Read::Index(n)));
            }
            if matches!(filter, Filter::Received { .. }) {
                all.push(self.newest_in_dates(dialect, filter, 999));
            }
        }
        if let Some(newer) = self.newer_filter() {
            all.push(Query::count(dialect, &newer, SKIP_CAP));
            all.push(self.select_ids(dialect, below, Read::Newest));
        }
        all
    }

    /// True when the page is found by [`page`]'s steps: ranges, and no
    /// filter whose index walks in id order.
    fn reads_ranges(&self) -> bool {
        !self.filters.iter().any(Filter::walks)
            && self.filters.iter().any(|f| f.range_index().is_some())
    }

    /// The id of the newest row received inside the dates of filter
    /// `received` (at most `high`), read backwards from the upper bound:
    /// ids follow times (but for commits reordering a few), so the page
    /// is likely among the ids just below it.
    fn newest_in_dates(&self, dialect: &Dialect, received: &Filter, high: i64) -> Statement {
        let mut sql = Sql {
            dialect,
            values: Vec::new(),
        };
        let mut conditions = Vec::new();
        sql.filter(received, true, &mut conditions);
        let p = sql.bind(Value::Int(high));
        conditions.push(format!("id <= {p}"));
        let hint = (dialect.index_hint)("messages_received_at").unwrap_or_default();
        (
            format!(
                "SELECT id FROM messages{hint}{} ORDER BY received_at DESC LIMIT 1",
                where_clause(&conditions)
            ),
            sql.values,
        )
    }

    /// The rows received at or after the upper date bound, if there is one.
    fn newer_filter(&self) -> Option<Filter> {
        self.filters.iter().find_map(|f| match f {
            Filter::Received { to: Some(to), .. } => Some(Filter::Received {
                from: Some(to.clone()),
                to: None,
            }),
            _ => None,
        })
    }
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

/// What a store runs the statements of a search with.
pub(crate) trait Runner {
    /// The ids a statement selects, in order.
    fn ids(&mut self, sql: &str, values: &[Value]) -> Result<Vec<i64>>;
    /// The one number a statement selects.
    fn number(&mut self, sql: &str, values: &[Value]) -> Result<i64>;
    /// The `n` highest ids a statement selects (in any order), highest
    /// first, for a [`Dialect`] whose store keeps the newest itself.
    fn newest_ids(&mut self, sql: &str, values: &[Value], n: usize) -> Result<Vec<i64>> {
        let mut ids = self.ids(sql, values)?;
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.truncate(n);
        Ok(ids)
    }
}

/// The ids of a page of `query`, newest first (see the module's notes).
pub(crate) fn page(query: &Query, dialect: &Dialect, runner: &mut dyn Runner) -> Result<Vec<i64>> {
    let run = |runner: &mut dyn Runner, (sql, values): Statement| runner.ids(&sql, &values);
    if !query.reads_ranges() {
        let high = query.before_id.map(|b| b.saturating_sub(1));
        return run(
            runner,
            query.select_ids(dialect, Ids { low: None, high }, Read::Planned),
        );
    }
    let top = query.top(runner)?;
    let window_low = top.saturating_sub(WINDOW - 1);
    // 1: the newest rows.
    let mut ids = run(
        runner,
        query.select_ids(
            dialect,
            Ids {
                low: Some(window_low),
                high: Some(top),
            },
            Read::Newest,
        ),
    )?;
    if ids.len() >= query.limit as usize || window_low <= 1 {
        return Ok(ids);
    }
    // 2: what each way would read. A walk from the newest is worth
    // weighing when it skips fewer than `SKIP_CAP` rows: then each range is
    // counted as far as that walk's cost in index entries.
    let walk_cost = match query.newer_filter() {
        Some(newer) => {
            let (sql, values) = Query::count(dialect, &newer, SKIP_CAP);
            let skipped = runner.number(&sql, &values)?;
            (skipped < SKIP_CAP).then(|| skipped.saturating_add(WINDOW) * ROW_COST)
        }
        None => None,
    };
    let cap = walk_cost.map_or(COUNT_CAP, |cost| cost + 1);
    let mut narrowest: Option<(usize, i64)> = None;
    for (n, filter) in query.filters.iter().enumerate() {
        if filter.range_index().is_none() {
            continue;
        }
        let (sql, values) = Query::count(dialect, filter, cap);
        let matches = runner.number(&sql, &values)?;
        if narrowest.is_none_or(|(_, fewest)| matches < fewest) {
            narrowest = Some((n, matches));
        }
    }
    // 3: the cheaper way, below the window.
    let below = Ids {
        low: None,
        high: Some(window_low - 1),
    };
    let read = match (narrowest, walk_cost) {
        (Some((_, matches)), Some(cost)) if cost < matches => Read::Newest,
        (Some((n, _)), _) => Read::Index(n),
        (None, _) => Read::Newest,
    };
    let rest = Query {
        limit: query.limit - ids.len() as u32,
        ..query.clone()
    };
    let read_ids = |runner: &mut dyn Runner, ids: Ids| {
        let (sql, values) = rest.select_ids(dialect, ids, read);
        if matches!(read, Read::Index(_)) && dialect.store_keeps_newest {
            runner.newest_ids(&sql, &values, rest.limit as usize)
        } else {
            runner.ids(&sql, &values)
        }
    };
    // Through the dates' index: first only the ids just below the newest
    // row inside the dates. A full page there is the page (every other
    // match has a smaller id); the index is still read whole, but few ids
    // leave it (SQLite: a third of the time).
    if let Read::Index(n) = read {
        if matches!(rest.filters[n], Filter::Received { .. }) {
            let (sql, values) = rest.newest_in_dates(dialect, &rest.filters[n], window_low - 1);
            if let Some(&newest) = runner.ids(&sql, &values)?.first() {
                let span = i64::from(rest.limit) * ROW_COST * 2 + WINDOW;
                let near = Ids {
                    low: Some(newest.saturating_sub(span)),
                    high: below.high,
                };
                let found = read_ids(runner, near)?;
                if found.len() >= rest.limit as usize {
                    ids.extend(found);
                    return Ok(ids);
                }
            } else {
                // Nothing inside the dates below the window.
                return Ok(ids);
            }
        }
    }
    ids.extend(read_ids(runner, below)?);
    Ok(ids)
}

/// `Some(value)` unless empty; refuses a NUL (PostgreSQL cannot hold one).
fn given<'a>(field: &str, value: &'a Option<String>) -> Result<Option<&'a str>> {
    match value.as_deref() {
        None | Some("") => Ok(None),
        Some(v) if v.contains('\0') => Err(StoreError::new(
            CONTEXT,
            format!("{field} contains a NUL character"),
        )),
        Some(v) => Ok(Some(v)),
    }
}

impl MessageSearch {
    /// Checks the search: an error names the field and what it accepts.
    pub fn validate(&self) -> Result<()> {
        self.query().map(|_| ())
    }

    /// The page size a store uses: the default for 0, at most [`MAX_LIMIT`].
    pub fn page_size(&self) -> u32 {
        match self.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        }
    }

    /// True when no filter is given (paging aside).
    pub fn is_unfiltered(&self) -> bool {
        matches!(self.query(), Ok(q) if q.filters.is_empty())
    }

    pub(crate) fn query(&self) -> Result<Query> {
        let mut filters = Vec::new();
        for (column, value) in [
            ("as2_from", &self.as2_from),
            ("as2_to", &self.as2_to),
            ("mime_type", &self.mime_type),
        ] {
            if let Some(v) = given(column, value)? {
                filters.push(Filter::Exact {
                    column,
                    value: v.into(),
                });
            }
        }
        if let Some(v) = given("message_id", &self.message_id)? {
            let v = v.trim();
            let bare = v
                .strip_prefix('<')
                .and_then(|v| v.strip_suffix('>'))
                .unwrap_or(v);
            filters.push(Filter::MessageId(bare.into()));
        }
        for (column, index, value) in [
            ("subject", "messages_subject", &self.subject),
            ("file_name", "messages_file_name", &self.file_name),
        ] {
            if let Some(prefix) = given(column, value)? {
                filters.push(Filter::Prefix {
                    column,
                    index,
                    low: prefix.into(),
                    high: prefix_upper(prefix),
                });
            }
        }
        match self.disposition {
            Some(DispositionFilter::Error) => filters.push(Filter::Errors),
            Some(DispositionFilter::Processed) => filters.push(Filter::Processed),
            None => {}
        }
        let from = given("received_from", &self.received_from)?
            .map(|v| time_bound("received_from", v))
            .transpose()?;
        let to = given("received_to", &self.received_to)?
            .map(|v| time_bound("received_to", v))
            .transpose()?;
        if from.is_some() || to.is_some() {
            filters.push(Filter::Received { from, to });
        }
        Ok(Query {
            filters,
            before_id: self.before_id,
            limit: self.page_size(),
        })
    }
}

/// The minute of a stored time: `YYYY-MM-DDTHH:MM`.
pub(crate) const MINUTE_CHARS: usize = 16;

/// Counts per key in the order of `order`: every key of `order` when
/// `all` (zero included), then any other key found, by name.
pub(crate) fn ordered_counts(
    counted: Vec<(String, u64)>,
    order: &[&str],
    all: bool,
) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = order
        .iter()
        .filter_map(|key| {
            let n = counted
                .iter()
                .find(|(k, _)| k == key)
                .map_or(0, |(_, n)| *n);
            (all || n > 0).then(|| (key.to_string(), n))
        })
        .collect();
    let mut others: Vec<(String, u64)> = counted
        .into_iter()
        .filter(|(k, _)| !order.contains(&k.as_str()))
        .collect();
    others.sort();
    out.extend(others);
    out
}

/// Messages per minute, oldest first, from counts per minute (in any
/// order, a minute perhaps more than once) and the errors per minute.
pub(crate) fn minutes(
    mut totals: Vec<(String, u64)>,
    errors: &[(String, u64)],
) -> Vec<super::MinuteCount> {
    totals.sort();
    let mut out: Vec<super::MinuteCount> = Vec::with_capacity(totals.len());
    for (minute, n) in totals {
        match out.last_mut() {
            Some(last) if last.minute == minute => last.messages += n,
            _ => out.push(super::MinuteCount {
                minute,
                messages: n,
                errors: 0,
            }),
        }
    }
    for (minute, n) in errors {
        if let Ok(i) = out.binary_search_by(|m| m.minute.as_str().cmp(minute)) {
            out[i].errors += n;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_upper_increments_the_last_character() {
        assert_eq!(prefix_upper("INV-").as_deref(), Some("INV."));
        assert_eq!(prefix_upper("a").as_deref(), Some("b"));
        assert_eq!(prefix_upper("z").as_deref(), Some("{"));
        assert_eq!(prefix_upper("é").as_deref(), Some("ê"));
        // One byte to two: U+007F to U+0080.
        assert_eq!(prefix_upper("x\u{7F}").as_deref(), Some("x\u{80}"));
        assert_eq!(prefix_upper("x\u{FFFF}").as_deref(), Some("x\u{10000}"));
        // The surrogate gap is skipped.
        assert_eq!(prefix_upper("x\u{D7FF}").as_deref(), Some("x\u{E000}"));
        // char::MAX carries into the character before it.
        assert_eq!(prefix_upper("ab\u{10FFFF}").as_deref(), Some("ac"));
        assert_eq!(prefix_upper("a\u{10FFFF}\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper("\u{10FFFF}"), None);
        assert_eq!(prefix_upper(""), None);
    }

    #[test]
    fn prefix_upper_bounds_exactly_the_strings_with_the_prefix() {
        let prefixes = [
            "a",
            "ab",
            "x\u{D7FF}",
            "x\u{7F}",
            "a\u{10FFFF}",
            "Z",
            "\u{10FFFF}",
        ];
        let samples = [
            "",
            "a",
            "a\u{0}",
            "aa",
            "ab",
            "abc",
            "ac",
            "b",
            "x",
            "x\u{D7FF}",
            "x\u{D7FF}!",
            "x\u{E000}",
            "x\u{7F}",
            "x\u{7F}z",
            "x\u{80}",
            "a\u{10FFFF}",
            "a\u{10FFFF}x",
            "b\u{0}",
            "Z",
            "Za",
            "[",
            "z",
            "\u{10FFFF}",
            "\u{10FFFF}a",
        ];
        for p in prefixes {
            let upper = prefix_upper(p);
            for s in samples {
                // Byte order of UTF-8 is code point order.
                let inside =
                    s.as_bytes() >= p.as_bytes() && upper.as_ref().is_none_or(|u| s < u.as_str());
                assert_eq!(inside, s.starts_with(p), "{p:?} {s:?} {upper:?}");
            }
        }
    }

    #[test]
    fn time_bounds_are_whole_utc_seconds() {
        let ok = |v: &str| time_bound("received_from", v).expect(v);
        assert_eq!(ok("2026-11-29"), "2026-11-29T00:00:00");
        assert_eq!(ok("2026-11-29T07:05"), "2026-11-29T07:05:00");
        assert_eq!(ok("2026-11-29T07:05:09Z"), "2026-11-29T07:05:09");
        assert_eq!(ok("2026-11-29T07:05:09.999999Z"), "2026-11-29T07:05:09");
        assert_eq!(ok("2026-11-29T01:05:09+02:00"), "2026-11-28T23:05:09");
        assert_eq!(ok(" 2026-11-29 "), "2026-11-29T00:00:00");
        for bad in [
            "yesterday",
            "2026-13-01",
            "2026-02-30",
            "2026-11-29T25:00",
            "2026-11-29 07:05",
            "29/11/2026",
            "2026-11-29T07:05:09",
            "0000-01-01T00:30:00+01:00",
            "",
        ] {
            let e = time_bound("received_to", bad).expect_err(bad);
            assert!(
                e.message.contains("received_to") && e.message.contains("YYYY-MM-DD"),
                "{e}"
            );
        }
        // Stored times compare right with a bound at their second.
        let bound = ok("2026-01-01T00:00:00Z");
        for (stored, at_or_after) in [
            ("2026-01-01T00:00:00Z", true),
            ("2026-01-01T00:00:00.5Z", true),
            ("2025-12-31T23:59:59.999999999Z", false),
            ("2025-12-31T23:59:59Z", false),
        ] {
            assert_eq!(stored >= bound.as_str(), at_or_after, "{stored}");
        }
    }

    fn search(set: impl FnOnce(&mut MessageSearch)) -> MessageSearch {
        let mut s = MessageSearch::default();
        set(&mut s);
        s
    }

    #[test]
    fn statements_bind_only_what_is_given() {
        let s = search(|s| {
            s.as2_from = Some("ACME".into());
            s.subject = Some(String::new());
            s.file_name = Some("INV".into());
            s.message_id = Some(" <1@x> ".into());
            s.disposition = Some(DispositionFilter::Error);
            s.before_id = Some(10);
        });
        let statements = s.query().expect("valid").statements(&Dialect::POSTGRES);
        assert_eq!(statements.len(), 1, "an exact filter walks its index");
        let (sql, values) = &statements[0];
        assert_eq!(
            sql,
            "SELECT id FROM messages WHERE as2_from = $1 AND message_id IN ($2, $3) \
             AND file_name COLLATE \"C\" >= $4 AND file_name COLLATE \"C\" < $5 \
             AND disposition <> 'processed' AND id <= $6 ORDER BY id DESC LIMIT $7"
        );
        assert_eq!(
            values,
            &[
                Value::Text("ACME".into()),
                Value::Text("1@x".into()),
                Value::Text("<1@x>".into()),
                Value::Text("INV".into()),
                Value::Text("INW".into()),
                Value::Int(9),
                Value::Int(i64::from(DEFAULT_LIMIT)),
            ]
        );
        assert!(!s.is_unfiltered());
        assert!(search(|s| {
            s.before_id = Some(3);
            s.subject = Some(String::new());
        })
        .is_unfiltered());
        let nul = search(|s| s.as2_to = Some("a\0b".into()));
        assert!(nul.validate().expect_err("NUL").message.contains("as2_to"));
        assert_eq!(search(|s| s.limit = 5_000).page_size(), MAX_LIMIT);
    }

    #[test]
    fn ranges_read_rows_or_their_index_as_told() {
        let s = search(|s| {
            s.file_name = Some("INV".into());
            s.received_to = Some("2026-01-02".into());
        });
        let all = s.query().expect("valid").statements(&Dialect::SQLITE);
        let sql: Vec<&str> = all.iter().map(|(sql, _)| sql.as_str()).collect();
        assert_eq!(
            sql,
            [
                "SELECT id FROM messages NOT INDEXED WHERE +file_name >= ?1 AND +file_name < ?2 \
                 AND +received_at < ?3 AND id >= ?4 AND id <= ?5 ORDER BY id DESC LIMIT ?6",
                "SELECT count(*) FROM (SELECT 1 FROM messages INDEXED BY messages_file_name \
                 WHERE file_name >= ?1 AND file_name < ?2 LIMIT ?3) AS matching",
                "SELECT id FROM messages INDEXED BY messages_file_name WHERE file_name >= ?1 \
                 AND file_name < ?2 AND +received_at < ?3 AND id <= ?4",
                "SELECT count(*) FROM (SELECT 1 FROM messages INDEXED BY messages_received_at \
                 WHERE received_at < ?1 LIMIT ?2) AS matching",
                "SELECT id FROM messages INDEXED BY messages_received_at WHERE +file_name >= ?1 \
                 AND +file_name < ?2 AND received_at < ?3 AND id <= ?4",
                "SELECT id FROM messages INDEXED BY messages_received_at WHERE received_at < ?1 \
                 AND id <= ?2 ORDER BY received_at DESC LIMIT 1",
                "SELECT count(*) FROM (SELECT 1 FROM messages INDEXED BY messages_received_at \
                 WHERE received_at >= ?1 LIMIT ?2) AS matching",
                "SELECT id FROM messages NOT INDEXED WHERE +file_name >= ?1 AND +file_name < ?2 \
                 AND +received_at < ?3 AND id <= ?4 ORDER BY id DESC LIMIT ?5",
            ]
        );
        let pg = s.query().expect("valid").statements(&Dialect::POSTGRES);
        assert_eq!(
            pg[2].0,
            "SELECT id FROM messages WHERE file_name COLLATE \"C\" >= $1 \
             AND file_name COLLATE \"C\" < $2 AND (received_at || '') < $3 AND id <= $4 \
             ORDER BY id + 0 DESC LIMIT $5"
        );
    }

    /// Answers from a list of (id, file name, received) rows, as a store
    /// would, recording which statements ran.
    struct Rows {
        rows: Vec<(i64, &'static str, &'static str)>,
        ran: Vec<String>,
    }

    impl Runner for Rows {
        fn ids(&mut self, sql: &str, values: &[Value]) -> Result<Vec<i64>> {
            self.ran.push(sql.to_string());
            let text = |i: usize| match &values[i] {
                Value::Text(t) => t.clone(),
                Value::Int(_) => panic!("text expected"),
            };
            let int = |i: usize| match &values[i] {
                Value::Int(n) => *n,
                Value::Text(_) => panic!("int expected"),
            };
            // Only the shapes of this test: a file name prefix, ids, limit.
            let (low, high) = (text(0), text(1));
            let n = values.len();
            let (limit, n) = if sql.contains("LIMIT") {
                (int(n - 1) as usize, n - 1)
            } else {
                (usize::MAX, n)
            };
            let (id_low, id_high) = if sql.contains("id >= ") {
                (int(n - 2), int(n - 1))
            } else {
                (i64::MIN, int(n - 1))
            };
            let mut ids: Vec<i64> = self
                .rows
                .iter()
                .filter(|(id, name, _)| {
                    *name >= low.as_str()
                        && *name < high.as_str()
                        && (id_low..=id_high).contains(id)
                })
                .map(|(id, _, _)| *id)
                .collect();
            ids.sort_by(|a, b| b.cmp(a));
            ids.truncate(limit);
            Ok(ids)
        }

        fn number(&mut self, sql: &str, values: &[Value]) -> Result<i64> {
            self.ran.push(sql.to_string());
            if sql.contains("max(id)") {
                return Ok(self.rows.iter().map(|r| r.0).max().unwrap_or(0));
            }
            let (Value::Text(low), Value::Text(high)) = (&values[0], &values[1]) else {
                panic!("a prefix count");
            };
            Ok(self
                .rows
                .iter()
                .filter(|(_, name, _)| name >= &low.as_str() && name < &high.as_str())
                .count() as i64)
        }
    }

    #[test]
    fn a_page_is_the_newest_rows_or_continues_below_them() {
        let rows = (1..=5_000)
            .map(|id| (id, if id % 1_000 == 7 { "OLD" } else { "NEW" }, ""))
            .collect();
        let mut runner = Rows {
            rows,
            ran: Vec::new(),
        };
        // Common lately: the window holds the page.
        let newest = search(|s| {
            s.file_name = Some("NEW".into());
            s.limit = 3;
        });
        let ids = page(&newest.query().unwrap(), &Dialect::SQLITE, &mut runner).unwrap();
        assert_eq!(ids, [5_000, 4_999, 4_998]);
        assert_eq!(runner.ran.len(), 2, "{:?}", runner.ran);
        // Rare: one in the window, the rest through the index below it.
        runner.ran.clear();
        let old = search(|s| {
            s.file_name = Some("OLD".into());
            s.limit = 3;
        });
        let ids = page(&old.query().unwrap(), &Dialect::SQLITE, &mut runner).unwrap();
        assert_eq!(ids, [4_007, 3_007, 2_007]);
        assert!(runner
            .ran
            .last()
            .unwrap()
            .contains("INDEXED BY messages_file_name"));
        // Below an id.
        let before = search(|s| {
            s.file_name = Some("OLD".into());
            s.before_id = Some(3_007);
        });
        let ids = page(&before.query().unwrap(), &Dialect::SQLITE, &mut runner).unwrap();
        assert_eq!(ids, [2_007, 1_007, 7]);
    }

    /// Answers counts from a list, records the statements.
    struct Counts {
        numbers: Vec<i64>,
        ran: Vec<String>,
    }

    impl Runner for Counts {
        fn ids(&mut self, sql: &str, _: &[Value]) -> Result<Vec<i64>> {
            self.ran.push(sql.to_string());
            Ok(Vec::new())
        }

        fn number(&mut self, sql: &str, values: &[Value]) -> Result<i64> {
            self.ran.push(format!("{sql} {values:?}"));
            Ok(self.numbers.remove(0))
        }
    }

    /// Below the window, the rows newer than the upper date bound are
    /// weighed against the matches: few skipped, many matching, the walk
    /// goes on; many skipped, the index.
    #[test]
    fn the_cheaper_way_is_taken_below_the_window() {
        let until = search(|s| s.received_to = Some("2026-01-02".into()));
        let query = until.query().unwrap();
        let walk = (1_000 + WINDOW) * ROW_COST;
        // Newest id, rows skipped, matches (counted as far as the walk's cost).
        let mut runner = Counts {
            numbers: vec![1_000_000, 1_000, walk + 1],
            ran: Vec::new(),
        };
        page(&query, &Dialect::SQLITE, &mut runner).unwrap();
        assert!(
            runner.ran[2].contains("received_at >= ?1") && runner.ran[2].contains("Int(100000)"),
            "{:?}",
            runner.ran
        );
        assert!(
            runner.ran[3].contains(&format!("Int({})", walk + 1)),
            "{:?}",
            runner.ran
        );
        assert!(
            runner.ran[4].starts_with("SELECT id FROM messages NOT INDEXED")
                && runner.ran[4].contains("id <= ?2"),
            "{:?}",
            runner.ran
        );
        let mut runner = Counts {
            numbers: vec![1_000_000, SKIP_CAP, 40_000],
            ran: Vec::new(),
        };
        page(&query, &Dialect::SQLITE, &mut runner).unwrap();
        assert!(
            runner.ran[3].contains(&format!("Int({COUNT_CAP})")),
            "{:?}",
            runner.ran
        );
        // The newest row inside the dates first (none here: nothing more).
        assert!(
            runner.ran[4].contains("INDEXED BY messages_received_at")
                && runner.ran[4].ends_with("ORDER BY received_at DESC LIMIT 1"),
            "{:?}",
            runner.ran
        );
        assert_eq!(runner.ran.len(), 5);
        let mut runner = Counts {
            numbers: vec![1_000_000, 1_000, walk - 1],
            ran: Vec::new(),
        };
        page(&query, &Dialect::SQLITE, &mut runner).unwrap();
        assert!(
            runner.ran[4].contains("INDEXED BY messages_received_at"),
            "{:?}",
            runner.ran
        );
    }

    #[test]
    fn counts_follow_the_given_order() {
        let counted = vec![
            ("b".to_string(), 2),
            ("zz".to_string(), 1),
            ("a".to_string(), 3),
        ];
        assert_eq!(
            ordered_counts(counted.clone(), &["a", "c", "b"], true),
            [
                ("a".into(), 3),
                ("c".into(), 0),
                ("b".into(), 2),
                ("zz".into(), 1)
            ]
        );
        assert_eq!(
            ordered_counts(counted, &["a", "c", "b"], false),
            [("a".into(), 3), ("b".into(), 2), ("zz".into(), 1)]
        );
    }

    #[test]
    fn minutes_are_counted_in_order() {
        let totals = vec![
            ("2026-01-01T10:02".to_string(), 1),
            ("2026-01-01T10:00".to_string(), 1),
            ("2026-01-01T10:01".to_string(), 1),
            ("2026-01-01T10:00".to_string(), 1),
        ];
        let counted = minutes(totals, &[("2026-01-01T10:02".into(), 1)]);
        let got: Vec<(&str, u64, u64)> = counted
            .iter()
            .map(|m| (m.minute.as_str(), m.messages, m.errors))
            .collect();
        assert_eq!(
            got,
            [
                ("2026-01-01T10:00", 2, 0),
                ("2026-01-01T10:01", 1, 0),
                ("2026-01-01T10:02", 1, 1)
            ]
        );
    }
}

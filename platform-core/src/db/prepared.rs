//! Hand-written SQL that PostgreSQL plans once per connection.
//!
//! diesel's [`diesel::sql_query`] sends its text as an unnamed statement every time, so the
//! server parses and plans it on every call: for a statement with a few joins or CTEs that
//! costs more than running it. [`PreparedSql`] takes the same text and binds, but is kept in
//! the connection's statement cache (keyed by its text), so each connection prepares it once.

use diesel::expression::AsExpression;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{HasSqlType, Untyped};
use diesel::{QueryResult, result::Error};

/// One bound value, as diesel writes it into a statement.
type Bind = Box<dyn QueryFragment<Pg> + Send + Sync>;

/// SQL with `$1`, `$2`, … placeholders and their values, run as a prepared statement that
/// each connection keeps (see the module docs). Use it as [`diesel::sql_query`]'s result:
/// `load`, `get_result` and `execute` of diesel-async's `RunQueryDsl`, with rows read through
/// `QueryableByName`.
///
/// `$N` is the N-th [`PreparedSql::bind`]; a placeholder may appear more than once. The text
/// must hold no other `$` (no dollar-quoted strings).
///
/// ```
/// use diesel::sql_types::{BigInt, Text};
/// use platform_core::db::PreparedSql;
///
/// let query = PreparedSql::new("SELECT $1::text AS name WHERE $2 > 0 AND $2 < 10")
///     .bind::<Text, _>("hook".to_owned())
///     .bind::<BigInt, _>(3_i64);
/// assert_eq!(query.sql(), "SELECT $1::text AS name WHERE $2 > 0 AND $2 < 10");
/// ```
pub struct PreparedSql {
    sql: &'static str,
    binds: Vec<Bind>,
}

impl std::fmt::Debug for PreparedSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The values may be secrets: only how many there are is shown.
        f.debug_struct("PreparedSql")
            .field("sql", &self.sql)
            .field("binds", &self.binds.len())
            .finish()
    }
}

impl PreparedSql {
    /// The statement `sql`, with nothing bound yet.
    pub fn new(sql: &'static str) -> Self {
        Self { sql, binds: Vec::new() }
    }

    /// Binds the next placeholder to `value`, as the SQL type `ST`.
    #[must_use]
    pub fn bind<ST, T>(mut self, value: T) -> Self
    where
        T: AsExpression<ST>,
        T::Expression: QueryFragment<Pg> + Send + Sync + 'static,
        ST: diesel::sql_types::SqlType + diesel::expression::TypedExpressionType,
        Pg: HasSqlType<ST>,
    {
        self.binds.push(Box::new(value.as_expression()));
        self
    }

    /// The statement's text.
    pub fn sql(&self) -> &'static str {
        self.sql
    }
}

impl QueryFragment<Pg> for PreparedSql {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let mut rest = self.sql;
        while let Some(at) = rest.find('$') {
            out.push_sql(&rest[..at]);
            let digits = rest[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
            let number: usize = rest[at + 1..at + 1 + digits].parse().map_err(|_| {
                Error::QueryBuilderError(
                    format!("a `$` not followed by a placeholder number in: {}", self.sql).into(),
                )
            })?;
            let bind =
                number.checked_sub(1).and_then(|index| self.binds.get(index)).ok_or_else(|| {
                    Error::QueryBuilderError(
                        format!(
                            "${number} has no value ({} bound) in: {}",
                            self.binds.len(),
                            self.sql
                        )
                        .into(),
                    )
                })?;
            // Writes the server's own placeholder and collects the value, in order.
            bind.walk_ast(out.reborrow())?;
            rest = &rest[at + 1 + digits..];
        }
        out.push_sql(rest);
        Ok(())
    }
}

impl QueryId for PreparedSql {
    type QueryId = ();
    // Not a type-level id: the cache keys it by its text and bind types instead.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for PreparedSql {
    type SqlType = Untyped;
}

#[cfg(test)]
mod tests {
    use diesel::pg::{Pg, PgQueryBuilder};
    use diesel::query_builder::{QueryBuilder as _, QueryFragment as _};
    use diesel::sql_types::{BigInt, Text};

    use super::PreparedSql;

    fn rendered(query: &PreparedSql) -> diesel::QueryResult<String> {
        let mut builder = PgQueryBuilder::default();
        query.to_sql(&mut builder, &Pg)?;
        Ok(builder.finish())
    }

    #[test]
    fn each_placeholder_takes_its_value_again_where_it_repeats() -> diesel::QueryResult<()> {
        let query = PreparedSql::new("SELECT $2, $1 WHERE $2 > 0")
            .bind::<Text, _>("a".to_owned())
            .bind::<BigInt, _>(7_i64);
        assert_eq!(rendered(&query)?, "SELECT $1, $2 WHERE $3 > 0");
        let shown = diesel::debug_query::<Pg, _>(&query).to_string();
        assert!(shown.ends_with("-- binds: [7, \"a\", 7]"), "{shown}");
        Ok(())
    }

    #[test]
    fn a_placeholder_without_a_value_is_an_error_naming_it() {
        let query = PreparedSql::new("SELECT $1, $3").bind::<BigInt, _>(1_i64);
        let error = rendered(&query).err().map(|error| error.to_string()).unwrap_or_default();
        assert!(error.contains("$3 has no value (1 bound)"), "{error}");
        let query = PreparedSql::new("SELECT $x");
        let error = rendered(&query).err().map(|error| error.to_string()).unwrap_or_default();
        assert!(error.contains("not followed by a placeholder number"), "{error}");
    }
}

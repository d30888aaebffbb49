//! Raw SQL that the connection may keep prepared, on either backend.
//!
//! diesel marks every `sql_query` unsafe to cache, because its text may be
//! built from anything; each execution then pays a Parse (a round trip on
//! PostgreSQL, a compile on SQLite). The texts synckit runs come from a
//! fixed set (constants, or one of a few shapes chosen by the filter), so
//! caching them by text is safe; on PostgreSQL
//! `Config::prepared_statements` decides whether the connection does.
//!
//! Placeholders are written `$1, $2, ...` for both backends; each becomes
//! the backend's own (`$n` or `?`).

use std::borrow::Cow;
use std::marker::PhantomData;

use diesel::QueryResult;
use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Untyped};

/// A SQL text and its bind values, for backend `DB`.
pub(crate) struct Statement<'f, DB: Backend> {
    sql: Cow<'static, str>,
    binds: Vec<Box<dyn QueryFragment<DB> + Send + 'f>>,
}

struct Bind<ST, U> {
    value: U,
    sql_type: PhantomData<ST>,
}

impl<DB, ST, U> QueryFragment<DB> for Bind<ST, U>
where
    DB: Backend + HasSqlType<ST>,
    U: ToSql<ST, DB>,
{
    fn walk_ast<'b>(&'b self, mut pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        pass.push_bind_param::<ST, U>(&self.value)
    }
}

impl<'f, DB: Backend> Statement<'f, DB> {
    /// A statement with this text, from synckit's fixed set (a constant is
    /// not copied).
    /// The same binds with another SQL text (built beside them).
    pub(crate) fn with_sql(mut self, sql: impl Into<Cow<'static, str>>) -> Self {
        self.sql = sql.into();
        self
    }

    pub(crate) fn new(sql: impl Into<Cow<'static, str>>) -> Self {
        Statement {
            sql: sql.into(),
            binds: Vec::new(),
        }
    }

    /// Binds the next `$n` parameter.
    pub(crate) fn bind<ST, U>(mut self, value: U) -> Self
    where
        DB: HasSqlType<ST>,
        U: ToSql<ST, DB> + Send + 'f,
        ST: Send + 'f,
    {
        self.binds.push(Box::new(Bind {
            value,
            sql_type: PhantomData::<ST>,
        }));
        self
    }
}

impl<DB: Backend> QueryFragment<DB> for Statement<'_, DB> {
    /// Writes the text with each `$n` replaced by the `n`-th bind, which
    /// writes its own placeholder. synckit's statements use `$1, $2, ...`
    /// once each, in order, so the text sent is the text written.
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let mut rest: &str = &self.sql;
        let mut binds = self.binds.iter();
        while let Some(at) = rest.find('$') {
            let digits = rest[at + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            if digits == 0 {
                out.push_sql(&rest[..=at]);
                rest = &rest[at + 1..];
                continue;
            }
            out.push_sql(&rest[..at]);
            let bind = binds.next().ok_or_else(|| {
                diesel::result::Error::QueryBuilderError(
                    format!("statement has more placeholders than binds: {}", self.sql).into(),
                )
            })?;
            bind.walk_ast(out.reborrow())?;
            rest = &rest[at + 1 + digits..];
        }
        out.push_sql(rest);
        Ok(())
    }
}

impl<DB: Backend> QueryId for Statement<'_, DB> {
    type QueryId = ();
    // Cached by SQL text (and bind types), not by a static type id.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB: Backend> Query for Statement<'_, DB> {
    type SqlType = Untyped;
}

// diesel's synchronous connections run only queries that opt in.
#[cfg(feature = "sqlite")]
impl<DB: Backend, Conn> diesel::RunQueryDsl<Conn> for Statement<'_, DB> {}

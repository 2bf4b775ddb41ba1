//! The `users` table.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

diesel::table! {
    /// Accounts.
    users (id) {
        /// The user's id.
        id -> Int8,
        /// The name, unique without regard to case.
        username -> Text,
        /// The address, unique without regard to case.
        email -> Text,
        /// The argon2id hash of the password, in PHC form.
        password_hash -> Text,
        /// Whether the user administers the platform.
        is_admin -> Bool,
        /// When the address was verified.
        email_verified_at -> Nullable<Timestamptz>,
        /// When the account was created.
        created_at -> Timestamptz,
        /// When the account last changed.
        updated_at -> Timestamptz,
    }
}

/// A row of `users`, including the password hash: never serialize it; answer with [`User`].
#[derive(Clone, Debug, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = users)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct UserRecord {
    /// The user's id.
    pub id: i64,
    /// The name.
    pub username: String,
    /// The address.
    pub email: String,
    /// The argon2id hash.
    pub password_hash: String,
    /// Whether the user administers the platform.
    pub is_admin: bool,
    /// When the address was verified.
    pub email_verified_at: Option<DateTime<Utc>>,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// When the account last changed.
    pub updated_at: DateTime<Utc>,
}

/// A user as the API shows it: no password hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct User {
    /// The user's id.
    pub id: i64,
    /// The name.
    pub username: String,
    /// The address.
    pub email: String,
    /// Whether the user administers the platform.
    pub is_admin: bool,
    /// Whether the address was verified.
    pub email_verified: bool,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
}

impl From<&UserRecord> for User {
    fn from(record: &UserRecord) -> Self {
        Self {
            id: record.id,
            username: record.username.clone(),
            email: record.email.clone(),
            is_admin: record.is_admin,
            email_verified: record.email_verified_at.is_some(),
            created_at: record.created_at,
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = users)]
struct NewUser<'a> {
    username: &'a str,
    email: &'a str,
    password_hash: &'a str,
}

/// The error returned by user queries.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The name or address belongs to another account.
    #[error("{field} is already taken")]
    Taken {
        /// `username` or `email`.
        field: &'static str,
    },
    /// The query failed.
    #[error("user query failed")]
    Query(#[from] DieselError),
}

/// Inserts a user whose password is already hashed.
///
/// # Errors
///
/// [`UserError::Taken`] when the name or address is used by another account, in any case.
pub async fn create(
    conn: &mut AsyncPgConnection,
    username: &str,
    email: &str,
    password_hash: &str,
) -> Result<UserRecord, UserError> {
    diesel::insert_into(users::table)
        .values(NewUser { username, email, password_hash })
        .returning(UserRecord::as_returning())
        .get_result(conn)
        .await
        .map_err(|error| match &error {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                let field = if info.constraint_name() == Some("users_email_lower_key") {
                    "email"
                } else {
                    "username"
                };
                UserError::Taken { field }
            }
            _ => UserError::Query(error),
        })
}

/// Finds the user whose name or address is `login`, without regard to case.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn find_by_login(
    conn: &mut AsyncPgConnection,
    login: &str,
) -> Result<Option<UserRecord>, UserError> {
    Ok(diesel::sql_query(
        "SELECT * FROM users WHERE lower(username) = lower($1) OR lower(email) = lower($1) LIMIT 1",
    )
    .bind::<Text, _>(login)
    .get_result(conn)
    .await
    .optional()?)
}

/// Finds the user named `username`, without regard to case.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn find_by_username(
    conn: &mut AsyncPgConnection,
    username: &str,
) -> Result<Option<UserRecord>, UserError> {
    Ok(diesel::sql_query("SELECT * FROM users WHERE lower(username) = lower($1)")
        .bind::<Text, _>(username)
        .get_result(conn)
        .await
        .optional()?)
}

/// Finds a user by id.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn find_by_id(
    conn: &mut AsyncPgConnection,
    id: i64,
) -> Result<Option<UserRecord>, UserError> {
    Ok(diesel::sql_query("SELECT * FROM users WHERE id = $1")
        .bind::<BigInt, _>(id)
        .get_result(conn)
        .await
        .optional()?)
}

/// Finds the user whose address is `email`, without regard to case.
///
/// # Errors
///
/// Fails when the query fails.
pub async fn find_by_email(
    conn: &mut AsyncPgConnection,
    email: &str,
) -> Result<Option<UserRecord>, UserError> {
    Ok(diesel::sql_query("SELECT * FROM users WHERE lower(email) = lower($1)")
        .bind::<Text, _>(email)
        .get_result(conn)
        .await
        .optional()?)
}

/// Replaces a user's password hash.
///
/// # Errors
///
/// Fails when the update does.
pub async fn set_password_hash(
    conn: &mut AsyncPgConnection,
    id: i64,
    hash: &str,
) -> Result<(), UserError> {
    diesel::update(users::table.find(id))
        .set((users::password_hash.eq(hash), users::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Records that a user's address is verified.
///
/// # Errors
///
/// Fails when the update does.
pub async fn mark_email_verified(conn: &mut AsyncPgConnection, id: i64) -> Result<(), UserError> {
    diesel::update(users::table.find(id))
        .set((
            users::email_verified_at.eq(diesel::dsl::now),
            users::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

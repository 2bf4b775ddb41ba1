//! Users, keys and grants from a file or from code: the [`Authenticator`] and [`RepoAccess`] of a
//! program that has no user database, such as a CI system, an internal tool or a test harness.
//!
//! The file is TOML:
//!
//! ```toml
//! # Repositories anyone may clone, signed in or not.
//! anonymous_read = ["public/*"]
//!
//! [[users]]
//! name = "ada"
//! # An argon2 PHC string, as `LocalUsers::hash_password` makes one; without it, no password.
//! password = "$argon2id$v=19$m=19456,t=2,p=1$…"
//! # Access tokens, as the hex SHA-256 of each (`LocalUsers::hash_token`).
//! tokens = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
//! # SSH public keys, as in `authorized_keys`.
//! keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ada@laptop"]
//! read = ["team/*"]
//! write = ["shared/tools"]
//! admin = false
//! ```
//!
//! Each user owns the repositories under their own name (`ada/*`): they may do anything there.
//! `write` and `read` name others, as `owner/name` with `*` matching any run of characters
//! (`team/*`, `*`); names compare without regard to case. An `admin` owns every repository.
//! Anything else is not found. Keys are read only with the `ssh` feature, which is what uses
//! them.
//!
//! Nothing is counted or limited here: a program exposed to the Internet should put sign-in
//! limits in front (or implement [`Authenticator`] with its own). Unknown users still cost one
//! password verification, so response times do not tell which names exist.
//!
//! ```
//! use platform_git::local::LocalUsers;
//!
//! let users = LocalUsers::from_toml(r#"
//!     anonymous_read = ["public/*"]
//!     [[users]]
//!     name = "ada"
//!     tokens = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
//! "#)?;
//! assert_eq!(users.len(), 1);
//! # Ok::<(), platform_git::local::LocalUsersError>(())
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::backend::{
    Authenticator, BoxError, GitRepository, GitUser, Identity, RepoAccess, SignIn,
};
use crate::permissions::Access;

/// The error returned when users cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LocalUsersError {
    /// The file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not TOML of the expected shape.
    #[error("invalid users file{}: {message}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Parse {
        /// The file, when read from one.
        path: Option<PathBuf>,
        /// What is wrong and where.
        message: String,
    },
    /// A user's entry is wrong.
    #[error("user {user:?}: {problem}")]
    User {
        /// The user's name.
        user: String,
        /// What is wrong (never a secret).
        problem: String,
    },
}

/// One user, as the file or code describes them.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalUser {
    /// The user name (also the owner name of their own repositories).
    pub name: String,
    /// The password as an argon2 PHC string ([`LocalUsers::hash_password`]), if they have one.
    #[serde(default)]
    pub password: Option<String>,
    /// Access tokens as hex SHA-256 digests ([`LocalUsers::hash_token`]).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// SSH public keys in `authorized_keys` form.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Repositories (`owner/name`, `*` globs) they may read.
    #[serde(default)]
    pub read: Vec<String>,
    /// Repositories (`owner/name`, `*` globs) they may push to.
    #[serde(default)]
    pub write: Vec<String>,
    /// Whether they own every repository.
    #[serde(default)]
    pub admin: bool,
}

impl LocalUser {
    /// A user called `name` with no credentials and no grants yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), ..Self::default() }
    }

    /// Adds a password, hashed here (argon2id: this takes a moment on purpose).
    ///
    /// # Errors
    ///
    /// Fails only if the hasher rejects its parameters, which the defaults never cause.
    pub fn with_password(mut self, password: &str) -> Result<Self, LocalUsersError> {
        self.password =
            Some(LocalUsers::hash_password(password).map_err(|error| LocalUsersError::User {
                user: self.name.clone(),
                problem: error,
            })?);
        Ok(self)
    }

    /// Adds an access token (kept as its SHA-256 only).
    #[must_use]
    pub fn with_token(mut self, token: &str) -> Self {
        self.tokens.push(LocalUsers::hash_token(token));
        self
    }

    /// Adds an SSH public key in `authorized_keys` form.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.keys.push(key.into());
        self
    }

    /// Lets them read repositories matching `pattern`.
    #[must_use]
    pub fn can_read(mut self, pattern: impl Into<String>) -> Self {
        self.read.push(pattern.into());
        self
    }

    /// Lets them push to repositories matching `pattern`.
    #[must_use]
    pub fn can_write(mut self, pattern: impl Into<String>) -> Self {
        self.write.push(pattern.into());
        self
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    anonymous_read: Vec<String>,
    #[serde(default)]
    users: Vec<LocalUser>,
}

#[derive(Debug)]
struct Users {
    users: Vec<LocalUser>,
    anonymous_read: Vec<String>,
    by_name: HashMap<String, usize>,
    by_fingerprint: HashMap<String, usize>,
}

/// Users, their credentials and their grants, held in memory (see the module docs).
///
/// Cloning is cheap: clones share the users.
#[derive(Clone, Debug)]
pub struct LocalUsers {
    inner: Arc<Users>,
}

impl LocalUsers {
    /// Reads users from a TOML file.
    ///
    /// # Errors
    ///
    /// Names the file and what is wrong in it.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, LocalUsersError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| LocalUsersError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, Some(path))
    }

    /// Reads users from TOML text.
    ///
    /// # Errors
    ///
    /// Says what is wrong and where.
    pub fn from_toml(text: &str) -> Result<Self, LocalUsersError> {
        Self::parse(text, None)
    }

    fn parse(text: &str, path: Option<&Path>) -> Result<Self, LocalUsersError> {
        let file: UsersFile = toml::from_str(text).map_err(|error| LocalUsersError::Parse {
            path: path.map(Path::to_owned),
            message: error.message().to_owned()
                + &error
                    .span()
                    .map(|span| {
                        let line = text[..span.start].matches('\n').count() + 1;
                        format!(" (line {line})")
                    })
                    .unwrap_or_default(),
        })?;
        Self::new(file.users, file.anonymous_read)
    }

    /// Holds `users`; anyone may read repositories matching `anonymous_read`.
    ///
    /// # Errors
    ///
    /// A user whose name repeats another's, whose password is not a PHC string, whose token is
    /// not a hex SHA-256, or (with the `ssh` feature) whose key cannot be read.
    pub fn new(
        users: Vec<LocalUser>,
        anonymous_read: Vec<String>,
    ) -> Result<Self, LocalUsersError> {
        let mut by_name = HashMap::new();
        let mut by_fingerprint = HashMap::new();
        for (index, user) in users.iter().enumerate() {
            let problem =
                |problem: String| LocalUsersError::User { user: user.name.clone(), problem };
            crate::store::check_owner_name(&user.name)
                .map_err(|rule| problem(format!("the name {rule}")))?;
            if by_name.insert(user.name.to_ascii_lowercase(), index).is_some() {
                return Err(problem("another user has that name".to_owned()));
            }
            if let Some(hash) = &user.password {
                PasswordHash::new(hash)
                    .map_err(|_| problem("password is not an argon2 PHC string".to_owned()))?;
            }
            if let Some(bad) = user.tokens.iter().position(|token| !is_sha256_hex(token)) {
                return Err(problem(format!("token {} is not a hex SHA-256", bad + 1)));
            }
            for (number, key) in user.keys.iter().enumerate() {
                if let Some(fingerprint) = fingerprint_of(key)
                    .map_err(|why| problem(format!("key {} cannot be read: {why}", number + 1)))?
                    && by_fingerprint.insert(fingerprint, index).is_some()
                {
                    return Err(problem(format!("key {} belongs to someone else too", number + 1)));
                }
            }
        }
        Ok(Self { inner: Arc::new(Users { users, anonymous_read, by_name, by_fingerprint }) })
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.inner.users.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.inner.users.is_empty()
    }

    /// Hashes `password` with argon2id and a random salt, in PHC string form, as the `password`
    /// field holds it.
    ///
    /// # Errors
    ///
    /// Fails only if the hasher rejects its parameters, which the defaults never cause.
    pub fn hash_password(password: &str) -> Result<String, String> {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| error.to_string())
    }

    /// The hex SHA-256 of `token`, as the `tokens` field holds it.
    pub fn hash_token(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    fn git_user(&self, index: usize) -> GitUser {
        let user = &self.inner.users[index];
        GitUser { id: 0, username: user.name.clone(), is_admin: user.admin }
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.inner.by_name.get(&name.to_ascii_lowercase()).copied()
    }
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(feature = "ssh")]
fn fingerprint_of(key: &str) -> Result<Option<String>, String> {
    let key =
        russh::keys::PublicKey::from_openssh(key.trim()).map_err(|error| error.to_string())?;
    Ok(Some(key.fingerprint(russh::keys::HashAlg::Sha256).to_string()))
}

#[cfg(not(feature = "ssh"))]
fn fingerprint_of(_key: &str) -> Result<Option<String>, String> {
    Ok(None)
}

/// A hash to verify against when the user is unknown, so that takes as long as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| LocalUsers::hash_password("not a password of anyone").unwrap_or_default())
}

fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// Whether `pattern` (`owner/name`, `*` for any run of characters) matches `repository`.
fn matches(pattern: &str, repository: &str) -> bool {
    gix_glob::wildmatch(pattern.into(), repository.into(), gix_glob::wildmatch::Mode::IGNORE_CASE)
}

#[async_trait::async_trait]
impl Authenticator for LocalUsers {
    async fn basic(&self, login: &str, secret: &str, _client: IpAddr) -> Result<SignIn, BoxError> {
        let index = self.find(login);
        let user = index.map(|index| &self.inner.users[index]);
        let token = Self::hash_token(secret);
        if let Some(index) = index
            && self.inner.users[index].tokens.iter().any(|t| t.eq_ignore_ascii_case(&token))
        {
            return Ok(SignIn::Valid(Identity::User { user: self.git_user(index), ceiling: None }));
        }
        let stored = user.and_then(|user| user.password.clone());
        let secret = secret.to_owned();
        let verified = tokio::task::spawn_blocking(move || match stored {
            Some(stored) => verify_password(&secret, &stored),
            None => {
                let _ = verify_password(&secret, decoy_hash());
                false
            }
        })
        .await?;
        Ok(match index {
            Some(index) if verified => {
                SignIn::Valid(Identity::User { user: self.git_user(index), ceiling: None })
            }
            _ => SignIn::Invalid,
        })
    }

    async fn public_key(
        &self,
        fingerprint: &str,
        _client: IpAddr,
    ) -> Result<Option<GitUser>, BoxError> {
        Ok(self.inner.by_fingerprint.get(fingerprint).map(|&index| self.git_user(index)))
    }
}

#[async_trait::async_trait]
impl RepoAccess for LocalUsers {
    async fn access(
        &self,
        owner: &str,
        name: &str,
        user: Option<&GitUser>,
    ) -> Result<Option<(GitRepository, Access)>, BoxError> {
        let full = format!("{owner}/{name}");
        let public = self.inner.anonymous_read.iter().any(|p| matches(p, &full));
        let mut access = public.then_some(Access::Read);
        if let Some(user) = user.and_then(|user| self.find(&user.username)) {
            let user = &self.inner.users[user];
            let granted = if user.admin || user.name.eq_ignore_ascii_case(owner) {
                Some(Access::Owner)
            } else if user.write.iter().any(|p| matches(p, &full)) {
                Some(Access::Write)
            } else if user.read.iter().any(|p| matches(p, &full)) {
                Some(Access::Read)
            } else {
                None
            };
            access = access.max(granted);
        }
        let repository = GitRepository { id: 0, owner: owner.to_owned(), name: name.to_owned() };
        Ok(access.map(|access| (repository, access)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    fn users() -> LocalUsers {
        LocalUsers::new(
            vec![
                LocalUser::new("ada")
                    .with_token("t0ken")
                    .can_read("team/*")
                    .can_write("shared/tools"),
                LocalUser { admin: true, ..LocalUser::new("root") },
            ],
            vec!["public/*".to_owned()],
        )
        .expect("valid users")
    }

    async fn access(users: &LocalUsers, who: Option<&str>, repo: &str) -> Option<Access> {
        let (owner, name) = repo.split_once('/').expect("owner/name");
        let user = who.map(|name| GitUser { id: 0, username: name.to_owned(), is_admin: false });
        users.access(owner, name, user.as_ref()).await.expect("no failure").map(|(_, a)| a)
    }

    #[tokio::test]
    async fn grants_resolve_to_the_most_a_user_may_do() {
        let users = users();
        assert_eq!(access(&users, Some("ada"), "ada/engine").await, Some(Access::Owner));
        assert_eq!(access(&users, Some("ADA"), "Ada/engine").await, Some(Access::Owner));
        assert_eq!(access(&users, Some("ada"), "shared/tools").await, Some(Access::Write));
        assert_eq!(access(&users, Some("ada"), "team/site").await, Some(Access::Read));
        assert_eq!(access(&users, Some("ada"), "public/x").await, Some(Access::Read));
        assert_eq!(access(&users, Some("ada"), "bob/secret").await, None);
        assert_eq!(access(&users, None, "public/x").await, Some(Access::Read));
        assert_eq!(access(&users, None, "ada/engine").await, None);
        assert_eq!(access(&users, Some("root"), "bob/secret").await, Some(Access::Owner));
        assert_eq!(access(&users, Some("nobody"), "ada/engine").await, None);
    }

    #[tokio::test]
    async fn tokens_and_passwords_sign_in_and_nothing_else_does() {
        let ada = LocalUser::new("ada").with_password("correct horse").expect("hashed");
        let users = LocalUsers::new(vec![ada.with_token("t0ken")], vec![]).expect("valid");
        let valid = |outcome: SignIn| matches!(outcome, SignIn::Valid(Identity::User { user, .. }) if user.username == "ada");
        assert!(valid(users.basic("ada", "t0ken", ip()).await.expect("checked")));
        assert!(valid(users.basic("ada", "correct horse", ip()).await.expect("checked")));
        assert_eq!(users.basic("ada", "wrong", ip()).await.expect("checked"), SignIn::Invalid);
        assert_eq!(users.basic("bob", "t0ken", ip()).await.expect("checked"), SignIn::Invalid);
    }

    #[test]
    fn a_broken_file_names_what_is_wrong_and_never_a_secret() {
        let error = LocalUsers::from_toml("[[users]]\nname = \"ada\"\npassword = \"hunter2\"\n")
            .expect_err("not a PHC string");
        assert_eq!(error.to_string(), "user \"ada\": password is not an argon2 PHC string");
        let error = LocalUsers::from_toml("[[users]]\nnam = \"ada\"\n").expect_err("unknown field");
        assert!(error.to_string().contains("line 2"), "{error}");
        let twice = "[[users]]\nname = \"ada\"\n[[users]]\nname = \"Ada\"\n";
        let error = LocalUsers::from_toml(twice).expect_err("same name");
        assert!(error.to_string().contains("another user has that name"), "{error}");
        let error = LocalUsers::from_toml("[[users]]\nname = \"../x\"\n").expect_err("bad name");
        assert!(error.to_string().contains("the name"), "{error}");
    }
}

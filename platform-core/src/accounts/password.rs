//! Password hashing (argon2id) and the password policy.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::rngs::OsRng;

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// The longest password accepted; hashing cost grows with length, so it is bounded.
pub const MAX_PASSWORD_CHARS: usize = 256;

/// Checks `password` against the policy; the message names the rule broken, never the password.
///
/// # Errors
///
/// Returns why the password is refused.
pub fn check_policy(password: &str, username: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!("password must have at least {MIN_PASSWORD_CHARS} characters"));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(format!("password must have at most {MAX_PASSWORD_CHARS} characters"));
    }
    if !username.is_empty() && password.to_lowercase().contains(&username.to_lowercase()) {
        return Err("password must not contain the username".to_owned());
    }
    let mut distinct: Vec<char> = password.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 4 {
        return Err("password must use at least 4 different characters".to_owned());
    }
    Ok(())
}

/// Hashes `password` with argon2id and a random salt, in PHC string form.
///
/// Hashing takes tens of milliseconds of CPU on purpose: call it from `spawn_blocking`.
///
/// # Errors
///
/// Fails only if the hasher rejects its parameters, which the defaults never cause.
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Returns whether `password` matches the PHC string `stored`. Call it from `spawn_blocking`.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_argon2id_and_verify() {
        let first = hash("correct horse battery").expect("hashes");
        let second = hash("correct horse battery").expect("hashes");
        assert!(first.starts_with("$argon2id$"), "{first}");
        assert_ne!(first, second, "a fresh salt every time");
        assert!(verify("correct horse battery", &first));
        assert!(!verify("correct horse battery!", &first));
        assert!(!verify("anything", "not a hash"));
    }

    #[test]
    fn the_policy_names_the_rule_broken() {
        assert!(check_policy("correct horse battery", "ada").is_ok());
        assert_eq!(
            check_policy("short", "ada").expect_err("refused"),
            "password must have at least 10 characters"
        );
        assert!(
            check_policy(&"ab1!".repeat(100), "ada").expect_err("refused").contains("at most 256")
        );
        assert_eq!(
            check_policy("my-name-is-Ada!", "ada").expect_err("refused"),
            "password must not contain the username"
        );
        assert!(check_policy("aaaaaaaaaaaa", "ada").expect_err("refused").contains("4 different"));
    }
}

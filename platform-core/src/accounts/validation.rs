//! Rules for user names and email addresses.

/// Names that cannot be users: they are, or may become, paths of the web and API routes.
const RESERVED: &[&str] = &[
    "admin",
    "api",
    "assets",
    "explore",
    "favicon.ico",
    "healthz",
    "help",
    "login",
    "logout",
    "metrics",
    "new",
    "org",
    "orgs",
    "readyz",
    "register",
    "repos",
    "robots.txt",
    "root",
    "settings",
    "signup",
    "static",
    "support",
    "user",
    "users",
];

/// The longest user name accepted.
pub const MAX_USERNAME_CHARS: usize = 39;

/// Checks a user name: 1 to 39 ASCII letters, digits, `-`, `_` or `.`, starting and ending with a
/// letter or digit, not ending in `.git`, and not reserved.
///
/// # Errors
///
/// Returns the rule broken.
pub fn check_username(username: &str) -> Result<(), String> {
    if username.is_empty() || username.len() > MAX_USERNAME_CHARS {
        return Err(format!("username must have 1 to {MAX_USERNAME_CHARS} characters"));
    }
    if !username.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err("username may contain only letters, digits, '-', '_' and '.'".to_owned());
    }
    let edges_ok = username.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && username.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if !edges_ok {
        return Err("username must start and end with a letter or digit".to_owned());
    }
    if username.contains("..") {
        return Err("username must not contain '..'".to_owned());
    }
    let lower = username.to_ascii_lowercase();
    if lower.ends_with(".git") || RESERVED.contains(&lower.as_str()) {
        return Err(format!("username {username:?} is reserved"));
    }
    Ok(())
}

/// Checks an email address's shape: one `@`, a non-empty local part, a domain with a dot, no
/// spaces, at most 254 characters. Whether it exists is what the verification mail finds out.
///
/// # Errors
///
/// Returns the rule broken.
pub fn check_email(email: &str) -> Result<(), String> {
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if valid { Ok(()) } else { Err("email must be an address such as ada@example.com".to_owned()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for good in ["ada", "Ada-Lovelace", "a", "x1.y_z", &"a".repeat(39)] {
            assert!(check_username(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-ada",
            "ada-",
            "a..b",
            "a/b",
            "a b",
            "Admin",
            "api",
            "repo.git",
            "é",
            &"a".repeat(40),
        ] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails() {
        assert!(check_email("ada@example.com").is_ok());
        for bad in [
            "ada",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "a da@example.com",
            "ada@example.com.",
        ] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
    }
}

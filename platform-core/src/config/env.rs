//! Reading variables from an environment map while collecting every problem.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use url::Url;

use super::SecretUrl;

/// One problem with one variable, as reported by [`ConfigError`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The environment variable at fault, for example `APP_DATABASE_URL`.
    pub variable: String,
    /// What is wrong with it. Never contains the value of a secret.
    pub message: String,
}

/// The error returned when configuration cannot be loaded: every problem found, by variable.
///
/// Its `Display` lists one problem per line:
///
/// ```text
/// configuration is invalid:
///   APP_DATABASE_URL: missing
///   APP_SESSION_SECRET: must be at least 32 bytes (got 12)
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    problems: Vec<Problem>,
}

impl ConfigError {
    /// Returns every problem found, in the order the variables were read.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Returns whether `variable` is among the variables at fault.
    pub fn names(&self, variable: &str) -> bool {
        self.problems.iter().any(|p| p.variable == variable)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("configuration is invalid:")?;
        for problem in &self.problems {
            write!(f, "\n  {}: {}", problem.variable, problem.message)?;
        }
        Ok(())
    }
}

/// Reads typed values out of an environment map, recording each problem instead of stopping at
/// the first, so that a service reports all of them at once.
///
/// Each reader method returns `None` exactly when it has recorded a problem; [`EnvReader::finish`]
/// then turns the collected values into a tuple or the collected problems into a [`ConfigError`].
/// Empty values count as unset, as a Kubernetes ConfigMap key with `""` usually means "not set".
pub struct EnvReader<'a> {
    vars: &'a HashMap<String, String>,
    problems: Vec<Problem>,
}

impl fmt::Debug for EnvReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The map holds secrets: show only what was found wrong.
        f.debug_struct("EnvReader").field("problems", &self.problems).finish_non_exhaustive()
    }
}

impl<'a> EnvReader<'a> {
    /// Creates a reader over `vars`, typically the process environment.
    pub fn new(vars: &'a HashMap<String, String>) -> Self {
        Self { vars, problems: Vec::new() }
    }

    /// Records a problem with `variable` (once, however many sections read it).
    pub fn problem(&mut self, variable: &str, message: impl Into<String>) {
        let problem = Problem { variable: variable.to_owned(), message: message.into() };
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }

    /// Returns the raw value of `variable`, or `None` when it is unset or empty.
    pub fn raw(&self, variable: &str) -> Option<&'a str> {
        self.vars.get(variable).map(String::as_str).map(str::trim).filter(|v| !v.is_empty())
    }

    /// Returns the raw value of a required variable, recording `missing` when it is unset.
    pub fn required_raw(&mut self, variable: &str) -> Option<&'a str> {
        let value = self.raw(variable);
        if value.is_none() {
            self.problem(variable, "missing");
        }
        value
    }

    /// Parses a required variable with `parse`, whose error message is recorded as the problem.
    ///
    /// `parse` must not put the value into its message when the variable is a secret.
    pub fn required<T>(
        &mut self,
        variable: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.required_raw(variable)?;
        self.parse_with(variable, raw, parse)
    }

    /// Parses an optional variable: `Some(None)` when it is unset, `None` when it is invalid.
    pub fn optional<T>(
        &mut self,
        variable: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<Option<T>> {
        match self.raw(variable) {
            None => Some(None),
            Some(raw) => self.parse_with(variable, raw, parse).map(Some),
        }
    }

    /// Parses a variable that falls back to `default` when unset.
    pub fn or_default<T>(
        &mut self,
        variable: &str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        self.optional(variable, parse).map(|value| value.unwrap_or(default))
    }

    fn parse_with<T>(
        &mut self,
        variable: &str,
        raw: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match parse(raw) {
            Ok(value) => Some(value),
            Err(message) => {
                self.problem(variable, message);
                None
            }
        }
    }

    /// Ends reading: the values of every section when no problem was recorded, or every problem.
    ///
    /// `sections` is a tuple of the `Option`s the reader methods returned.
    ///
    /// # Errors
    ///
    /// Returns a [`ConfigError`] listing every recorded problem.
    pub fn finish<S: Sections>(self, sections: S) -> Result<S::Values, ConfigError> {
        if !self.problems.is_empty() {
            return Err(ConfigError { problems: self.problems });
        }
        Ok(sections
            .complete()
            .expect("a reader method returns None only after recording a problem"))
    }
}

/// A tuple of `Option`s produced by [`EnvReader`] methods, completed by [`EnvReader::finish`].
pub trait Sections {
    /// The tuple of values once every section is present.
    type Values;

    /// Returns the values when every section is present.
    fn complete(self) -> Option<Self::Values>;
}

macro_rules! impl_sections {
    ($($name:ident),+) => {
        impl<$($name),+> Sections for ($(Option<$name>,)+) {
            type Values = ($($name,)+);

            #[allow(non_snake_case)]
            fn complete(self) -> Option<Self::Values> {
                let ($($name,)+) = self;
                Some(($($name?,)+))
            }
        }
    };
}

impl_sections!(A);
impl_sections!(A, B);
impl_sections!(A, B, C);
impl_sections!(A, B, C, D);
impl_sections!(A, B, C, D, E);
impl_sections!(A, B, C, D, E, F);
impl_sections!(A, B, C, D, E, F, G);
impl_sections!(A, B, C, D, E, F, G, H);
impl_sections!(A, B, C, D, E, F, G, H, I);
impl_sections!(A, B, C, D, E, F, G, H, I, J);
impl_sections!(A, B, C, D, E, F, G, H, I, J, K);
impl_sections!(A, B, C, D, E, F, G, H, I, J, K, L);

/// Parses a TCP port: 1 to 65535.
pub(crate) fn parse_port(raw: &str) -> Result<u16, String> {
    match raw.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("must be a port number from 1 to 65535 (got {raw:?})")),
        Ok(port) => Ok(port),
    }
}

/// Parses a socket address such as `0.0.0.0:3000` or `127.0.0.1:0`.
pub(crate) fn parse_socket_addr(raw: &str) -> Result<SocketAddr, String> {
    SocketAddr::from_str(raw)
        .map_err(|_| format!("must be an address and port such as 0.0.0.0:3000 (got {raw:?})"))
}

/// Parses `true`/`false` (also `1`/`0`, `yes`/`no`, any case).
pub(crate) fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("must be true or false (got {raw:?})")),
    }
}

/// Parses an absolute filesystem path.
pub(crate) fn parse_absolute_path(raw: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(raw);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!("must be an absolute path (got {raw:?})"))
    }
}

/// Parses a positive integer.
pub(crate) fn parse_positive<T>(raw: &str) -> Result<T, String>
where
    T: FromStr + PartialOrd + Default,
{
    match raw.parse::<T>() {
        Ok(value) if value > T::default() => Ok(value),
        _ => Err(format!("must be a positive whole number (got {raw:?})")),
    }
}

/// Returns a parser for a URL with one of `schemes`. The value may carry credentials, so it is
/// never repeated in the message.
pub(crate) fn url_with_schemes(
    schemes: &'static [&'static str],
) -> impl Fn(&str) -> Result<Url, String> {
    move |raw| {
        let url = Url::parse(raw).map_err(|e| format!("not a valid URL ({e})"))?;
        if !schemes.contains(&url.scheme()) {
            return Err(format!(
                "URL scheme must be {} (got {:?})",
                schemes.join(" or "),
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("URL has no host".to_owned());
        }
        Ok(url)
    }
}

/// Returns a parser like [`url_with_schemes`] that wraps the result as a [`SecretUrl`].
pub(crate) fn secret_url_with_schemes(
    schemes: &'static [&'static str],
) -> impl Fn(&str) -> Result<SecretUrl, String> {
    let parse = url_with_schemes(schemes);
    move |raw| parse(raw).map(SecretUrl::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn finish_returns_values_when_nothing_is_wrong() {
        let vars = vars(&[("PORT", "8080"), ("FLAG", "yes")]);
        let mut env = EnvReader::new(&vars);
        let read = (
            env.required("PORT", parse_port),
            env.or_default("FLAG", false, parse_bool),
            env.optional("ABSENT", parse_port),
        );
        assert_eq!(env.finish(read), Ok((8080, true, None)));
    }

    #[test]
    fn finish_reports_every_problem_in_reading_order() {
        let vars = vars(&[("PORT", "0"), ("EMPTY", "  ")]);
        let mut env = EnvReader::new(&vars);
        let read = (env.required("PORT", parse_port), env.required("EMPTY", parse_port));
        let error = env.finish(read).expect_err("both are wrong");
        assert_eq!(
            error.to_string(),
            "configuration is invalid:\n  PORT: must be a port number from 1 to 65535 (got \"0\")\n  EMPTY: missing"
        );
    }

    #[test]
    fn url_parsers_check_scheme_and_host_without_echoing_the_value() {
        let parse = url_with_schemes(&["postgres"]);
        assert!(parse("postgres://u:p@db:5432/app").is_ok());
        let message = parse("mysql://u:hunter2@db/app").expect_err("wrong scheme");
        assert_eq!(message, "URL scheme must be postgres (got \"mysql\")");
        let message = parse("postgres://u:hunter2@/app").expect_err("no host");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn secret_urls_hide_their_password() {
        let url = SecretUrl::new(Url::parse("redis://:hunter2@redis:6379/0").expect("valid"));
        assert_eq!(url.to_string(), "redis://:***@redis:6379/0");
        assert_eq!(format!("{url:?}"), "SecretUrl(\"redis://:***@redis:6379/0\")");
        assert_eq!(url.expose().password(), Some("hunter2"));
    }

    #[test]
    fn small_parsers_accept_what_operators_write() {
        assert_eq!(parse_bool("TRUE"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert!(parse_absolute_path("data/repos").is_err());
        assert_eq!(parse_positive::<u32>("12"), Ok(12));
        assert!(parse_positive::<u32>("0").is_err());
        assert!(parse_socket_addr("127.0.0.1:0").is_ok());
        assert!(parse_socket_addr("localhost").is_err());
    }
}

//! What the `app` suites share.

use std::collections::HashMap;
use std::path::Path;

use platform_test_support::service_env;

/// The environment `app` starts with: its database, the shared Redis, and its directories
/// under `data`.
pub(crate) fn app_env(database_url: &str, data: &Path) -> HashMap<String, String> {
    let dir = |name: &str| data.join(name).to_string_lossy().into_owned();
    HashMap::from([
        ("APP_DATABASE_URL".into(), database_url.into()),
        ("APP_REDIS_URL".into(), service_env("PLATFORM_TEST_REDIS_URL")),
        ("APP_DOMAIN_URL".into(), "http://localhost:3000".into()),
        ("APP_SESSION_SECRET".into(), "a-test-session-secret-of-at-least-32-bytes".into()),
        ("APP_REPOS_ROOT".into(), dir("repos")),
        ("APP_AVATAR_PATH".into(), dir("avatars")),
        ("STORAGE_PATH".into(), dir("files")),
        ("APP_AI_BASIC_URL".into(), "http://127.0.0.1:9/v1".into()),
        ("APP_AI_API_KEY".into(), "sk-test".into()),
    ])
}

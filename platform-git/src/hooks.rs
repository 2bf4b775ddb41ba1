//! The hooks `git receive-pack` runs for pushes served by [`crate::http`].
//!
//! Why hooks: the policy must see the pushed objects (is this update a fast-forward? how big is
//! that blob?) before any ref moves, and only `pre-receive` runs at that moment, with the new
//! objects quarantined. The server decides everything it can from the ref-update commands alone
//! (which refs are protected, whether the pusher may touch them) and writes its verdicts to a
//! file named in the hook's environment; the hook adds the checks that need objects. Its messages reach the client
//! as `remote:` lines, and a refusal leaves every ref unchanged.
//!
//! `post-receive` runs after refs moved and lists exactly the updates that happened; it appends
//! them to a file the server reads to build the push event.
//!
//! The hooks are small POSIX shell scripts calling `git`, so a program mounting the router needs
//! nothing else installed.

use std::path::{Path, PathBuf};

/// Environment variable: the file of the server's verdicts on this push's refs, one per line:
/// `deny<TAB><ref><TAB><reason>` or `no-force<TAB><ref>`.
pub const POLICY_ENV: &str = "PLATFORM_POLICY";
/// Environment variable: the largest blob a push may add, in bytes (0: no limit).
pub const MAX_BLOB_ENV: &str = "PLATFORM_MAX_BLOB_BYTES";
/// Environment variable: the file post-receive appends the updated refs to.
pub const REPORT_ENV: &str = "PLATFORM_PUSH_REPORT";

const PRE_RECEIVE: &str = r#"#!/bin/sh
# pre-receive, installed by platform-git: the push policy for the refs of this push.
#   PLATFORM_POLICY          the server's verdicts: "deny<TAB><ref><TAB><reason>" and
#                            "no-force<TAB><ref>" lines
#   PLATFORM_MAX_BLOB_BYTES  the largest blob a push may add; 0 for no limit
policy=${PLATFORM_POLICY:-}
if [ -n "$policy" ] && [ ! -r "$policy" ]; then
  echo "error: the push policy is unavailable; try again" >&2
  exit 1
fi
[ -n "$policy" ] || policy=/dev/null
status=0
while read -r old new ref; do
  reason=$(awk -F '\t' -v ref="$ref" '$1 == "deny" && $2 == ref { print $3; exit }' "$policy")
  if [ -n "$reason" ]; then
    echo "error: $reason" >&2
    status=1
    continue
  fi
  case "$new" in *[!0]*) ;; *) continue ;; esac
  case "$old" in
    *[!0]*)
      if awk -F '\t' -v ref="$ref" '$1 == "no-force" && $2 == ref { found = 1 } END { exit !found }' "$policy" \
        && ! git merge-base --is-ancestor "$old" "$new" 2>/dev/null; then
        echo "error: $ref is protected: force pushes are not allowed" >&2
        status=1
        continue
      fi
      ;;
  esac
  max=${PLATFORM_MAX_BLOB_BYTES:-0}
  if [ "$max" -gt 0 ]; then
    big=$(git rev-list --objects "$new" --not --all \
      | git cat-file --batch-check='%(objecttype) %(objectsize) %(rest)' \
      | awk -v max="$max" '$1 == "blob" && $2 > max { print $3 " is " $2 " bytes"; exit }')
    if [ -n "$big" ]; then
      echo "error: $ref: $big, over the limit of $max bytes per file" >&2
      status=1
    fi
  fi
done
exit $status
"#;

const POST_RECEIVE: &str = r#"#!/bin/sh
# post-receive, installed by platform-git: records the refs this push moved, for its push event.
if [ -n "${PLATFORM_PUSH_REPORT:-}" ]; then
  cat >>"$PLATFORM_PUSH_REPORT"
else
  cat >/dev/null
fi
"#;

/// Writes the hooks into `dir` (created if needed) and returns it, for `core.hooksPath`.
///
/// # Errors
///
/// Fails when the directory or the scripts cannot be written.
pub fn install(dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    for (name, script) in [("pre-receive", PRE_RECEIVE), ("post-receive", POST_RECEIVE)] {
        let target = dir.join(name);
        // Written aside and renamed, so a git running right now never sees half a script.
        let staged = dir.join(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&staged, script)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&staged, &target)?;
    }
    Ok(dir.to_owned())
}

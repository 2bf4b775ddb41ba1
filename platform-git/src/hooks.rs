//! The hooks `git receive-pack` runs for pushes served by [`crate::http`] and [`crate::ssh`].
//!
//! Why hooks: the policy must see the pushed objects (is this update a fast-forward? how big is
//! that blob?) before any ref moves, and only `pre-receive` runs at that moment, with the new
//! objects quarantined. The server reads the ref-update commands of the request, decides what
//! branch protection says about each ([`crate::transport::PushRun::decide`]), and writes one
//! verdict per update (`allow`, `no-force` or `deny`, with the update's old id, new id and ref)
//! to a file named in the hook's environment. The hook then takes the updates git itself is about
//! to make, as git lists them on its standard input, and admits an update only when a verdict
//! names exactly that old id, new id and ref: an update the server did not read (however the
//! request smuggled it in) is refused, so what the server decided and what git applies can never
//! differ. It adds the checks that need objects: fast-forwards for `no-force` refs, and the size
//! of every blob the push brings, read once per push from the quarantined objects. Its messages
//! reach the client as `remote:` lines, and a refusal leaves every ref unchanged.
//!
//! `post-receive` runs after refs moved and lists exactly the updates that happened; it appends
//! them to a file the server reads to build the push event.
//!
//! The hooks are small POSIX shell scripts calling `git` and `awk`, so a program mounting the
//! router needs nothing else installed.

use std::path::{Path, PathBuf};

/// Environment variable: the file of the server's verdicts on this push's updates, one per line:
/// `allow<TAB><old><TAB><new><TAB><ref>`, `no-force<TAB><old><TAB><new><TAB><ref>` or
/// `deny<TAB><old><TAB><new><TAB><ref><TAB><reason>`.
pub const POLICY_ENV: &str = "PLATFORM_POLICY";
/// Environment variable: the largest blob a push may add, in bytes (0: no limit).
pub const MAX_BLOB_ENV: &str = "PLATFORM_MAX_BLOB_BYTES";
/// Environment variable: the file post-receive appends the updated refs to.
pub const REPORT_ENV: &str = "PLATFORM_PUSH_REPORT";

const PRE_RECEIVE: &str = r#"#!/bin/sh
# pre-receive, installed by platform-git: the push policy, applied to exactly the updates git is
# about to make (its standard input, "<old> <new> <ref>" lines).
#   PLATFORM_POLICY          the server's verdicts, one per update it read in the request:
#                            "allow|no-force|deny<TAB><old><TAB><new><TAB><ref>[<TAB><reason>]"
#   PLATFORM_MAX_BLOB_BYTES  the largest blob a push may add; 0 for no limit
policy=${PLATFORM_POLICY:-}
if [ -z "$policy" ] || [ ! -r "$policy" ]; then
  echo "error: the push policy is unavailable; try again" >&2
  exit 1
fi
updates=$(cat)
status=0

# Every update git reports, against the verdict for exactly that update; one awk for the push.
# It prints what is left to do: "deny<TAB>reason" and "ff<TAB>old<TAB>new<TAB>ref" lines.
checks=$(printf '%s\n' "$updates" | awk -v policy="$policy" '
  BEGIN {
    FS = "\t"
    while ((getline line < policy) > 0) {
      n = split(line, field, "\t")
      if (n < 4) continue
      key = field[2] " " field[3] " " field[4]
      if (verdict[key] == "deny") continue
      verdict[key] = field[1]
      reason[key] = field[5]
    }
    zero = "^0+$"
  }
  $0 == "" { next }
  {
    split($0, part, " ")
    old = part[1]; new = part[2]; ref = substr($0, length(old) + length(new) + 3)
    if (!($0 in verdict)) {
      print "deny\t" ref ": this update was not among the commands of the push"
    } else if (verdict[$0] == "deny") {
      print "deny\t" reason[$0]
    } else if (verdict[$0] == "no-force" && old !~ zero && new !~ zero) {
      print "ff\t" old "\t" new "\t" ref
    } else if (verdict[$0] != "allow" && verdict[$0] != "no-force") {
      print "deny\t" ref ": the push policy is unreadable; try again"
    }
  }')
tab=$(printf '\t')
while IFS="$tab" read -r kind first second third; do
  case "$kind" in
    deny)
      echo "error: $first" >&2
      status=1
      ;;
    ff)
      if ! git merge-base --is-ancestor "$first" "$second" 2>/dev/null; then
        echo "error: $third is protected: force pushes are not allowed" >&2
        status=1
      fi
      ;;
  esac
done <<CHECKS
$checks
CHECKS

# The size of every blob the push brings, once per push: the objects git keeps in quarantine
# for this push are exactly those (a blob the repository already has is not counted again).
max=${PLATFORM_MAX_BLOB_BYTES:-0}
if [ "$max" -gt 0 ]; then
  if [ -n "${GIT_QUARANTINE_PATH:-}" ]; then
    big=$( (unset GIT_ALTERNATE_OBJECT_DIRECTORIES
            git cat-file --batch-all-objects --unordered \
              --batch-check='%(objecttype) %(objectsize) %(objectname)') \
      | awk -v max="$max" '$1 == "blob" && $2 > max { print $3 " " $2 }')
  else
    tips=$(printf '%s\n' "$updates" | awk '$2 !~ /^0+$/ && NF >= 3 { print $2 }')
    big=$( [ -z "$tips" ] || git rev-list --objects $tips --not --all \
      | git cat-file --batch-check='%(objecttype) %(objectsize) %(objectname)' \
      | awk -v max="$max" '$1 == "blob" && $2 > max { print $3 " " $2 }')
  fi
  if [ -n "$big" ]; then
    while read -r oid size; do
      [ -n "$oid" ] || continue
      if (unset GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES GIT_QUARANTINE_PATH
          git cat-file -e "$oid" 2>/dev/null); then
        continue
      fi
      # Only now, to name the file: which pushed ref brings it, and under what path.
      named=$(printf '%s\n' "$updates" | while read -r old new ref; do
        case "$new" in *[!0]*) ;; *) continue ;; esac
        path=$(git rev-list --objects "$new" --not --all \
          | awk -v oid="$oid" '$1 == oid { print substr($0, length(oid) + 2); exit }')
        if [ -n "$path" ]; then
          echo "$ref: $path"
          break
        fi
      done)
      echo "error: ${named:-object $oid} is $size bytes, over the limit of $max bytes per file" >&2
      status=1
      break
    done <<BIG
$big
BIG
  fi
fi
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

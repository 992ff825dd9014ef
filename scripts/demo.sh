#!/usr/bin/env bash
# Ferry's quick demo, in user mode: no root, no capabilities, everything in a temp dir.
# Starts ferryd as you with a sample application, lists it, exports a verified archive,
# then (if ferry import is available) damages the data and restores it through ferryd.
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY=(node dist/src/cli/ferry.js)
FERRYD=(node dist/src/cli/ferryd.js)
demo=$(mktemp -d "${TMPDIR:-/tmp}/ferry-demo.XXXXXX")
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  [ -n "${KEEP_DEMO:-}" ] || rm -rf "$demo"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Sample application 'notes' in $demo/notes"
mkdir -p "$demo/notes/2026/11" "$demo/notes/drafts"
echo "Buy milk" > "$demo/notes/todo.txt"
printf 'Meeting notes\nFerry demo\n' > "$demo/notes/2026/11/25.md"
echo "secret draft" > "$demo/notes/drafts/private.txt"
chmod 600 "$demo/notes/drafts/private.txt"
ln -s todo.txt "$demo/notes/latest"
ls -lR "$demo/notes" | sed 's/^/  /'

cat > "$demo/ferry.toml" <<TOML
version = 1
socket = "$demo/run/ferry.sock"
state_dir = "$demo/state"

[apps.notes]
driver = "files"
paths = ["$demo/notes"]
owner = "$(id -un)"
restore = true
TOML
# As root, the sample files are root's, and restoring root-owned files needs allow_root.
[ "$(id -u)" -eq 0 ] && echo "allow_root = true" >> "$demo/ferry.toml"
say "ferryd --check-config"
"${FERRYD[@]}" --check-config --config "$demo/ferry.toml"

if [ "$(id -u)" -eq 0 ]; then
  echo "(you are root: passing --allow-root; in production ferryd runs as the backup user)"
  FERRYD+=(--allow-root)
fi
say "Starting ferryd (user mode) on $demo/run/ferry.sock"
"${FERRYD[@]}" --config "$demo/ferry.toml" 2> "$demo/ferryd.log" &
daemon_pid=$!
for _ in $(seq 1 100); do
  grep -q '"ferryd listening"' "$demo/ferryd.log" 2>/dev/null && break
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$demo/ferryd.log" >&2; exit 1; }
  sleep 0.1
done
export FERRY_SOCKET="$demo/run/ferry.sock"

say "ferry version"
"${FERRY[@]}" version
say "ferry apps"
"${FERRY[@]}" apps
say "curl --unix-socket \$FERRY_SOCKET http://ferry/v1/apps/notes"
if command -v curl >/dev/null; then curl -sS --unix-socket "$FERRY_SOCKET" http://ferry/v1/apps/notes; echo; fi

say "ferry export notes -o notes.tar"
"${FERRY[@]}" export notes -o "$demo/notes.tar"
say "The archive, as GNU tar sees it"
tar -tvf "$demo/notes.tar" | sed 's/^/  /'
say "Its end record"
tar -xOf "$demo/notes.tar" .ferry/end.json

if "${FERRY[@]}" --help | grep -q '^  import'; then
  say "Damaging the data: deleting todo.txt, editing the draft, adding junk"
  rm "$demo/notes/todo.txt"
  echo "overwritten" > "$demo/notes/drafts/private.txt"
  echo "junk" > "$demo/notes/junk.txt"
  say "ferry import notes -i notes.tar"
  "${FERRY[@]}" import notes -i "$demo/notes.tar"
  say "Restored tree"
  ls -lR "$demo/notes" | sed 's/^/  /'
  cat "$demo/notes/drafts/private.txt"
fi

say "ferryd's audit log (one line per request)"
grep '"audit":true' "$demo/ferryd.log" | cut -c1-220 | sed 's/^/  /'
say "Demo done; everything in $demo is removed on exit."

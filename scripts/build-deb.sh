#!/usr/bin/env bash
# `npm run deb [-- OUTDIR]`: builds ferry_<version>_<arch>.deb in OUTDIR (default dist/)
# with Debian's own tools (dpkg-deb), from exactly what `npm pack` ships:
#
#   /usr/lib/ferry                      package.json, npm-shrinkwrap.json, dist/src, and the
#                                       production node_modules as pinned (npm ci --omit=dev)
#   /usr/bin/ferry, /usr/bin/ferryd     links to the programs
#   /usr/lib/systemd/system/            ferryd.service, ferry.socket, ferry-backup.{service,timer}
#   /usr/lib/tmpfiles.d/ferry.conf      /run/ferry, /var/backups/ferry, /var/lib/ferry
#   /usr/lib/sysusers.d/ferry.conf      the backup user ferry-backup
#   /usr/share/man/man{1,5,8}/          ferry(1), ferry.toml(5), ferryd(8)
#   /usr/share/doc/ferry/               README, the docs, examples/ferry.toml and
#                                       examples/restore-paths.conf
#
# Maintainer scripts: scripts/deb/. No install script of any dependency runs except
# koffi's (`npm rebuild koffi`), which only checks that its prebuilt binary loads. The
# package is architecture-specific: node_modules holds the prebuilt native binaries of
# koffi and zstd for this machine's architecture.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022
root=$PWD
out=${1:-$root/dist}
mkdir -p "$out"
out=$(cd "$out" && pwd)

version=$(node -p 'require("./package.json").version')
# A semver pre-release (1.0.0-rc.1) sorts before its release in Debian as 1.0.0~rc.1.
debver=${version/-/\~}
arch=$(dpkg --print-architecture)
nodearch=$(node -p process.arch)
case "$arch:$nodearch" in
amd64:x64 | arm64:arm64 | armhf:arm | i386:ia32 | riscv64:riscv64 | ppc64el:ppc64 | loong64:loong64) ;;
*)
  echo "build-deb: dpkg's architecture $arch does not match node's $nodearch" >&2
  exit 1
  ;;
esac
maintainer=${FERRY_DEB_MAINTAINER:-Ferry developers <ferry@localhost>}

work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
pkg=$work/root
app=$pkg/usr/lib/ferry

# 1. The npm tarball: prepack builds dist/ and the man pages; `files` decides the rest.
npm pack --pack-destination "$work" --silent >/dev/null
mkdir -p "$app"
tar -xzf "$work/ferry-$version.tgz" -C "$app" --strip-components=1 --no-same-owner

# 2. Production dependencies exactly as npm-shrinkwrap.json pins them, no install script;
# then koffi's alone (it checks that its prebuilt binary loads, and compiles one only on
# a platform without a prebuilt binary). zstd's binary is a plain optional dependency.
(
  cd "$app"
  npm ci --omit=dev --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error
  npm rebuild koffi --prefer-offline --loglevel=error >/dev/null
)
rm -rf "$app/node_modules/.bin"
# Smoke test of the tree as it will be installed: both programs load every module.
node "$app/dist/src/cli/ferry.js" --version >/dev/null
node "$app/dist/src/cli/ferryd.js" --version >/dev/null
node --input-type=module -e '
  const { createRequire } = await import("node:module");
  const req = createRequire(process.argv[1] + "/");
  req("koffi"); req("@toondepauw/node-zstd");
' "$app"

# 3. Everything that is not the application moves to its Debian place.
mkdir -p "$pkg/usr/bin"
ln -s ../lib/ferry/dist/src/cli/ferry.js "$pkg/usr/bin/ferry"
ln -s ../lib/ferry/dist/src/cli/ferryd.js "$pkg/usr/bin/ferryd"
units=$pkg/usr/lib/systemd/system
install -d "$units" "$pkg/usr/lib/tmpfiles.d" "$pkg/usr/lib/sysusers.d"
install -m 0644 "$app"/deploy/{ferryd.service,ferry.socket,ferry-backup.service,ferry-backup.timer} "$units/"
install -m 0644 "$app/deploy/ferry.tmpfiles" "$pkg/usr/lib/tmpfiles.d/ferry.conf"
install -m 0644 "$app/deploy/ferry.sysusers" "$pkg/usr/lib/sysusers.d/ferry.conf"
for page in "$app"/dist/man/*.[1-8]; do
  section=${page##*.}
  install -d "$pkg/usr/share/man/man$section"
  gzip -9n <"$page" >"$pkg/usr/share/man/man$section/$(basename "$page").gz"
done
doc=$pkg/usr/share/doc/ferry
install -d "$doc/examples"
install -m 0644 "$app/README.md" "$app"/docs/*.md "$app"/docs/*.yaml "$doc/"
install -m 0644 "$app/deploy/ferry.toml" "$doc/examples/ferry.toml"
install -m 0644 "$app/deploy/ferryd.service.d/restore-paths.conf" "$doc/examples/restore-paths.conf"
cat >"$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ferry

Files: *
License: Apache-2.0

Files: usr/lib/ferry/node_modules/*
Comment: Each dependency's own licence is in its directory under
 /usr/lib/ferry/node_modules; the versions are pinned in
 /usr/lib/ferry/npm-shrinkwrap.json.

License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
rm -rf "$app/deploy" "$app/docs" "$app/README.md" "$app/dist/man"

# 4. Control data.
install -d "$pkg/DEBIAN"
install -m 0755 scripts/deb/postinst scripts/deb/prerm scripts/deb/postrm "$pkg/DEBIAN/"
installed_size=$(du -sk --apparent-size "$pkg" | cut -f1)
cat >"$pkg/DEBIAN/control" <<CONTROL
Package: ferry
Version: $debver
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: nodejs (>= 20), util-linux, passwd, libzstd1
Recommends: systemd
Suggests: postgresql-client, mariadb-client, sqlite3, redis-tools, restic
Section: admin
Priority: optional
Description: backups without root, through a privilege-separated broker
 ferryd, a small service, runs as the backup user with only root's file
 rights (seven capabilities, never root's identity), and hands each
 application's data, as a verifiable archive, to unprivileged backup
 software (ferry, restic, any tool) over a peer-checked Unix socket.
 .
 Drivers: files, PostgreSQL, MariaDB, SQLite, Redis, commands and
 application agents; their client tools are suggested, install the ones
 your applications need. Nothing starts before /etc/ferry/ferry.toml
 exists: see /usr/share/doc/ferry/ops.md.
CONTROL
(cd "$pkg" && find usr -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum >DEBIAN/md5sums)
chmod 0644 "$pkg/DEBIAN/md5sums" "$pkg/DEBIAN/control"
# Nothing in the tree may be writable by group or others: ferryd refuses such code.
chmod -R go-w "$pkg"

deb=$out/ferry_${debver}_${arch}.deb
# xz at level 1: 2.7 MB instead of 2.2 MB at the default level 6, in a second instead of
# 20 on a busy 2-core machine (CI builds this package in every run).
dpkg-deb --root-owner-group -Zxz -z1 --build "$pkg" "$deb" >/dev/null
echo "$deb"

#!/usr/bin/env bash
# Builds the PostgreSQL 15 image of docker-compose.pg.yml with no registry: this machine's Debian
# postgresql-15 server binaries (postgres, initdb, pg_isready, psql), their modules and shared
# files, every shared library they load (found with ldd) with the dynamic loader, dash as /bin/sh
# for the entrypoint, time zone data and a passwd/group with the non-root user postgres (999),
# copied into a `FROM scratch` image.
#
#   deploy/build-postgres-image.sh           needs postgresql-15 here (apt-get install postgresql-15)
#   deploy/build-postgres-image.sh --check   only checks that everything the image needs is here
#
# Image: ${ORDER_STATUS_IMAGE_PREFIX:-order-status}/postgres:${ORDER_STATUS_IMAGE_TAG:-dev}.
# deploy/build-images.sh runs this too. The image is as new as the host's package: rebuild it
# after an upgrade of postgresql-15 (the cluster format stays the same within 15.x).
set -euo pipefail

readonly PG_MAJOR=15
readonly PG_BIN="/usr/lib/postgresql/$PG_MAJOR/bin"
readonly PG_LIB="/usr/lib/postgresql/$PG_MAJOR/lib"
readonly PG_SHARE="/usr/share/postgresql/$PG_MAJOR"
readonly PREFIX="${ORDER_STATUS_IMAGE_PREFIX:-order-status}"
readonly TAG="${ORDER_STATUS_IMAGE_TAG:-dev}"
# postgres and initdb run the server; pg_isready is the health check; psql is for people (and the
# end-to-end suite) who open a session inside the container or from another one.
readonly PROGRAMS=(postgres initdb pg_isready psql)
# The same uid/gid as the official postgres images, so a volume's ownership reads the same.
readonly PG_UID=999

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

check_only=0
case "${1-}" in
    "") ;;
    --check) check_only=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build-postgres-image: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
esac

die() { echo "build-postgres-image: $*" >&2; exit 1; }

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

for tool in docker ldd readelf; do
    command -v "$tool" >/dev/null || die "'$tool' not found on PATH"
done
for program in "${PROGRAMS[@]}"; do
    [[ -x "$PG_BIN/$program" ]] ||
        die "$PG_BIN/$program not found: the image is made from this machine's PostgreSQL $PG_MAJOR packages; install them with 'apt-get install postgresql-$PG_MAJOR' (Debian/Ubuntu)"
done
[[ -d "$PG_LIB" && -f "$PG_SHARE/postgres.bki" ]] ||
    die "$PG_LIB or $PG_SHARE/postgres.bki missing: reinstall postgresql-$PG_MAJOR"
dash="$(command -v dash || true)"
[[ -n "$dash" ]] || die "dash not found (apt-get install dash): it is the image's /bin/sh"
[[ -d /usr/share/zoneinfo ]] || die "/usr/share/zoneinfo missing (apt-get install tzdata)"
((check_only)) && exit 0

context="$(mktemp -d "${TMPDIR:-/tmp}/postgres-image.XXXXXX")"
trap 'rm -rf "$context"' EXIT
rootfs="$context/rootfs"
mkdir -p "$context/empty" "$rootfs/etc" "$rootfs/bin" "$rootfs/tmp" "$rootfs/usr/local/bin" \
    "$rootfs$PG_BIN" "$rootfs$PG_LIB" "$(dirname "$rootfs$PG_SHARE")" "$rootfs/usr/share"
chmod 1777 "$rootfs/tmp"

# Every ELF file of the image, to find the libraries they need.
elves=()
for program in "${PROGRAMS[@]}"; do
    cp "$PG_BIN/$program" "$rootfs$PG_BIN/"
    elves+=("$PG_BIN/$program")
done
# The server's loadable modules (plpgsql, encoding conversions, contrib), without LLVM's JIT:
# llvmjit.so needs libLLVM (about 100 MB) and bitcode/ is only its input; the image sets jit=off.
for module in "$PG_LIB"/*.so; do
    case "${module##*/}" in llvmjit*) continue ;; esac
    cp "$module" "$rootfs$PG_LIB/"
    elves+=("$module")
done
# Shared files (catalog bootstrap, extensions, time zone abbreviations, text search); no man pages.
cp -rL "$PG_SHARE" "$rootfs$PG_SHARE"
rm -rf "$rootfs$PG_SHARE/man"
# Debian's server reads the system's time zone data (--with-system-tzdata).
cp -a /usr/share/zoneinfo "$rootfs/usr/share/zoneinfo"
# initdb starts the bootstrap backend through popen(), that is /bin/sh; so does the entrypoint.
cp "$dash" "$rootfs/bin/sh"
elves+=("$dash")
# initdb imports the system's collations from `locale -a`; without the program it warns "no
# usable system locales". With it (and glibc's built-in C.utf8, when present) it finds C.utf8.
if locale_program="$(command -v locale)"; then
    mkdir -p "$rootfs/usr/bin"
    cp "$locale_program" "$rootfs/usr/bin/locale"
    elves+=("$locale_program")
    if [[ -d /usr/lib/locale/C.utf8 ]]; then
        mkdir -p "$rootfs/usr/lib/locale"
        cp -a /usr/lib/locale/C.utf8 "$rootfs/usr/lib/locale/"
    fi
fi
cp deploy/postgres-entrypoint.sh "$rootfs/usr/local/bin/postgres-entrypoint"
chmod 0755 "$rootfs/usr/local/bin/postgres-entrypoint"

# The libraries, each at its soname in its real directory (with merged /usr, /lib/x86_64-linux-gnu
# is /usr/lib/x86_64-linux-gnu): the loader finds them in its built-in directories, no ld.so.cache.
libraries="$context/libraries.txt"
for elf in "${elves[@]}"; do
    if ! ldd "$elf" >"$context/ldd.out" 2>&1; then
        die "ldd $elf failed: $(cat "$context/ldd.out")"
    fi
    if grep -q 'not found' "$context/ldd.out"; then
        die "$elf needs libraries this machine does not have: $(grep 'not found' "$context/ldd.out" | tr -s ' \t' ' ')"
    fi
    awk '$2 == "=>" && $3 ~ /^\// { print $3 }' "$context/ldd.out" >>"$libraries"
done
sort -u -o "$libraries" "$libraries"
while read -r library; do
    destination="$rootfs$(readlink -f "$(dirname "$library")")/$(basename "$library")"
    mkdir -p "$(dirname "$destination")"
    cp -L "$library" "$destination"
done <"$libraries"
# The dynamic loader, at the path the programs ask for (their PT_INTERP), as a regular file.
interpreter="$(readelf --program-headers "$PG_BIN/postgres" | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')"
[[ -n "$interpreter" ]] || die "no program interpreter in $PG_BIN/postgres"
for elf in "${elves[@]}"; do
    other="$(readelf --program-headers "$elf" | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')"
    [[ -z "$other" || "$other" == "$interpreter" ]] || die "$elf asks for loader $other, not $interpreter"
done
mkdir -p "$rootfs$(dirname "$interpreter")"
cp -L "$interpreter" "$rootfs$interpreter"

cat >"$rootfs/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/sbin/nologin
postgres:x:$PG_UID:$PG_UID:PostgreSQL administrator:/var/lib/postgresql:/bin/sh
PASSWD
cat >"$rootfs/etc/group" <<GROUP
root:x:0:
postgres:x:$PG_UID:
GROUP
# glibc's defaults, written down: users from /etc/passwd, host names from /etc/hosts then DNS
# (psql reaching the server by its compose service name).
cat >"$rootfs/etc/nsswitch.conf" <<NSSWITCH
passwd: files
group: files
hosts: files dns
NSSWITCH

version="$("$PG_BIN/postgres" --version | awk '{ print $3 }')"
package="$(dpkg-query --show --showformat '${Version}' "postgresql-$PG_MAJOR" 2>/dev/null || echo unknown)"
revision="$(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)"
name="$PREFIX/postgres:$TAG"
echo "build-postgres-image: docker build $name (PostgreSQL $version, package $package," \
    "$(wc -l <"$libraries") shared libraries)"
docker build --quiet \
    --label "org.opencontainers.image.vendor=order-status" \
    --label "org.opencontainers.image.title=postgres" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$revision" \
    -t "$name" -f deploy/postgres.Dockerfile "$context" >/dev/null
bytes="$(docker image inspect --format '{{.Size}}' "$name")"
awk -v name="$name" -v bytes="$bytes" 'BEGIN { printf "build-postgres-image: %s, %.1f MB\n", name, bytes / 1e6 }'

#!/usr/bin/env bash
# Builds the docker images of the stack from this workspace, with no registry: a statically
# linked release build of each binary, copied with CA certificates and a passwd/group entry for a
# non-root user into a `FROM scratch` image; and the PostgreSQL image of docker-compose.pg.yml
# from this machine's postgresql-15 package (deploy/build-postgres-image.sh).
#
#   deploy/build-images.sh                 cargo build (static, release) + docker build of all images
#   deploy/build-images.sh --no-cargo      reuse the binaries already built (fails if one is missing)
#   deploy/build-images.sh --no-postgres   leave out the postgres image (no postgresql-15 needed)
#
# Images: ${ORDER_STATUS_IMAGE_PREFIX:-order-status}/{order-service,status-client,otlp-receiver,
# postgres} tagged ${ORDER_STATUS_IMAGE_TAG:-dev} — the names the compose files use.
set -euo pipefail

readonly TARGET_TRIPLE=x86_64-unknown-linux-gnu
readonly PREFIX="${ORDER_STATUS_IMAGE_PREFIX:-order-status}"
readonly TAG="${ORDER_STATUS_IMAGE_TAG:-dev}"
# image name -> cargo package that owns the binary of the same name
readonly -A PACKAGE_OF=(
    ["order-service"]=order-service
    ["status-client"]=status-client
    ["otlp-receiver"]=order-status-tests
)
readonly IMAGES=(order-service status-client otlp-receiver)

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

run_cargo=1
build_postgres=1
while (($#)); do
    case "$1" in
        --no-cargo) run_cargo=0 ;;
        --no-postgres) build_postgres=0 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "build-images: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

for tool in cargo docker readelf strip; do
    command -v "$tool" >/dev/null || { echo "build-images: '$tool' not found on PATH" >&2; exit 1; }
done
# Before the long cargo build: a missing postgresql-15 fails now, with the way to install it.
if ((build_postgres)); then
    deploy/build-postgres-image.sh --check ||
        { echo "build-images: (or leave the postgres image out: --no-postgres)" >&2; exit 1; }
fi
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[[ -r "$ca_bundle" ]] || { echo "build-images: $ca_bundle missing (install ca-certificates)" >&2; exit 1; }

target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
bin_dir="$target_dir/$TARGET_TRIPLE/release"

if ((run_cargo)); then
    packages=()
    for image in "${IMAGES[@]}"; do packages+=(-p "${PACKAGE_OF[$image]}"); done
    # --target keeps these artifacts in target/$TARGET_TRIPLE, apart from the normal (dynamic)
    # builds, and makes RUSTFLAGS apply to the binaries only, not to build scripts.
    echo "build-images: cargo build --release --target $TARGET_TRIPLE (static)"
    # RUSTFLAGS replaces .cargo/config.toml's rustflags: keep its --cfg tokio_unstable.
    RUSTFLAGS='-C target-feature=+crt-static --cfg tokio_unstable' \
        cargo build --release --target "$TARGET_TRIPLE" "${packages[@]}" --bins
fi

# A scratch image has no dynamic loader and no libc: refuse anything that would need one.
assert_static() {
    local binary="$1"
    if readelf --program-headers "$binary" | grep -q 'Requesting program interpreter'; then
        echo "build-images: $binary asks for a dynamic loader (not statically linked)" >&2
        return 1
    fi
    if readelf --dynamic "$binary" | grep -q '(NEEDED)'; then
        echo "build-images: $binary needs shared libraries:" >&2
        readelf --dynamic "$binary" | grep '(NEEDED)' >&2
        return 1
    fi
}

context_root="$target_dir/docker-context"
revision="$(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)"
for image in "${IMAGES[@]}"; do
    binary="$bin_dir/$image"
    [[ -x "$binary" ]] || { echo "build-images: $binary not built (run without --no-cargo)" >&2; exit 1; }
    assert_static "$binary"

    context="$context_root/$image"
    rm -rf "$context"
    mkdir -p "$context/etc" "$context/empty"
    cp deploy/passwd "$context/etc/passwd"
    cp deploy/group "$context/etc/group"
    cp "$ca_bundle" "$context/ca-certificates.crt"
    # Debug info stays in target/ for symbolizing; the image gets symbols but no line tables.
    strip --strip-debug -o "$context/$image" "$binary"

    name="$PREFIX/$image:$TAG"
    echo "build-images: docker build $name"
    docker build --quiet \
        --label "org.opencontainers.image.vendor=order-status" \
        --label "org.opencontainers.image.title=$image" \
        --label "org.opencontainers.image.revision=$revision" \
        -t "$name" -f "deploy/$image.Dockerfile" "$context" >/dev/null
done

built=("${IMAGES[@]}")
if ((build_postgres)); then
    deploy/build-postgres-image.sh
    built+=(postgres)
fi

# The images these tags pointed to before are now untagged: remove them (ours only).
docker image prune --force --filter "label=org.opencontainers.image.vendor=order-status" >/dev/null

echo "build-images: done"
for image in "${built[@]}"; do
    name="$PREFIX/$image:$TAG"
    bytes="$(docker image inspect --format '{{.Size}}' "$name")"
    awk -v name="$name" -v bytes="$bytes" 'BEGIN { printf "  %-40s %6.1f MB\n", name, bytes / 1e6 }'
done

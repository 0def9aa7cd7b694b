#!/usr/bin/env bash
# Guards the orders.v1 contract: `buf lint` (configured in proto/buf.yaml), then `buf breaking`
# against every earlier version of proto/orders/ in this clone's git history — not only the
# previous commit, so a change split over several commits (add a field, later drop it) is caught
# too. Needs the Buf CLI (`pip install buf-bin`). Exits non-zero on the first violation.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

buf lint
echo "buf lint: ok"

mapfile -t versions < <(git log --format=%H -- orders)
if ((${#versions[@]} == 0)); then
    echo "buf breaking: no earlier version of proto/orders in this clone's history"
    exit 0
fi
# The repository's own .git directory (in a git worktree, .git is only a file pointing there).
git_dir="$(cd "$(git rev-parse --git-common-dir)" && pwd)"
for commit in "${versions[@]}"; do
    buf breaking --against "${git_dir}#ref=${commit},subdir=proto"
done
echo "buf breaking: ok against ${#versions[@]} earlier version(s) of proto/orders"

#!/usr/bin/env bash
# The tokio canary: runs the probe's watchdog tests against the oldest and
# the newest tokio the probe's manifest accepts.
#
# The stable stuck-poll rule reads two of tokio's internals that no semver
# promise covers: a worker publishes its counters every `event_interval`
# (61) scheduler ticks, and its park/unpark count is odd while it runs a
# task. A tokio release that changes either would silently blind the rule;
# this catches it before users do. The tests run in a scratch workspace of
# the proto and probe crates, whose lockfile is pinned to each version in
# turn (the project's own lockfile is left alone).
#
# Usage: scripts/tokio-canary.sh [VERSION...]   (default: oldest and newest)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

# The range is the probe's own `tokio = { version = ">=A, <B", ... }`.
oldest=$(sed -n 's/^tokio = { version = ">=\([0-9.]*\), <2".*/\1/p' "$root/probe/Cargo.toml" | head -n1)
if [ -z "$oldest" ]; then
  echo "tokio-canary: probe/Cargo.toml has no 'tokio = { version = \">=X, <2\" ... }' line" >&2
  exit 2
fi
versions=("$@")
if [ ${#versions[@]} -eq 0 ]; then
  versions=("$oldest" newest)
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r "$root/proto" "$root/probe" "$scratch/"
# The real root manifest, with only these two members.
sed -e 's/^members = .*/members = ["proto", "probe"]/' \
    -e '/^exclude = /d' "$root/Cargo.toml" > "$scratch/Cargo.toml"
cp "$root/Cargo.lock" "$scratch/"
target="${CARGO_TARGET_DIR:-$root/target}/tokio-canary"

for version in "${versions[@]}"; do
  if [ "$version" = newest ]; then
    cargo update --quiet --manifest-path "$scratch/Cargo.toml" -p tokio
  else
    cargo update --quiet --manifest-path "$scratch/Cargo.toml" -p tokio --precise "$version"
  fi
  resolved=$(cargo tree --quiet --manifest-path "$scratch/Cargo.toml" -p meshwatch-probe \
    --depth 1 -e normal | sed -n 's/.*tokio v\([0-9.]*\).*/\1/p' | head -n1)
  echo "tokio-canary: the watchdog's tests against tokio $resolved ($version)"
  CARGO_TARGET_DIR="$target" cargo test --quiet --manifest-path "$scratch/Cargo.toml" \
    -p meshwatch-probe --lib watchdog
done

#!/usr/bin/env bash
# obd.sh — fetch the Open Bandit Dataset sample (ZOZO's fashion e-commerce
# logs, "all" campaign, 10,000 impressions each of the uniform-random and the
# Bernoulli Thompson Sampling policy) that obp's source package on PyPI ships,
# and cache it outside the repository. Prints the directory that holds
# random/all/ and bts/all/, each with all.csv and item_context.csv.
#
#   scripts/obd.sh          fetch (once) and print the directory
#
# The data is never committed: it lives in $FLYWHEEL_CACHE/obd-$OBP_VERSION
# (default ~/.cache/flywheel/obd-0.5.7). The Open Bandit Dataset is under
# CC BY 4.0 (Saito et al., "Open Bandit Dataset and Pipeline", NeurIPS 2021).
set -euo pipefail

CACHE="${FLYWHEEL_CACHE:-$HOME/.cache/flywheel}"
OBP_VERSION="${FLYWHEEL_OBP_VERSION:-0.5.7}"
OUT="$CACHE/obd-$OBP_VERSION"
FILES=(random/all/all.csv random/all/item_context.csv bts/all/all.csv bts/all/item_context.csv)

have() {
  for f in "${FILES[@]}"; do [[ -s "$OUT/$f" ]] || return 1; done
}

if ! have; then
  mkdir -p "$CACHE"
  tmp="$(mktemp -d "$CACHE/obd.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  PIP="${FLYWHEEL_PIP:-}"
  if [[ -z "$PIP" ]]; then
    if command -v pip3 >/dev/null; then PIP="pip3 --disable-pip-version-check"; else PIP="python3 -m pip --disable-pip-version-check"; fi
  fi
  # The source archive (obp 0.5.7 requires Python < 3.10 to install, not to download).
  $PIP download --quiet --no-deps --no-binary :all: --ignore-requires-python -d "$tmp" "obp==$OBP_VERSION" >&2
  archive="$(ls "$tmp"/obp-"$OBP_VERSION".tar.gz)"
  mkdir -p "$tmp/x"
  tar -xzf "$archive" -C "$tmp/x" --wildcards '*/obp/dataset/obd/*'
  src="$(echo "$tmp"/x/*/obp/dataset/obd)"
  for f in "${FILES[@]}"; do
    [[ -s "$src/$f" ]] || { echo "obd.sh: $f is not in $archive" >&2; exit 1; }
  done
  rm -rf "$OUT.tmp" && mkdir -p "$OUT.tmp"
  for f in "${FILES[@]}"; do mkdir -p "$OUT.tmp/$(dirname "$f")" && cp "$src/$f" "$OUT.tmp/$f"; done
  rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
fi
echo "$OUT"

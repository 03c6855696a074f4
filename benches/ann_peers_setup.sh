#!/usr/bin/env bash
# The Python ANN peers of benches/ann.rs in their own venv (idempotent):
# numpy, faiss-cpu, usearch and chroma-hnswlib (the hnswlib library as a
# wheel; the hnswlib project publishes none for this Python), binary wheels
# only and no dependencies beyond what they import.
#   benches/ann_peers_setup.sh VENV_DIR
set -euo pipefail
venv="${1:?usage: benches/ann_peers_setup.sh VENV_DIR}"
check='import numpy, faiss, usearch.index, hnswlib'
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" 2>/dev/null; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check --only-binary=:all: --no-deps \
  numpy faiss-cpu usearch numkong chroma-hnswlib packaging tqdm
"$venv/bin/python" -c "$check"
"$venv/bin/python" - <<'PY'
from importlib.metadata import version
print("ANN peers:", ", ".join(f"{p} {version(p)}" for p in ["numpy", "faiss-cpu", "usearch", "chroma-hnswlib"]))
PY

#!/usr/bin/env bash
# Create .venv (if missing) and install fairseq_xlm with its test extra.
#
# Order matters on CPU-only machines:
#  1. torch==2.13.0 first (a CPU wheel; an unpinned torch can pull a multi-GB CUDA build).
#  2. fairseq-fixed (upstream fairseq + the Python 3.11 fix) built against that torch, without build
#     isolation (isolation would fetch another torch) and without its hard torchaudio pin
#     (torchaudio wheels pin other torch releases; fairseq only imports torchaudio in speech examples).
#  3. fairseq's remaining runtime requirements, then this package (editable) and its extras.
# Idempotent: the Makefile only calls this when the stamp file is older than pyproject.toml.
set -euo pipefail

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
FAIRSEQ_SPEC=${FAIRSEQ_SPEC:-fairseq-fixed==0.12.3.1}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# pip's notes about this machine's local index mirrors and about fairseq-fixed's torchaudio pin (left out on
# purpose, see above) are noise here; everything else pip prints is kept.
pip_install() {
  "$VENV/bin/python" -m pip --disable-pip-version-check -q install "$@" 2>&1 \
    | { grep -v -e "^WARNING: Location 'file:" -e "requires torchaudio" \
        -e "dependency resolver does not currently take into account" || true; }
  return "${PIPESTATUS[0]}"
}

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "[install] $TORCH_SPEC"
  pip_install "$TORCH_SPEC"
fi
pip_install "setuptools<81" wheel cython "numpy>=1.26,<3"

if ! "$VENV/bin/python" -c "import fairseq" 2>/dev/null; then
  echo "[install] $FAIRSEQ_SPEC (compiles from source: about 5-6 minutes on 2 cores)"
  pip_install --no-build-isolation --no-deps "$FAIRSEQ_SPEC"
fi
# fairseq-fixed's own requirements, less torchaudio (see above).
pip_install cffi "hydra-core==1.3.2" "omegaconf==2.3.0" regex "sacrebleu>=2" tqdm bitarray \
  scikit-learn packaging
pip_install sentencepiece "sacremoses>=0.1" "pytest>=7" "transformers>=5" "protobuf>=4" "matplotlib>=3.7" \
  "tensorboardX>=2.6" "scipy>=1.10" "fastBPE==0.1.0" "mosestokenizer==1.2.1"
# make replicate's runner: jobs as local processes or SLURM jobs (submitit, maintained by Meta; hydra's launcher uses it)
pip_install "submitit>=1.5"
# hydra's submitit launcher: fairseq-hydra-train -m sweeps of configs/ on SLURM (submitit_slurm) or as local processes
pip_install "hydra-submitit-launcher==1.2.0"
# get_data wiki: WikiExtractor, the program the authors' get-data-wiki.sh runs on Wikipedia dumps.
pip_install "wikiextractor>=3.1"
# prepare_paper: openssl's AES-CTR stream of the authors' seeded split, their zh / th word segmenters.
pip_install "cryptography>=41" "jieba>=0.42" "pythainlp>=4"
# make test runs on 2 workers (pytest-xdist); the workers share the Bible data-bins through a file lock
pip_install "pytest-xdist>=3.5" "filelock>=3.12"
# The project itself, last: its requirements are all in place by now, so pip has nothing to report missing
# (installed earlier, it listed each requirement not yet installed). --no-deps so pip does not try to satisfy
# fairseq-fixed's torchaudio pin.
pip_install --no-deps --no-build-isolation -e ".[test]"
echo "[install] done: $("$VENV/bin/python" -c 'import torch, fairseq; print("torch", torch.__version__, "fairseq", fairseq.__version__)')"

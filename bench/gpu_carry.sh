#!/usr/bin/env bash
# What bench/gpu.sh needs on a lent GPU machine that lacks it, gathered here beforehand so that
# the GPU's minutes go to measuring (issue 28): the Python packages imclass requires that the
# device image does not hold, as CPython 3.12 manylinux wheels in .whl/, and the four
# Fashion-MNIST IDX files in .fmnist/ (the device reaches no network). Both folders are kept
# out of git (.git/info/exclude) and travel as the device call's `carry`. Prints that call.
#
#   bench/gpu_carry.sh          then: run(command=<printed>, carry=[".whl", ".fmnist"])
set -euo pipefail
cd "$(dirname "$0")/.."
# imclass's requirements missing from the device image (its package list: the device tool's
# KINDS.md), with what they need in turn that is missing too; versions as installed here
WHEELS="kornia kornia_rs captum optuna alembic colorlog sqlalchemy mako imagehash
pywavelets iterative-stratification torch-lr-finder"
PIP=${PIP:-.venv/bin/pip}
for excluded in /.whl/ /.fmnist/; do
    grep -qxF "$excluded" .git/info/exclude 2>/dev/null || echo "$excluded" >> .git/info/exclude
done
rm -rf .whl && mkdir -p .whl .fmnist
for name in $WHEELS; do
    version=$("$PIP" show "$name" 2>/dev/null | sed -n 's/^Version: //p')
    spec=$name${version:+==$version}
    "$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$spec"
done
cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .fmnist/ 2>/dev/null \
    || cp ~/.cache/imclass/fashion-mnist/*-ubyte.gz .fmnist/
du -sh .whl .fmnist
cat <<'CMD'
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; PYTHON=python3 DATA_DIR=.fmnist bash bench/gpu.sh $OUT/gpu
CMD

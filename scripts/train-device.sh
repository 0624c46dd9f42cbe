#!/usr/bin/env bash
# Trains the default-model candidates on a GPU machine (torch and transformers in its python3,
# no registry, no network), all at once: the models are small, so one GPU runs them side by side.
# Here first (the starting cut and the cross-fitted teacher, which need packages that machine
# lacks or minutes of CPU it need not spend):
#     python -m bertgate_export.train data/debian .train-carry/base6 --layers 6 --vocab 9000 \
#         --adjust --teacher-weight 0.5 --teacher-cache .train-carry/teacher.npz --base-only
# then, with .train-carry carried:  bash scripts/train-device.sh
#
# Each candidate checkpoints every epoch, so a run cut off by the device's time limit resumes
# (on any machine) with its own command plus --resume. The choice among candidates is made on
# the train split's dev slice (--adjust holds it out), never on test: the most accurate there
# among those whose fp16 bundle fits the 22 MB budget. Its weights and the runner-up's come
# back under $OUT, with every candidate's log and training.json.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-/tmp/bertgate-train}
WORK=/tmp/bertgate-train-work
LIMIT=${TRAIN_LIMIT_S:-330}
mkdir -p "$OUT_DIR" "$WORK"
export PYTHONPATH=$PWD/python PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# name|layers|vocab|epochs|lr|teacher weight|batch   (4 layers fit 22 MB with vocab <= 8,000).
# Sized for the device's time: the models are too small to fill the GPU, so a step costs its
# kernel launches, and processes share the GPU by turns: batches of 64 halve the steps.
CANDIDATES="
l4-e12|4|8000|12|2e-4|0.5|32
l4-e20-b64|4|8000|20|3e-4|0.5|64
l4-e20-b64-ce|4|8000|20|3e-4|0|64
l3-e20-b64|3|9000|20|4e-4|0.5|64
l6-e12-b64|6|9000|12|2e-4|0.5|64
"
for c in $CANDIDATES; do
  IFS='|' read -r name layers vocab epochs lr weight batch <<< "$c"
  # A candidate the time limit cut off continues from its last epoch on the next call, while
  # the machine (and /tmp) is still there.
  resume=()
  [ -f "$WORK/$name/hf/training.json" ] && continue
  [ -f "$WORK/$name/checkpoint/state.json" ] && resume=(--resume)
  timeout "$LIMIT" python3 -m bertgate_export.train data/debian "$WORK/$name/bundle" --device cuda \
    --base .train-carry/base6 --layers "$layers" --vocab "$vocab" --epochs "$epochs" --lr "$lr" --batch "$batch" \
    --teacher-weight "$weight" --teacher-cache .train-carry/teacher.npz --adjust --features \
    --checkpoint "$WORK/$name/checkpoint" --hf-dir "$WORK/$name/hf" --no-export "${resume[@]}" \
    >> "$WORK/$name.log" 2>&1 &
done
wait
nvidia-smi --query-gpu=memory.used --format=csv,noheader || true

python3 - "$WORK" "$OUT_DIR" <<'PY'
import json, shutil, sys, tarfile
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = []
for log in sorted(work.glob("*.log")):
    name = log.stem
    t = work / name / "hf" / "training.json"
    if not t.exists():
        state = work / name / "checkpoint" / "state.json"
        done = json.loads(state.read_text())["epoch"] if state.exists() else 0
        print(f"{name:12} did not finish (last checkpoint: epoch {done}); tail of its log:")
        print("\n".join(log.read_text().splitlines()[-3:]))
        continue
    j = json.loads(t.read_text())
    adj = j["logit_adjustment"]
    fits = j["layers"] <= 3 or (j["layers"] == 4 and j["vocabulary"] <= 8000)
    rows.append((adj["dev_accuracy"], adj["dev_macro_f1"], name, fits, j))
    print(f"{name:12} dev accuracy {adj['dev_accuracy']:.4f} macro-F1 {adj['dev_macro_f1']:.4f} "
          f"tau {adj['tau']} calibration[:2000] {j['calibration_accuracy_first_2000']:.4f} "
          f"{j['minutes']} min {'fits' if fits else 'too big at fp16'}")
chosen = sorted((r for r in rows if r[3]), key=lambda r: (-r[0], -r[1]))[:2]
# A device run brings back 8 files at most: each choice comes back as its weight shards and
# one tar of the rest.
for rank, r in enumerate(chosen):
    hf, dest = work / r[2] / "hf", out / f"{'chosen' if rank == 0 else 'runner-up'}-{r[2]}"
    dest.mkdir()
    small = []
    for f in hf.iterdir():
        if f.suffix == ".safetensors":
            shutil.copy(f, dest / f.name)
        else:
            small.append(f.name)
    with tarfile.open(dest / "rest.tar", "w") as tar:
        for name in small:
            tar.add(hf / name, arcname=name)
(work / "candidates.json").write_text(json.dumps({r[2]: r[4] for r in rows}, indent=2))
print("chosen:", [r[2] for r in chosen])
PY
tar -czf "$OUT_DIR/logs.tar.gz" -C "$WORK" candidates.json $(cd "$WORK" && ls *.log)

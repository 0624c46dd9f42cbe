"""Training survives a lost machine: a run stopped after an epoch resumes from its checkpoint on a
fresh invocation, records the resume, and refuses to continue under other choices."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
WORDS = {
    "a": "network socket server protocol client http",
    "b": "graphics image colour font render window",
    "c": "sound audio music player codec volume",
}


def write_data(out: Path, suffix: str = "") -> Path:
    out.mkdir(exist_ok=True)
    (out / "manifest.json").write_text(json.dumps({"labels": list(WORDS)}))
    for split, n in (("train", 60), ("calibration", 12)):
        rows = []
        for i in range(n):
            label = list(WORDS)[i % 3]
            words = WORDS[label].split()
            text = " ".join(words[(i + k) % len(words)] for k in range(4)) + suffix
            rows.append({"text": text, "label": label, "source": f"src{i}", "package": f"pkg{i}"})
        with gzip.open(out / f"{split}.jsonl.gz", "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"))


def train(data_dir, base, tmp, *extra):
    args = [sys.executable, "-m", "bertgate_export.train", str(data_dir), str(tmp / "bundle")]
    args += ["--base", str(base), "--layers", "1", "--vocab", "600", "--max-length", "32", "--batch", "8"]
    args += ["--checkpoint", str(tmp / "ck"), "--hf-dir", str(tmp / "hf"), "--no-export", *extra]
    return subprocess.run(args, cwd=ROOT / "python", capture_output=True, text=True, timeout=300)


def test_a_stopped_run_resumes_where_it_stopped_and_records_the_resume(data_dir, model_dir, tmp_path):
    first = train(data_dir, model_dir, tmp_path, "--epochs", "3", "--epochs-now", "1")
    assert first.returncode == 0, first.stderr
    state = json.loads((tmp_path / "ck" / "state.json").read_text())
    assert (state["epoch"], state["step"], state["seen"]) == (1, 8, 60)  # 60 texts in batches of 8
    assert not (tmp_path / "hf").exists(), "a stopped run writes no model"
    after_one = load_file(str(tmp_path / "ck" / state["weights"][0]))

    resumed = train(data_dir, model_dir, tmp_path, "--epochs", "3", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "epoch 1 done, step 8" in resumed.stdout
    training = json.loads((tmp_path / "hf" / "training.json").read_text())
    assert training["steps"] == 24 and training["epochs"] == 3.0
    assert "--epochs-now 1" in training["command"], "the first command is the run's command"
    assert [r["from_epoch"] for r in training["resumes"]] == [2]
    assert "--resume" in training["resumes"][0]["command"]
    state = json.loads((tmp_path / "ck" / "state.json").read_text())
    assert state["epoch"] == 2, "the last epoch ends the run: its model is the output, not a checkpoint"
    assert [p.name for p in (tmp_path / "ck").glob("epoch-*")] == ["epoch-002"], "older epochs are removed"
    later = load_file(str(tmp_path / "ck" / state["weights"][0]))
    moved = [k for k in after_one if not after_one[k].equal(later[k])]
    assert "classifier.weight" in moved, "the resumed epochs trained the model"


def test_a_resume_under_other_choices_is_refused_naming_them(data_dir, model_dir, tmp_path):
    assert train(data_dir, model_dir, tmp_path, "--epochs", "2", "--epochs-now", "1").returncode == 0
    other = train(data_dir, model_dir, tmp_path, "--epochs", "2", "--lr", "1e-3", "--resume")
    assert other.returncode != 0
    assert "--resume: this run's choices differ from the checkpoint's: {'lr': (0.00015, 0.001)}" in other.stderr


def test_a_resume_on_other_data_or_pieces_is_refused_and_a_fresh_run_keeps_off_a_checkpoint(
    data_dir, model_dir, tmp_path
):
    assert train(data_dir, model_dir, tmp_path, "--epochs", "2", "--epochs-now", "1").returncode == 0
    # Other texts prune to other pieces (or another order): the checkpoint's embedding rows would be misread.
    other = write_data(tmp_path / "other-data", suffix=" the library file system")
    r = train(other, model_dir, tmp_path, "--epochs", "2", "--resume")
    assert r.returncode != 0 and "'vocabulary_sha256'" in r.stderr, r.stderr
    r = train(data_dir, model_dir, tmp_path, "--epochs", "2")
    assert r.returncode != 0 and "holds a run already: continue it with --resume" in r.stderr, r.stderr


def test_resume_and_epochs_now_need_a_step_schedule_and_a_checkpoint(data_dir, model_dir, tmp_path):
    for extra, message in (
        (["--resume"], "--resume needs --checkpoint and --epochs"),
        (["--minutes", "1", "--epochs-now", "1"], "--epochs-now needs --checkpoint and --epochs"),
        (["--epochs", "2", "--epochs-now", "0"], "--epochs-now must be at least 1"),
        (["--epochs", "0"], "--epochs must be above 0"),
    ):
        r = train(data_dir, model_dir, tmp_path, *extra)
        assert r.returncode != 0 and message in r.stderr, r.stderr

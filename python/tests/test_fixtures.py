"""Test fixtures are the same bytes in every checkout: the Node tests' data-dependent
assertions then hold on a fresh clone as they did where they were written."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import bertgate_export

# One fixture, as fixtures.build makes it.
BUILD = """
import sys, tempfile
from pathlib import Path
from bertgate_export.fixtures import SPECS, export_fixture
from bertgate_export.testmodels import build_model_dir
with tempfile.TemporaryDirectory() as tmp:
    export_fixture(build_model_dir(SPECS["labels2"], Path(tmp) / "labels2"), Path(sys.argv[1]))
"""


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_a_fixture_is_the_same_bytes_in_two_checkouts(tmp_path):
    # Two copies of the package at different paths, each in its own process: two clones.
    runs = []
    for clone in (tmp_path / "one", tmp_path / "two" / "deeper"):
        shutil.copytree(Path(bertgate_export.__file__).parent, clone / "bertgate_export")
        env = {**os.environ, "PYTHONPATH": str(clone), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        command = [sys.executable, "-c", BUILD, str(clone / "labels2")]
        runs.append((clone, subprocess.Popen(command, cwd=clone, env=env, stderr=subprocess.PIPE)))
    for _, run in runs:
        assert run.wait() == 0, run.stderr.read().decode()
        run.stderr.close()
    first, second = (digests(clone / "labels2") for clone, _ in runs)
    assert set(first) == {"bundle.json", "config.json", "model.pt", "tokenizer.json", "tokenizer_config.json"}
    assert first == second

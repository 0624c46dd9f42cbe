"""What the exporter refuses before it writes a bundle bertgate would refuse or serve wrongly,
and what a refusal leaves behind: nothing."""

import json
import os
import shutil

import pytest

from bertgate_export import export
from bertgate_export.export import ExportError, export_bundle
from bertgate_export.testmodels import ModelSpec, build_model_dir


def edited(model_dir, tmp_path, name, **changes):
    """A copy of model_dir with `changes` made to its JSON file `name`."""
    copy = tmp_path / "edited"
    shutil.copytree(model_dir, copy)
    data = json.loads((copy / name).read_text())
    data.update(changes)
    (copy / name).write_text(json.dumps(data))
    return copy


def refusal(source, tmp_path):
    """The message of the ExportError that exporting `source` to tmp_path/bundle raises."""
    with pytest.raises(ExportError) as refused:
        export_bundle(source, tmp_path / "bundle")
    return str(refused.value)


@pytest.mark.parametrize("problem", ["multi_label_classification", "regression"])
def test_refuses_a_model_that_is_not_single_label(model_dir, tmp_path, problem):
    source = edited(model_dir, tmp_path, "config.json", problem_type=problem)
    assert refusal(source, tmp_path) == (
        f"{source} is a {problem} model (config.json problem_type {problem!r}); bertgate serves single-label "
        "classification (softmax over the labels, one label per text)"
    )
    assert not (tmp_path / "bundle").exists()


def test_refuses_a_regression_head(tmp_path):
    source = build_model_dir(ModelSpec(labels=["score"], hidden=32, heads=2, max_positions=16), tmp_path / "hf")
    assert refusal(source, tmp_path) == (
        "num_labels is 1: a one-output head is a regression model; bertgate serves single-label classification, "
        "which needs at least 2 labels"
    )


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"0": "a", "1": "b", "2": "a"}, "config.json id2label names 'a' twice"),
        ({"0": "a", "1": "", "2": "c"}, "config.json id2label has no non-empty label for id 1"),
    ],
)
def test_refuses_labels_bertgate_would_refuse(model_dir, tmp_path, labels, message):
    source = edited(model_dir, tmp_path, "config.json", id2label=labels, label2id={})
    assert refusal(source, tmp_path) == f"{source}: {message}"


def test_refuses_a_tokenizer_larger_than_the_embedding_table(tmp_path):
    spec = ModelSpec(labels=["a", "b"], hidden=32, heads=2, max_positions=16, model_vocab_size=300)
    source = build_model_dir(spec, tmp_path / "hf")
    assert refusal(source, tmp_path) == (
        f"the tokenizer of {source} gives ids up to 1199, but the model has only 300 word embeddings "
        "(tokens added without model.resize_token_embeddings?)"
    )


@pytest.mark.parametrize("declared", [1, 2, 2.5, 1e-300, float("nan"), True])
def test_refuses_a_declared_token_limit_that_is_not_one(model_dir, tmp_path, declared):
    source = edited(model_dir, tmp_path, "tokenizer_config.json", model_max_length=declared)
    assert refusal(source, tmp_path) == (
        f"tokenizer_config.json declares model_max_length {declared!r}; a token limit must be a whole number of "
        "at least 3 ([CLS], a token, [SEP]): correct it, or remove it to use the model's 48 positions"
    )


@pytest.mark.parametrize(("declared", "length"), [(40, 40), (3, 3), (40.0, 40), (1e30, 48)])
def test_keeps_a_declared_token_limit_or_the_no_limit_sentinel(model_dir, tmp_path, declared, length):
    source = edited(model_dir, tmp_path, "tokenizer_config.json", model_max_length=declared)
    assert export_bundle(source, tmp_path / "bundle")["max_length"] == length
    assert json.loads((tmp_path / "bundle" / "tokenizer_config.json").read_text())["model_max_length"] == length


def test_a_failed_parity_check_leaves_nothing_behind(model_dir, tmp_path, monkeypatch):
    def differs(*args, **kwargs):
        raise ExportError("trace differs from eager")

    monkeypatch.setattr(export, "check_parity", differs)
    with pytest.raises(ExportError, match="trace differs from eager"):
        export_bundle(model_dir, tmp_path / "new")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="trace differs from eager"):
        export_bundle(model_dir, tmp_path / "empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
    assert list((tmp_path / "empty").iterdir()) == []


def test_refuses_an_output_that_cannot_take_a_bundle(model_dir, tmp_path, monkeypatch):
    # Refused before the model is loaded.
    monkeypatch.setattr(export.BertForSequenceClassification, "from_pretrained", None)
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    with pytest.raises(ExportError) as refused:
        export_bundle(model_dir, tmp_path / "dangling")
    assert (
        str(refused.value)
        == f"{tmp_path / 'dangling'} is a symbolic link to {tmp_path / 'nowhere'}, which does not exist"
    )
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "calibration.json").write_text("{}")
    with pytest.raises(ExportError) as refused:
        export_bundle(model_dir, tmp_path / "old")
    assert str(refused.value) == f"{tmp_path / 'old'} is not empty: export into a new or empty directory"
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportError) as refused:
        export_bundle(model_dir, tmp_path / "file")
    assert str(refused.value) == f"{tmp_path / 'file'} is a file, not a directory"


def test_a_link_to_an_empty_directory_gets_the_bundle_where_it_points(model_dir, tmp_path):
    (tmp_path / "target").mkdir()
    os.symlink(tmp_path / "target", tmp_path / "link")
    export_bundle(model_dir, tmp_path / "link")
    assert (tmp_path / "link").is_symlink()
    assert "model.pt" in {p.name for p in (tmp_path / "target").iterdir()}

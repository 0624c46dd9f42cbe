import pytest

from bertgate_export.testmodels import ModelSpec, build_model_dir


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A small random-weight BERT classifier with a locally trained tokenizer."""
    spec = ModelSpec(labels=["a", "b", "c"], hidden=32, heads=2, max_positions=48, seed=11)
    return build_model_dir(spec, tmp_path_factory.mktemp("model") / "hf")

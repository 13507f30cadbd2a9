"""Checkpoints: atomic writes, weights_only round trip, one-sentence errors for damaged files."""

import pytest
import torch

from dltool.errors import ConfigError
from dltool.train import checkpoint


def payload():
    model = torch.nn.Linear(3, 2)
    return {"model": model.state_dict(), "config": {"trainer": {"epochs": 3}}, "epoch": 2,
            "class_names": ["a", "b"], "norm": {"kind": "standardize", "mean": torch.zeros(3)},
            "rng": {"torch": torch.get_rng_state()}}


def test_round_trip_with_weights_only(tmp_path):
    p = payload()
    checkpoint.save(p, tmp_path / "c.pt")
    back = checkpoint.load(tmp_path / "c.pt")
    assert torch.equal(back["model"]["weight"], p["model"]["weight"])
    assert back["config"] == p["config"] and back["class_names"] == ["a", "b"]
    torch.load(tmp_path / "c.pt", weights_only=True)  # loadable by plain torch too


def test_failed_write_leaves_the_old_file_intact(tmp_path):
    target = tmp_path / "best.pt"
    checkpoint.save(payload(), target)
    good = target.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        checkpoint.save({"model": {}, "config": {}, "bad": Unpicklable()}, target)
    assert target.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temp file left behind


def test_truncated_file_gets_one_sentence(tmp_path):
    target = tmp_path / "best.pt"
    checkpoint.save(payload(), target)
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(ConfigError, match="cannot be read"):
        checkpoint.load(target)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        checkpoint.load(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="not a dltool checkpoint"):
        checkpoint.load(tmp_path / "other.pt")

"""Fine-tuning: init_from a previous run's best.pt, reinit, freeze (frozen weights bitwise unchanged),
pretrained_lr_mult, and torchvision backbone weights read from torchvision's own cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from dltool.config.schema import ModelConfig
from dltool.errors import ConfigError
from dltool.models import backbones
from dltool.models.builder import build_model
from dltool.models.finetune import apply
from dltool.models.summary import rows
from dltool.train import checkpoint as ckpt_io
from dltool.train.run import prepare
from tests.conftest import copy_of_default_run, make_config, run_cli

FROZEN = ["conv1", "bn1", "conv2", "bn2", "conv3"]  # freeze: 5 on cnn_digits


@pytest.fixture(scope="module")
def pretrained(default_run_3, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (short) cnn_digits run: its run dir holds checkpoints/best.pt (a copy of the session's)."""
    return copy_of_default_run(default_run_3, tmp_path_factory, "pretrain")


def finetune_cfg(run: Path, *extra: str):
    return make_config("experiment=finetune", f"model.init_from={run}", "trainer.progress=false", *extra)


def test_init_from_loads_best_pt_except_reinit_layers(pretrained: Path) -> None:
    best = ckpt_io.load(pretrained / "checkpoints" / "best.pt")["model"]
    p = prepare(finetune_cfg(pretrained))
    state = p.setup.model.state_dict()
    for k in best:
        if k.startswith("layers.fc2."):
            assert not torch.equal(state[k], best[k])  # reinit: a fresh classifier
        else:
            assert torch.equal(state[k], best[k]), k
    trainable = {n for n, q in p.setup.model.named_parameters() if q.requires_grad}
    assert trainable == {"layers.fc1.weight", "layers.fc1.bias", "layers.fc2.weight", "layers.fc2.bias"}
    lrs = {g["lr"] for g in p.setup.optimizer.param_groups}
    assert sorted(lrs) == pytest.approx([1e-4, 1e-3])  # fc2 at optimizer.lr, the pretrained fc1 at 0.1 x
    table = {r[0]: r[4] for r in rows(p.built)}
    assert table["conv1"] == "frozen" and table["bn2"] == "frozen" and table["fc1"] == "lr x0.1"
    assert table["fc2"] == "yes"


@pytest.mark.slow
def test_finetune_run_keeps_frozen_weights_bitwise_and_trains_the_rest(pretrained: Path, tmp_path: Path) -> None:
    res = run_cli("train", "experiment=finetune", f"model.init_from={pretrained}", "trainer.epochs=3",
                  "hydra.run.dir=ft", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    before = ckpt_io.load(pretrained / "checkpoints" / "best.pt")["model"]
    after = ckpt_io.load(tmp_path / "ft" / "checkpoints" / "last.pt")["model"]
    for k in before:
        layer = k.split(".")[1]
        if layer in FROZEN:  # weights, biases and batch-norm running statistics alike
            assert torch.equal(before[k], after[k]), k
        else:
            assert not torch.equal(before[k], after[k]), k
    assert "init_from" in (tmp_path / "ft" / "train.log").read_text()


@pytest.mark.slow
def test_freeze_errors_are_one_sentence(pretrained: Path) -> None:
    with pytest.raises(ConfigError, match=r"model.freeze=99 must be between 0 and 7"):
        prepare(finetune_cfg(pretrained, "model.freeze=99"))
    with pytest.raises(ConfigError, match=r"model.freeze entry='conv9' is not known. Did you mean 'conv.'\? "
                                          r"Valid choices: bn1, bn2, conv1, conv2, conv3, fc1, fc2\."):
        prepare(finetune_cfg(pretrained, "model.freeze=[conv9]"))
    with pytest.raises(ConfigError, match=r"model.reinit entry='fc3' is not known"):
        prepare(finetune_cfg(pretrained, "model.reinit=[fc3]"))
    with pytest.raises(ConfigError, match=r"pretrained_lr_mult=0.1 but nothing is pretrained"):
        prepare(make_config("experiment=finetune"))
    with pytest.raises(ConfigError, match=r"none of the 20 tensors in .*best.pt matches a layer of this model"):
        prepare(finetune_cfg(pretrained, "model=lstm", "data=digits_rows", "model.reinit=[]", "model.freeze=null"))


def test_freeze_by_name_and_pretrained(pretrained: Path) -> None:
    p = prepare(finetune_cfg(pretrained, "model.freeze=[conv2,fc1]", "model.pretrained_lr_mult=1.0"))
    frozen = {n.split(".")[1] for n, q in p.setup.model.named_parameters() if not q.requires_grad}
    assert frozen == {"conv2", "fc1"}
    p = prepare(finetune_cfg(pretrained, "model.freeze=pretrained", "model.pretrained_lr_mult=1.0"))
    trainable = {n.split(".")[1] for n, q in p.setup.model.named_parameters() if q.requires_grad}
    assert trainable == {"fc2"}


def plant_weights(state: dict, torch_home: Path, monkeypatch: pytest.MonkeyPatch, name: str = "resnet18") -> Path:
    """Weights in a temp TORCH_HOME's hub cache under a published-style name: <name>-<first sha256 digits>.pth
    (torchvision's real files cannot be downloaded here, so the URL points at this file's name)."""
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "tmp.pth"
    torch.save(state, tmp)
    file = folder / f"{name}-{hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]}.pth"
    tmp.rename(file)
    monkeypatch.setattr(backbones, "weights_url", lambda w: f"https://download.example/models/{file.name}")
    return file


def test_backbone_weights_come_from_torchvision_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real download path, served from TORCH_HOME's cache file (what a download leaves behind)."""
    from torchvision import models

    torch.manual_seed(1)
    source = models.resnet18(num_classes=1000)
    plant_weights(source.state_dict(), tmp_path, monkeypatch)
    spec = ModelConfig(name="r18", backbone="resnet18", weights="DEFAULT", small_input=True, freeze="pretrained",
                       pretrained_lr_mult=0.1)
    built = build_model(spec, (3, 16, 16), 7)
    torch.nn.init.zeros_(built.model.layers.layer1[0].conv1.weight)  # what a global initializer could do
    mults = apply(built, spec)
    assert torch.equal(built.model.layers.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    trainable = {n for n, q in built.model.named_parameters() if q.requires_grad}
    assert trainable == {"layers.conv1.weight", "layers.fc.weight", "layers.fc.bias"}  # new stem and head
    assert mults == {}  # everything pretrained is frozen, so no layer needs the smaller rate
    assert built.model(torch.randn(2, 3, 16, 16)).shape == (2, 7)


def test_gray_input_keeps_a_pretrained_stem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision import models

    source = models.resnet18(num_classes=1000)
    plant_weights(source.state_dict(), tmp_path, monkeypatch)
    spec = ModelConfig(backbone="resnet18", weights="DEFAULT", small_input=False, pretrained_lr_mult=0.1)
    built = build_model(spec, (1, 64, 64), 3)
    apply(built, spec)
    stem = built.model.layers.conv1.weight  # (64, 1, 7, 7): the RGB kernels summed
    assert torch.allclose(stem[:, 0], source.conv1.weight.sum(dim=1), atol=1e-6)
    assert built.lr_mults["conv1"] == 0.1 and "fc" not in built.lr_mults


def test_planted_cache_file_is_refused_and_never_unpickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pickle that would run code, planted under the published name (wrong hash) or a matching name: refused,
    and the code never runs (weights_only=True)."""
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    file = plant_weights({"x": torch.zeros(1)}, tmp_path, monkeypatch)
    file.write_bytes(pickle.dumps(Evil()))  # the name's hash no longer matches
    spec = ModelConfig(backbone="resnet18", weights="DEFAULT")
    with pytest.raises(ConfigError, match="is not the published file"):
        build_model(spec, (3, 16, 16), 7)
    evil = plant_weights(Evil(), tmp_path / "home2", monkeypatch)  # hash in its name matches: still no code runs
    with pytest.raises(ConfigError, match="holds more than tensors"):
        backbones.load_checked(evil)
    assert not marker.exists()

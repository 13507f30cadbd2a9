"""`dltool list backbones` reads torchvision's classification models from its source: the same names as torchvision's
own registry for the installed version, without importing torchvision."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dltool.models.backbone_names import REGISTERED, backbone_entries, names


def test_names_read_from_the_source_equal_torchvisions_registry():
    from torchvision import models

    from dltool.models.backbones import BACKBONES

    assert names() == sorted(models.list_models(module=models))
    assert backbone_entries() == BACKBONES and len(BACKBONES) >= 20


def test_the_decorator_pattern_reads_a_given_name_and_skips_other_decorators():
    src = ('@register_model()\n@handle_legacy_interface(\n    weights=("pretrained", X),\n)\ndef resnet18(*a):\n'
           '    pass\n\n\n@register_model(name="tiny")\ndef _tiny(*a):\n    pass\n\n\ndef helper():\n    pass\n')
    assert [given or fn for given, fn in REGISTERED.findall(src)] == ["resnet18", "tiny"]


@pytest.mark.slow
def test_list_backbones_does_not_import_torchvision_and_prints_every_model():
    code = ("import sys; from dltool.cli import main\ntry:\n    main(['list', 'backbones'])\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\nassert 'torchvision' not in sys.modules, 'torchvision imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DLTOOL_NO_PROGRESS": "1", "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr[-2000:]
    listed = {line.split("│")[1].strip() for line in out.stdout.splitlines() if line.count("│") == 3}
    assert set(names()) <= listed and {"resnet18", "vgg11", "mobilenet_v3_small"} <= listed

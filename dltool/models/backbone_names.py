"""The names of torchvision's classification models, read from its installed source files without importing it.

`dltool list backbones` only prints names, but importing torchvision (with torch) takes 3-8 s. Its registry is
filled by `@register_model()` decorators on the builder functions of the modules directly in torchvision/models/
(`list_models(module=torchvision.models)`: classification; detection, segmentation, video and quantization live
in subpackages). Those decorators are read here; `tests/test_backbone_names.py` checks the result equals
torchvision's own `list_models` for the installed version. When no source is found (a zipped or compiled
install), `names` returns None and the caller imports torchvision (dltool.models.backbones.BACKBONES).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from dltool.catalog import BACKBONE_FAMILIES, Entry, backbone_family

# @register_model() or @register_model(name="x"), other decorators, then `def builder(`
REGISTERED = re.compile(r"^@register_model\((?:name\s*=\s*)?(?:[\"'](\w+)[\"'])?\)\s*\n(?:.*?\n)??def (\w+)\(",
                        re.M | re.S)


def names() -> list[str] | None:
    """torchvision's classification model names (sorted), or None when its source files cannot be read."""
    spec = importlib.util.find_spec("torchvision")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    found = {given or fn for path in folder.glob("*.py") for given, fn in REGISTERED.findall(path.read_text())}
    return sorted(found) or None


def backbone_entries() -> dict[str, Entry] | None:
    """{name: its family's catalog entry}, as dltool.models.backbones.BACKBONES, or None (then import that)."""
    found = names()
    return None if found is None else {n: BACKBONE_FAMILIES[backbone_family(n)] for n in found}

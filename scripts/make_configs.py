"""Write every file generated from the key table (dltool/config/keys.py), or check that they match it.

    python scripts/make_configs.py          # (re)write the generated files
    python scripts/make_configs.py --check  # exit 1 naming each file that differs from the table

Generated: configs/<group>/<file>.yaml of every variant/preset (and sanity/gradcheck/lr_find.yaml), the JSON
Schemas configs/_schema/<name>.schema.json (dltool/config/json_schema.py; `dltool schema` prints them), and
the modeline of every hand-written config file (model/*, augment/*, experiment/*, hparams_search/*,
train.yaml): `# yaml-language-server: $schema=...`, the first line (after Hydra's `# @package`), which
points editors at the file's schema.

Adding a key: declare it once in dltool/config/keys_data.py or keys_train.py (type, default, one-line doc),
name it in the variants that read it, then run this script. tests/test_keys.py fails while a file differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dltool.config.json_schema import schema_names, schema_text
from dltool.config.keys import SCHEMA_DIR, generated_files, modeline

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
MODELINE = "# yaml-language-server:"


def schema_files() -> dict[str, str]:
    """{path under configs/: text} of every JSON Schema."""
    return {f"{SCHEMA_DIR}/{name}.schema.json": schema_text(name) for name in schema_names()}


def hand_written() -> dict[str, str]:
    """{path under configs/: its text with the modeline as the first line} of every hand-written config file."""
    generated, out = generated_files(), {}
    for path in sorted(CONFIGS.rglob("*.yaml")):
        rel = path.relative_to(CONFIGS).as_posix()
        if rel in generated or rel.startswith("hydra/"):  # Hydra's own launcher/logging files: Hydra's keys
            continue
        lines = [ln for ln in path.read_text().splitlines(keepends=True) if not ln.startswith(MODELINE)]
        head = 0  # Hydra reads `# @package` only above the first other line: the modeline goes after it
        while head < len(lines) and lines[head].startswith("# @"):
            head += 1
        out[rel] = "".join(lines[:head]) + modeline(rel) + "\n" + "".join(lines[head:])
    return out


def sync(files: dict[str, str], check: bool) -> list[str]:
    """The paths whose text differs; written unless check."""
    stale = []
    for rel, text in files.items():
        path = CONFIGS / rel
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(rel)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return stale


def main(argv: list[str]) -> int:
    check = "--check" in argv
    verb = "differ from the key table" if check else "written"
    stale_all = []
    for what, files in (("generated config files", generated_files()), ("JSON Schema files", schema_files()),
                        ("hand-written config files' modelines", hand_written())):
        stale = sync(files, check)
        stale_all += stale
        print(f"{len(stale)} of {len(files)} {what} {verb}" + (": " if stale else ".") + ", ".join(stale))
    return 1 if check and stale_all else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Write every key/value config file from the key table (dltool/config/keys.py), or check that they match it.

    python scripts/make_configs.py          # (re)write configs/<group>/<file>.yaml for every generated file
    python scripts/make_configs.py --check  # exit 1 naming each file that differs from the table

Adding a key: declare it once in dltool/config/keys_data.py or keys_train.py (type, default, one-line doc),
name it in the variants that read it, then run this script. tests/test_keys.py fails while a file differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dltool.config.keys import generated_files

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for rel, text in generated_files().items():
        path = CONFIGS / rel
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(rel)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    verb = "differ from the key table" if check else "written"
    print(f"{len(stale)} of {len(generated_files())} generated config files {verb}" + (": " if stale else ".")
          + ", ".join(stale))
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

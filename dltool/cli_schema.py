"""`dltool schema`: the JSON Schema of the config, generated from the key table (dltool/config/json_schema.py)."""

from __future__ import annotations

from pathlib import Path

from dltool.errors import ConfigError


def cmd_schema(args: list[str]) -> int:
    """Print (or write with --out FILE) the JSON Schema of the config: every group, variant and key.

    usage: dltool schema [--group NAME] [--out FILE]
    Without --group: the schema of a config file (train.yaml, an experiment, your own my.yaml) and of the
    composed config; --group data|model|...|trainer|sanity|gradcheck|lr_find: the schema of one group file
    (configs/<group>/*.yaml). The same files ship in configs/_schema/, and every shipped config file names its
    schema in a `# yaml-language-server: $schema=...` line, so editors validate and complete keys as you type.
    --out must be a new file (nothing is overwritten).
    """
    from dltool.config.json_schema import schema_names, schema_text
    from dltool.config.options import take_options
    from dltool.registry import lookup

    args, opts = take_options(args, {"group": "config", "out": ""})
    if args:
        raise ConfigError(f"dltool schema takes no argument {args[0]!r}: use [--group NAME] [--out FILE].")
    text = schema_text(lookup({n: n for n in schema_names()}, str(opts["group"]), "--group"))
    if not opts["out"]:
        print(text, end="")
        return 0
    out = Path(str(opts["out"]))
    if out.is_symlink() or out.exists():
        raise ConfigError(f"--out {out} already exists; dltool schema writes a new file only (pick another path).")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: the folder {out.parent} does not exist.")
    with open(out, "x") as f:  # exclusive: a file that appeared meanwhile is never replaced
        f.write(text)
    print(f"wrote {out}")
    return 0

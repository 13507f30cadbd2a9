"""The docs cannot drift: every page's fences close, every `console` block's commands are run and their output
compared, the reference pages are the generated ones, the run-dir reference matches a real run, and the site
builds with `mkdocs build --strict`.

A ```console block in README.md or any docs/**/*.md page (new pages are picked up by themselves) holds `$ ...`
lines (dltool in-process, anything else through bash, all in one fresh folder), each followed by the output it
must print: every shown line must appear, in order, in the real
output (whitespace runs count as one space); a line `...` skips any lines, a line ending in ` ...` matches any
line it starts. Outputs that vary from run to run (times, run-dir names, training curves) are shown in ```text
blocks marked `<!-- docs-test: recorded sample ... -->` on the line above (a fence showing `$ ` lines that is
neither fails a test). An HTML comment `<!-- docs-test: slow -->` above a console block puts it in the slow tier.
"""

from __future__ import annotations

import os
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import call_main
from tests.test_readme import sections, unclosed_fences

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SLOW_MARK = "<!-- docs-test: slow -->"
SAMPLE_MARK = "<!-- docs-test: recorded sample"  # a real run's output shown as recorded (times, run dirs, long runs)


def console_blocks(path: Path) -> list[tuple[int, bool, list[str]]]:
    """(line number, slow, lines) of every ```console block of a page."""
    lines, out = path.read_text().splitlines(), []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```console":
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            slow = i > 0 and lines[i - 1].strip() == SLOW_MARK
            out.append((i + 1, slow, [ln.strip() for ln in lines[i + 1:end]]))
            i = end
        i += 1
    return out


def commands(block: list[str]) -> list[tuple[str, list[str]]]:
    """[(command, the output lines shown under it)]."""
    out: list[tuple[str, list[str]]] = []
    for line in block:
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif line and out:
            out[-1][1].append(line)
    return out


def squash(line: str) -> str:
    return " ".join(line.split())


def missing(shown: list[str], printed: str) -> str | None:
    """The first shown line that the printed output lacks (in order), or None."""
    real = [squash(ln) for ln in printed.splitlines() if ln.strip()]
    pos, skipping = 0, False
    for want in map(squash, shown):
        if want == "...":
            skipping = True
            continue
        prefix = want[:-4] if want.endswith(" ...") else None
        hits = [k for k in range(pos, len(real))
                if (real[k].startswith(prefix) if prefix is not None else real[k] == want)]
        if not hits or (not skipping and hits[0] != pos):
            return want
        pos, skipping = hits[0] + 1, False
    return None


BLOCKS = [pytest.param(path, number, block, id=f"{path.relative_to(ROOT)}:{number}",
                       marks=[pytest.mark.slow] if slow else [])
          for path in PAGES for number, slow, block in console_blocks(path)]


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_code_fence_of_every_page_is_closed(path):
    assert unclosed_fences(path.read_text()) == []


@pytest.mark.parametrize("path, number, block", BLOCKS)
def test_console_block_prints_what_the_page_shows(path, number, block, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLTOOL_NO_PROGRESS", "1")
    torch.set_num_threads(1)
    for command, shown in commands(block):
        argv = shlex.split(command)
        if argv[0] == "dltool":  # in-process, as the fast tests run it
            capsys.readouterr()
            call_main(argv[1:])
            out, err = capsys.readouterr()
        else:  # a shell line that prepares a file (printf ... > my.yaml, python -c ...)
            done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=tmp_path)
            out, err = done.stdout, done.stderr
        bad = missing(shown, out + err)
        assert bad is None, f"{path.name}:{number}: `{command}` did not print {bad!r}; it printed:\n{out}{err}"


def unchecked_commands(path: Path) -> list[int]:
    """Line numbers of fences that show `$ ` commands but are neither run (console) nor marked as a recorded sample."""
    lines, out, i = path.read_text().splitlines(), [], 0
    while i < len(lines):
        if lines[i].strip().startswith("```"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```"))
            shows = any(ln.strip().startswith("$ ") for ln in lines[i + 1:end])
            if shows and lines[i].strip() != "```console" and not (i and lines[i - 1].startswith(SAMPLE_MARK)):
                out.append(i + 1)
            i = end
        i += 1
    return out


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_shown_with_output_is_run_or_marked_as_a_recorded_sample(path):
    assert unchecked_commands(path) == []


def test_readme_links_point_at_files_that_exist():
    """README is not part of the site (mkdocs checks the pages' links): its links into docs/ are checked here."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    assert len(targets) > 20
    assert [t for t in targets if not t.startswith("http") and not (ROOT / t).is_file()] == []


def bash_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command) of every `dltool ...` line in the page's ```bash blocks (continuations joined)."""
    lines, out, i = path.read_text().splitlines(), [], 0
    while i < len(lines):
        if lines[i].strip().startswith("```"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```"))
            k = i + 1
            while lines[i].strip() == "```bash" and k < end:
                start, line = k, lines[k].strip()
                while line.endswith("\\") and k + 1 < end:
                    k += 1
                    line = line[:-1] + " " + lines[k].strip()
                if line.startswith(("dltool ", "python -m dltool ")):
                    out.append((start + 1, line))
                k += 1
            i = end
        i += 1
    return out


def misnamed(command: str) -> list[str]:
    """What a shown command names that does not exist: a command, a config key, or a config file of a group."""
    from dltool.cli import COMMANDS
    from dltool.config.keys import GROUPS, OPTIONS
    from dltool.config.variants import config_dir

    argv = shlex.split(command, comments=True)
    argv = ["dltool", *argv[3:]] if argv[:3] == ["python", "-m", "dltool"] else argv
    out = [f"command {argv[1]}"] if len(argv) > 1 and argv[1][0] != "-" and argv[1] not in COMMANDS else []
    for arg in (a for a in argv[2:] if "=" in a and not a.startswith("-")):
        key, _, value = arg.lstrip("+~").partition("=")
        head, _, rest = key.partition(".")
        table = GROUPS.get(head) or OPTIONS.get(head)
        if table is not None and rest and rest.split(".")[0] not in table.keys:
            out.append(f"key {key}")
        elif not rest and (head in GROUPS or head in ("experiment", "hparams_search")) and "(" not in value:
            out += [f"config {head}={v}" for v in value.split(",")
                    if v not in ("", "null") and not (config_dir() / head / f"{v}.yaml").is_file()]
    return out


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_in_a_bash_block_names_real_commands_keys_and_files(path):
    """Commands shown without output are not run, but what they name must exist: a renamed key fails here."""
    assert [(n, misnamed(c)) for n, c in bash_commands(path) if misnamed(c)] == []


def test_the_command_check_can_fail():
    assert misnamed("dltool train optimizer.lrr=0.1 model=mpl") == ["key optimizer.lrr", "config model=mpl"]
    assert misnamed("dltool trian") == ["command trian"]
    assert misnamed("dltool train -m 'optimizer=choice(adam, sgd)' trainer.epochs=5  # a comment") == []


def test_readme_names_every_command():
    """README's command list is written by hand: a command added to COMMANDS must be named there too."""
    from dltool.cli import COMMANDS

    (section,) = [lines for heading, _, lines in sections((ROOT / "README.md").read_text()) if heading == "## Commands"]
    named = set(re.findall(r"`([a-z-]+)`", "\n".join(section)))
    assert set(COMMANDS) <= named


def test_the_console_blocks_exist_and_the_matcher_can_fail():
    assert len(BLOCKS) >= 5
    assert missing(["a", "...", "c"], "a\nb\nc\n") is None
    assert missing(["a", "c"], "a\nb\nc\n") == "c"  # no `...`: the next printed line must match
    assert missing(["x: 1 ..."], "x: 1 and more\n") is None
    assert missing(["...", "b", "a"], "a\nb\n") == "a"  # order counts


def test_the_reference_pages_are_generated_from_the_code(capsys):
    script = runpy.run_path(str(ROOT / "scripts" / "make_docs.py"))
    assert script["main"](["--check"]) == 0, capsys.readouterr().out


@pytest.mark.slow
def test_the_run_directory_reference_lists_what_a_real_run_writes(tmp_path, monkeypatch, capsys):
    script = runpy.run_path(str(ROOT / "scripts" / "make_docs.py"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLTOOL_NO_PROGRESS", "1")
    assert call_main(["train", "model=mlp", "trainer.epochs=2", "data.subset=100", "hydra.run.dir=run"]) == 0
    run = tmp_path / "run"
    files = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    files = {re.sub(r"^events\.out\.tfevents\..*", "events.out.tfevents.*", f) for f in files}
    assert files == set(script["RUN_FILES"])
    for name in ("best.pt", "last.pt"):
        checkpoint = torch.load(run / "checkpoints" / name, weights_only=True)
        assert set(checkpoint) == set(script["CHECKPOINT_KEYS"]), name


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    """CI builds the site as its docs job would: every page in the nav, every link and image found."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"),
                           "--config-file", str(ROOT / "mkdocs.yml")], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "reference" / "config" / "index.html").is_file()

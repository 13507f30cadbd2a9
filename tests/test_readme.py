"""README.md renders as intended (every code fence closed in its own section) and shows the commands CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"
HEADING = re.compile(r"^#{2,6} \S")  # level 1 is the title; a `# comment` inside a YAML/bash fence is no heading


def sections(text: str) -> list[tuple[str, int, list[str]]]:
    """(heading, line number, lines) per `##`-or-deeper section, split without regard to fences, on purpose:
    a fence left open swallows the headings after it, which is exactly what must be caught."""
    out: list[tuple[str, int, list[str]]] = [("(top)", 1, [])]
    for number, line in enumerate(text.splitlines(), 1):
        if HEADING.match(line):
            out.append((line, number, []))
        else:
            out[-1][2].append(line)
    return out


def unclosed_fences(text: str) -> list[str]:
    """One message per section whose code fences do not pair up (an opening ``` without its closing ```)."""
    problems = []
    for heading, number, lines in sections(text):
        fences = [line for line in lines if line.lstrip().startswith("```")]
        if len(fences) % 2:
            problems.append(f"{heading!r} (line {number}): {len(fences)} code fence lines, an odd number")
        elif any(closing.strip() != "```" for closing in fences[1::2]):
            problems.append(f"{heading!r} (line {number}): a fence opens where one should close")
    return problems


def code_block(text: str, heading: str) -> list[str]:
    """The lines of the first code block in the section `heading`."""
    (lines,) = [lines for h, _, lines in sections(text) if h == heading]
    start = next(i for i, line in enumerate(lines) if line.startswith("```"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    return [line for line in lines[start + 1:end] if line.strip()]


def test_every_code_fence_is_closed_in_its_own_section():
    assert unclosed_fences(README.read_text()) == []


@pytest.mark.parametrize("broken, where", [
    ("## A\n```bash\ndltool train\n\n## B\ntext\n", "'## A'"),  # the fence left open before "## B"
    ("## A\n```bash\nx\n```\n## B\n```text\ny\n```bash\nz\n```\n", "'## B'"),  # open, open, close
])
def test_the_fence_check_catches_an_open_fence(broken, where):
    problems = unclosed_fences(broken)
    assert len(problems) == 1 and problems[0].startswith(where)


def test_readme_shows_the_install_lint_and_test_commands_ci_runs():
    readme = README.read_text()
    ci = [line.strip() for line in CI.read_text().splitlines() if line.strip() and not line.startswith("#")]
    install = [line for line in code_block(readme, "## Install") if line.startswith("pip ")]
    assert install == ['pip install -e ".[dev]"'] and install[0] in ci
    checks = code_block(readme, "## Run the tests")
    assert checks == ["ruff check dltool hydra_plugins tests scripts", "python -m pytest -q -n auto"]
    assert ci[ci.index(install[0]) + 1:] == checks  # CI: install as README says, then exactly these, nothing else

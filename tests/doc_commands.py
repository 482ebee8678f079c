"""Every ``effnet ...`` command written in README.md and docs/*.md, read from the files themselves.

A command is one of three kinds:

- ``output``: a line of effnet's own output quoted in the docs (``effnet train: efficientnet_b0 on
  ...``). Not a command.
- ``name``: a command's name in running text (``effnet predict``). The sub-command must exist.
- ``synopsis``: a usage summary with placeholders (``effnet info NAME [--image-size N]``, ``...``,
  ``a|b`` choices). Its sub-command, flags and listed choices are checked against the parser.
- ``concrete``: a command a user can paste. Its placeholder paths (``runs/RUN``, ``photo.jpg``,
  ``~/flower_photos``) are mapped to real files in a test workspace; it must parse, and it is run.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Written in the docs -> what the test workspace holds under that name. Paths are relative to
# the workspace; each is created by the workspace fixture in test_docs_commands.py.
PLACEHOLDERS = {
    "runs/RUN": "runs/RUN",
    "runs/exp1": "runs/RUN",
    "~/flower_photos": "flowers",
    "/data/imagenet": "imagenet",
}

_CAPS = re.compile(r"(^|[/=])[A-Z][A-Z0-9_]*(\.\.\.)?$")


@dataclass(frozen=True)
class DocCommand:
    file: str
    line: int
    text: str
    inline: bool

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def argv(self) -> list[str]:
        """The arguments after ``effnet``, without the trailing comment or redirection."""
        words = shlex.split(self.text, comments=True)[1:]
        if ">" in words:
            words = words[: words.index(">")]
        return words

    @property
    def redirect(self) -> str | None:
        words = shlex.split(self.text, comments=True)
        return words[words.index(">") + 1] if ">" in words else None

    @property
    def kind(self) -> str:
        words = self.text.split()
        if len(words) > 1 and words[1].endswith(":"):
            return "output"
        if self.inline and len(words) <= 2:
            return "name"
        if any(s in self.text for s in ("[", "...", "|")):
            return "synopsis"
        if any(_CAPS.search(w) for w in self.argv if w not in PLACEHOLDERS):
            return "synopsis"
        return "concrete"

    @property
    def command(self) -> str | None:
        """The sub-command (None for ``effnet`` alone or a top-level option like ``--help``)."""
        return self.argv[0] if self.argv and not self.argv[0].startswith("-") else None

    def resolved(self, tiny: list[str] = ()) -> list[str]:
        """argv with documented placeholder paths mapped to the workspace, plus ``tiny`` flags."""
        return [PLACEHOLDERS.get(w, w) for w in self.argv] + list(tiny)


def _commands_in(path: Path) -> list[DocCommand]:
    name = str(path.relative_to(ROOT))
    lines = path.read_text().splitlines()
    out: list[DocCommand] = []
    fenced = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            fenced = not fenced
        elif fenced:
            text = line.strip().removeprefix("$ ")
            start = i
            if text == "effnet" or text.startswith("effnet "):
                while text.rstrip().endswith("\\") and i + 1 < len(lines):
                    i += 1
                    text = text.rstrip()[:-1].rstrip() + " " + lines[i].strip()
                out.append(DocCommand(name, start + 1, text, inline=False))
        else:
            for m in re.finditer(r"`(effnet(?: [^`]*)?)`", line):
                text = m.group(1).replace("\\|", "|")
                out.append(DocCommand(name, i + 1, text, inline=True))
        i += 1
    return out


def doc_commands() -> list[DocCommand]:
    return [c for path in DOC_FILES for c in _commands_in(path)]


def synopsis_parts(cmd: DocCommand) -> tuple[list[str], dict[str, list[str]]]:
    """The ``--flags`` a synopsis names, and the ``a|b|c`` values it offers after a flag."""
    text = cmd.text.replace("[", " ").replace("]", " ")
    flags = re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text)
    choices = {
        flag: values.split("|")
        for flag, values in re.findall(r"(--[a-z][a-z0-9-]*)\s+(\w+(?:\|\w+)+)", text)
    }
    return flags, choices

"""Source lines of the product's packages: the measure issue 10's "the code is shorter" is read with.

A line counts when it holds a Python token other than a comment or a docstring (a string standing alone as a
statement), so reformatting prose or adding documentation does not move the figure, and ``ruff format`` fixes how
code is wrapped. ``wc -l`` would count docstrings, which this project keeps long on purpose.

    python scripts/sloc.py                 # per file, then the total, for app modules datamodules loggers common
    python scripts/sloc.py --rev 9241b07   # the same at a commit (read with git, nothing checked out)
"""

from __future__ import annotations

import argparse
import io
import subprocess
import tokenize
from pathlib import Path

PACKAGES = ("app", "modules", "datamodules", "loggers", "common")
_LAYOUT = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
_STATEMENT_START = {tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}


def sloc(source: str) -> int:
    """Lines of ``source`` that hold code (not comments, docstrings or blank lines)."""
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type not in (tokenize.NL,)]
    lines: set[int] = set()
    for i, token in enumerate(tokens):
        if token.type in _LAYOUT:
            continue
        if token.type == tokenize.STRING and _is_docstring(tokens, i):
            continue
        lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines)


def _is_docstring(tokens: list[tokenize.TokenInfo], i: int) -> bool:
    """A string (or implicitly joined strings) alone as a statement."""
    before = next((t for t in reversed(tokens[:i]) if t.type != tokenize.COMMENT), None)
    after = next((t for t in tokens[i:] if t.type not in (tokenize.STRING, tokenize.COMMENT)), None)
    starts = before is None or before.type in _STATEMENT_START
    return starts and (after is None or after.type in (tokenize.NEWLINE, tokenize.ENDMARKER))


def sources(rev: str | None) -> dict[str, str]:
    """Path → text of every ``.py`` file under the packages, in the work tree or at ``rev``."""
    if rev is None:
        return {str(p): p.read_text() for package in PACKAGES for p in sorted(Path(package).rglob("*.py"))}
    listed = _git("ls-tree", "-r", "--name-only", rev, "--", *PACKAGES).split()
    return {path: _git("show", f"{rev}:{path}") for path in listed if path.endswith(".py")}


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", help="a git revision to count instead of the work tree")
    parser.add_argument("--total", action="store_true", help="print the total only")
    args = parser.parse_args()
    counts = {path: sloc(text) for path, text in sources(args.rev).items()}
    if not args.total:
        for path, count in sorted(counts.items(), key=lambda item: -item[1]):
            print(f"{count:6d}  {path}")
    print(sum(counts.values()))


if __name__ == "__main__":
    main()

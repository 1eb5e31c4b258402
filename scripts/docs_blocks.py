"""The docs' code blocks as tests: every shell block of README.md and docs/*.md runs in CI, or says why not.

A marker on the line before a block (blank lines between are allowed) says where it runs:

    <!-- run: local -->         against a local `gymserve serve` (the default for a shell block; opts a python block in)
    <!-- run: server -->        starts that server: run in the background until its /healthz answers, stopped at the
                                end of the page (lines after its `gymserve serve` line are not run; say why in a note)
    <!-- run: compose -->       in the compose stage (scripts/e2e-compose.sh), with a Docker engine
    <!-- not-run: <reason> -->  never: the reason is required
    ... run: local, http-errors  the block shows an error answer on purpose (curl may get a 4xx)

Notes in parentheses after the stage are for the reader. Shell blocks are fenced bash, sh, shell or console;
python blocks run only when marked. `check` (also run by tests/unit/test_docs_blocks.py) refuses a shell block
without a valid marker decision; `script STAGE` prints the bash that scripts/test-docs.sh runs for a stage.

A plain parser rather than a Markdown library: the docs fence code with backticks at the start of a line, which
is all it needs to read, and the docs stage runs it with the system python3 before any venv exists.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELL = {"bash", "sh", "shell", "console"}
STAGES = {"local", "server", "compose"}
OPTIONS = {"http-errors"}
_FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)")
_MARKER = re.compile(r"^<!--\s*(run|not-run)\s*:(.*?)-->\s*$")
# The ports the docs name, and what the docs stage puts there instead (free ones, chosen by scripts/test-docs.sh).
_ADDRESS = re.compile(r"(localhost:|127\.0\.0\.1:|--port[ =]|GYMSERVE_PORT=)(8000|8080|9000)\b")


class DocsError(Exception):
    pass


@dataclass(frozen=True)
class Block:
    path: str
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    run: str | None  # a stage, or None: not run
    reason: str  # not-run's reason
    options: frozenset[str]

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def parse(text: str, path: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        ticks, lang = fence.group(1), fence.group(2).lower()
        end = i + 1
        while end < len(lines) and not lines[end].startswith(ticks):
            end += 1
        if end == len(lines):
            raise DocsError(f"{path}:{i + 1}: a code block that is never closed")
        marker = _marker_before(lines, i)
        blocks.append(_block(path, i + 1, lang, "\n".join(lines[i + 1 : end]) + "\n", marker))
        i = end + 1
    return blocks


def _marker_before(lines: list[str], fence: int) -> re.Match[str] | None:
    j = fence - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    return _MARKER.match(lines[j].strip()) if j >= 0 else None


def _block(path: str, line: int, lang: str, code: str, marker: re.Match[str] | None) -> Block:
    where = f"{path}:{line}"
    shell = lang in SHELL
    if marker is None:
        return Block(path, line, lang, code, "local" if shell else None, "", frozenset())
    kind, rest = marker.group(1), marker.group(2).strip()
    if kind == "not-run":
        if not rest:
            raise DocsError(f"{where}: 'not-run:' needs a reason")
        return Block(path, line, lang, code, None, rest, frozenset())
    words = [w.strip() for w in re.sub(r"\(.*\)", "", rest).split(",") if w.strip()]
    if not words or words[0] not in STAGES:
        raise DocsError(f"{where}: 'run:' takes one of {sorted(STAGES)}, not {rest!r}")
    options = frozenset(words[1:])
    if options - OPTIONS:
        raise DocsError(f"{where}: unknown options {sorted(options - OPTIONS)} (known: {sorted(OPTIONS)})")
    if not shell and lang != "python":
        raise DocsError(f"{where}: only shell and python blocks can run, not {lang or 'plain'!r} ones")
    if lang == "python" and words[0] != "local":
        raise DocsError(f"{where}: a python block runs against the local server only ('run: local')")
    if words[0] == "server" and not re.search(r"gymserve serve\b", code):
        raise DocsError(f"{where}: a 'run: server' block must start `gymserve serve`")
    return Block(path, line, lang, code, words[0], "", options)


def all_blocks(root: Path = ROOT) -> list[Block]:
    return [b for f in doc_files(root) for b in parse(f.read_text(), str(f.relative_to(root)))]


def check(root: Path = ROOT) -> list[Block]:
    """Every block parsed and every marker valid (DocsError otherwise); every shell block is run or says why not."""
    blocks = all_blocks(root)
    for b in blocks:
        if b.lang in SHELL and b.run is None and not b.reason:
            raise DocsError(f"{b.where}: a shell block that is neither run nor marked not-run")  # pragma: no cover
    return blocks


def summary(blocks: list[Block]) -> str:
    shell = [b for b in blocks if b.lang in SHELL]
    count = {stage: sum(b.run == stage for b in shell) for stage in sorted(STAGES)}
    python = sum(b.run is not None for b in blocks if b.lang == "python")
    marked = [b for b in shell if b.run is None]
    lines = [
        f"docs: {len(shell)} shell blocks: "
        + ", ".join(f"{n} {stage}" for stage, n in count.items())
        + f", {len(marked)} not run; {python} python blocks run"
    ]
    lines += [f"docs:   not run: {b.where}: {b.reason}" for b in marked]
    return "\n".join(lines)


def localize(code: str, ports: dict[str, str]) -> str:
    """The docs' addresses moved to the ports of the docs stage (its servers must not meet anyone's on 8000)."""
    return _ADDRESS.sub(lambda m: f"{m.group(1)}{ports.get(m.group(2), m.group(2))}", code)


def server_port(code: str, ports: dict[str, str]) -> str:
    """The (moved) port a server block listens on: its --port or GYMSERVE_PORT, else 8000."""
    m = re.search(r"(?:--port[ =]|GYMSERVE_PORT=)(\d+)", code)
    port = m.group(1) if m else "8000"
    return ports.get(port, port)


def _serve_part(code: str) -> str:
    lines = code.splitlines()
    last = max(i for i, line in enumerate(lines) if re.search(r"gymserve serve\b", line))
    return "\n".join(lines[: last + 1]) + "\n"


def script(stage: str, ports: dict[str, str], root: Path = ROOT) -> str:
    """The bash for one stage: each page in a subshell of its own (a new terminal), its blocks in order.

    It calls functions that scripts/test-docs.sh defines: docs_block (a block starts), docs_server (start a server
    block in the background and wait for it), docs_default_server (the plain server, for a page without its own),
    docs_page_end (stop the page's server; compose: take the page's stack down)."""
    stages = {"local": {"local", "server"}, "compose": {"compose"}}[stage]
    out: list[str] = []
    by_page: dict[str, list[Block]] = {}
    for b in check(root):
        if b.run in stages:
            by_page.setdefault(b.path, []).append(b)
    for page, blocks in by_page.items():
        out.append(f"docs_page_start {shlex.quote(page)}")
        out.append("(")
        if stage == "local" and blocks[0].run != "server":
            out.append("docs_default_server")
        for n, b in enumerate(blocks):
            code = localize(b.code, ports)
            out.append(f"docs_block {shlex.quote(b.where)} {shlex.quote(b.lang)}")
            if b.run == "server":
                delim = f"DOCS_SERVER_{n}"
                serve = localize(_serve_part(b.code), ports)
                out.append(f"docs_server {server_port(b.code, ports)} <<'{delim}'\n{serve}{delim}")
            elif b.lang == "python":
                delim = f"DOCS_PYTHON_{n}"
                out.append(f"\"$DOCS_PYTHON\" - <<'{delim}'\n{code}{delim}")
            else:
                errors = "1" if "http-errors" in b.options else "0"
                out.append(f"export DOCS_CURL_ANY_STATUS={errors}\n{code.rstrip()}\nexport DOCS_CURL_ANY_STATUS=0")
        out.append(")")
        out.append(f"docs_page_end {shlex.quote(page)}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="every shell block runs somewhere or is marked; print the counts")
    run = sub.add_parser("script", help="print the bash of one stage")
    run.add_argument("stage", choices=["local", "compose"])
    run.add_argument("--port", action="append", default=[], metavar="DOCS=USED", help="e.g. 8000=18123")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            sys.stdout.write(summary(check()) + "\n")
        else:
            sys.stdout.write(script(args.stage, dict(p.split("=", 1) for p in args.port)))
    except DocsError as err:
        sys.stderr.write(f"docs: {err}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

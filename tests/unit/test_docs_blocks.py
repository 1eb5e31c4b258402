"""scripts/docs_blocks.py: every shell block of README.md and docs/ runs in a CI stage or says why not; what a
first-time user is told to type stays inside what works (no file written into the checkout but git-ignored ones)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import docs_blocks  # noqa: E402


def test_every_shell_block_of_the_docs_runs_somewhere_or_says_why_not() -> None:
    blocks = docs_blocks.check()
    shell = [b for b in blocks if b.lang in docs_blocks.SHELL]
    assert len(shell) >= 30, "the docs lost their commands, or the parser its blocks"
    for b in shell:
        assert b.run in docs_blocks.STAGES or b.reason, b.where
    # The README's first commands are run, not excused.
    readme = [b for b in shell if b.path == "README.md"]
    assert readme[0].run == "server" and readme[1].run == "local", readme[:2]


@pytest.mark.parametrize(
    ("marker", "error"),
    [
        ("<!-- not-run: -->", "needs a reason"),
        ("<!-- run: somewhere -->", "takes one of"),
        ("<!-- run: local, loudly -->", "unknown options"),
        ("<!-- run: server -->", "must start `gymserve serve`"),
    ],
)
def test_a_bad_marker_is_refused_with_its_place(marker: str, error: str) -> None:
    text = f"# page\n\n{marker}\n```bash\ncurl -s localhost:8000/healthz\n```\n"
    with pytest.raises(docs_blocks.DocsError, match=error) as refused:
        docs_blocks.parse(text, "docs/x.md")
    assert "docs/x.md:4" in str(refused.value)


def test_markers_and_defaults() -> None:
    text = (
        "```bash\necho plain\n```\n"  # a shell block: local by default
        "<!-- not-run: pushes to a registry -->\n\n```sh\ndocker push x\n```\n"
        "```python\nprint(1)\n```\n"  # python: only when marked
        "<!-- run: local, http-errors (the 404 is the point) -->\n```bash\ncurl -s localhost:8000/nope\n```\n"
        "```toml\n[a]\n```\n"
    )
    plain, excused, python, errors, toml = docs_blocks.parse(text, "p.md")
    assert (plain.run, plain.line) == ("local", 1)
    assert excused.run is None and excused.reason == "pushes to a registry"
    assert python.run is None and not python.reason
    assert errors.run == "local" and errors.options == {"http-errors"}
    assert toml.lang == "toml" and toml.run is None


def test_an_unclosed_block_is_an_error() -> None:
    with pytest.raises(docs_blocks.DocsError, match="never closed"):
        docs_blocks.parse("```bash\necho\n", "p.md")


def test_the_docs_ports_move_to_the_stages_own() -> None:
    ports = {"8000": "21000", "8080": "21080", "9000": "21900"}
    code = "curl localhost:8000/v2 127.0.0.1:8080/x serve --port 9000 GYMSERVE_PORT=9000 -p 127.0.0.1:8000:8000"
    assert docs_blocks.localize(code, ports) == (
        "curl localhost:21000/v2 127.0.0.1:21080/x serve --port 21900 GYMSERVE_PORT=21900 -p 127.0.0.1:21000:8000"
    )
    assert docs_blocks.server_port("gymserve serve --port 9000", ports) == "21900"
    assert docs_blocks.server_port(".venv/bin/gymserve serve", ports) == "21000"


def test_a_stage_script_runs_each_page_in_a_subshell_and_starts_servers_in_the_background() -> None:
    local = docs_blocks.script("local", {"8000": "21000"})
    assert local.startswith("docs_page_start README.md\n(\n")  # the README first: its first command makes .venv
    assert "docs_server 21000 <<'DOCS_SERVER_0'" in local
    assert "scripts/test.sh" not in local.split("DOCS_SERVER_0")[1]  # a server block runs up to its serve line
    compose = docs_blocks.script("compose", {"8080": "21080"})
    assert "docker compose up -d --wait" in compose and "localhost:21080" in compose


def test_what_the_docs_have_you_write_into_a_checkout_is_git_ignored() -> None:
    for name in (".env", "tenants.toml", ".venv-client/x", ".venv-learner/x", "dist/x.whl"):
        ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", name], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"{name} is not git-ignored, yet the docs write it"
    text = "".join(f.read_text() for f in docs_blocks.doc_files())
    assert "tee env.json" not in text and "-o env.snap" not in text

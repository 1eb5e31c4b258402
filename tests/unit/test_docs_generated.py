"""The generated copies of the settings (docs tables, chart values and schema) match gymserve's Settings."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from gymserve.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
GENERATED = [
    "docs/settings.md",
    "helm/README.md",
    "helm/values.yaml",
    "helm/values.schema.json",
    "helm/files/router.cfg",
]


def _load_generator() -> ModuleType:
    # scripts/ is not a package: load the script the way `python scripts/gen_docs.py` runs it.
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_docs"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


gen_docs = _load_generator()


@dataclass(frozen=True)
class SettingsWithNewFields(Settings):
    """Settings as another branch may grow them: the generator must pick these up with no change of its own."""

    env_modules: str = field(
        default="",
        metadata={"help": "Modules imported at start (default: none).", "minimum": None, "choices": ()},
    )
    max_things: int = field(default=3, metadata={"help": "Most things.", "minimum": 1, "choices": ()})
    mode: str = field(default="a", metadata={"help": "The mode.", "minimum": None, "choices": ("a", "b")})


def test_generated_files_are_fresh() -> None:
    rendered = gen_docs.render(ROOT)
    assert {str(p.relative_to(ROOT)) for p in rendered} == set(GENERATED)
    stale = [str(p.relative_to(ROOT)) for p in gen_docs.stale(rendered)]
    assert not stale, f"stale generated files {stale}: run `{gen_docs.COMMAND}` and commit them"


def test_a_new_setting_appears_in_every_generated_copy() -> None:
    table = gen_docs.settings_table(SettingsWithNewFields)
    assert "| `GYMSERVE_ENV_MODULES` | none | Modules imported at start. |" in table
    assert "| `GYMSERVE_MODE` | `a` | The mode. One of `a`, `b`. |" in table

    chart = gen_docs.chart_table(SettingsWithNewFields)
    assert (
        '| `config.envModules` | `GYMSERVE_ENV_MODULES` | `""` | Modules imported at start; empty means none. |'
        in chart
    )

    lines = gen_docs.values_config_lines(SettingsWithNewFields)
    i = lines.index('  envModules: ""')
    assert lines[i - 1] == "  # envModules -- GYMSERVE_ENV_MODULES: Modules imported at start; empty means none."
    assert "  maxThings: 3" in lines
    assert not any("nodeId" in line for line in lines)  # the chart sets GYMSERVE_NODE_ID itself

    schema = gen_docs.schema_config(SettingsWithNewFields)
    props = schema["properties"]
    assert props["envModules"] == {
        "type": "string",
        "description": "GYMSERVE_ENV_MODULES: Modules imported at start; empty means none.",
    }
    assert props["maxThings"]["minimum"] == 1 and props["maxThings"]["type"] == "integer"
    assert props["mode"]["enum"] == ["a", "b"]
    assert {"envModules", "maxThings", "mode"} <= set(schema["required"])


def test_a_stale_file_is_named(tmp_path: Path) -> None:
    for name in GENERATED:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    doc = tmp_path / "docs" / "settings.md"
    doc.write_text(doc.read_text().replace("| `GYMSERVE_PORT` | `8000` |", "| `GYMSERVE_PORT` | `8001` |"))
    schema = tmp_path / "helm" / "values.schema.json"
    data = json.loads(schema.read_text())
    del data["properties"]["config"]["properties"]["port"]
    schema.write_text(json.dumps(data, indent=2) + "\n")
    assert sorted(gen_docs.stale(gen_docs.render(tmp_path))) == sorted([doc, schema])


def test_missing_markers_fail_with_the_file_name() -> None:
    with pytest.raises(SystemExit, match=r"docs/settings\.md has no .*GENERATED settings"):
        gen_docs.replace_between_markers("no markers here", "settings", "| table |", "docs/settings.md")


def test_the_values_table_has_every_leaf_with_its_comment() -> None:
    text = """\
# yaml-language-server: $schema=values.schema.json
#
# header -- not a key's comment.

# config -- the settings table has these.
config:
  # port -- not here.
  port: 8000

# image -- a map: its keys get the rows.
image:
  # repository -- image name; e.g. "<registry>/gymserve".
  repository: gymserve
# hosts -- host names: one default, not rows.
hosts:
  - # host -- a host name.
    host: example.com
    # paths -- its paths.
    paths: [/]
# tls -- TLS secrets
# and the hosts they cover.
tls: []
"""
    table = gen_docs.values_table(text).splitlines()
    assert table[2:] == [
        '| `image.repository` | `"gymserve"` | image name; e.g. "&lt;registry&gt;/gymserve". |',
        '| `hosts` | `[{"host": "example.com", "paths": ["/"]}]` | host names: one default, not rows. |',
        "| `tls` | `[]` | TLS secrets and the hosts they cover. |",
    ]

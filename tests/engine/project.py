"""A throwaway tracbot project (config, flows, templates) for engine tests."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASE_FLOWS = ("ayuda", "no_entendi", "cancelar")
DEMO_BUSINESS = REPO / "demo" / "business.yaml"


def documented(heading: str, language: str) -> str:
    """The first `language` code block of docs/flows.md under `heading`."""
    doc = (REPO / "docs" / "flows.md").read_text("utf-8")
    section = doc[doc.index(heading) :]
    found = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert found is not None, f"no {language} example under {heading!r}"
    return found.group(1)


def make_project(
    root: Path, flows: dict[str, str], templates: dict[str, str] | None = None
) -> Path:
    """Write config.yaml, flows/ and message_templates/ under `root`.

    The shipped AYUDA, fallback and CANCELAR flows are copied in, so that
    the set is complete; `flows` adds or replaces files by name. Returns
    the path of config.yaml.
    """
    flows_dir, templates_dir = root / "flows", root / "message_templates"
    flows_dir.mkdir(parents=True, exist_ok=True)
    templates_dir.mkdir(parents=True, exist_ok=True)
    for name in BASE_FLOWS:
        source = REPO / "flows" / f"{name}.yaml"
        (flows_dir / source.name).write_bytes(source.read_bytes())
    for source in (REPO / "message_templates").glob("*.j2"):
        (templates_dir / source.name).write_bytes(source.read_bytes())
    write_files(flows_dir, {f"{k}.yaml": v for k, v in flows.items()})
    write_files(templates_dir, {f"{k}.j2": v for k, v in (templates or {}).items()})

    config = root / "config.yaml"
    config.write_text(
        "storage:\n  url: sqlite:///var/tracbot.db\n"
        "engine:\n  flows_dir: flows\n  templates_dir: message_templates\n"
        "  poll_seconds: 0.05\n"
        "sender:\n  backoff_seconds: 0.01\n"
        # The demo business data, built into this folder on first start.
        f"business:\n  url: sqlite:///business.db\n  fixture: {DEMO_BUSINESS}\n",
        "utf-8",
    )
    return config


def write_files(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip("\n"), "utf-8")

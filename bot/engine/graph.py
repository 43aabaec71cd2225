"""`tracbot graph`: a flow as a Mermaid state diagram.

The diagram is drawn by `transitions` itself (its Mermaid engine) from the
same spec the engine compiles, so it shows what runs. States get safe ids
(`s0`, `s1`…) and keep their real names as labels, because Mermaid ids
cannot hold spaces or accents and `state` is a Mermaid keyword.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from transitions.extensions.diagrams import GraphMachine

from bot.engine.flows import FlowSpec, TransitionSpec


class _Canvas:
    """The model the diagram machine needs; it never runs."""


def mermaid(spec: FlowSpec) -> str:
    """Return the Mermaid text of one flow."""
    ids = {name: f"s{i}" for i, name in enumerate(spec.states)}
    labels = {
        ids[name]: _state_label(name, state.reply, state.handover)
        for name, state in spec.states.items()
    }
    transitions = [
        {
            "trigger": _input_label(kind, item),
            "source": ids[name],
            "dest": ids[item.dest],
            "conditions": list(item.conditions),
            "unless": list(item.unless),
        }
        for name, state in spec.states.items()
        for kind, items in (("on", state.on), ("always", state.always))
        for item in items
        if item.dest in ids
    ]
    canvas = _Canvas()
    GraphMachine(
        model=canvas,
        states=list(labels),
        transitions=transitions,
        initial=ids[spec.initial],
        auto_transitions=False,
        graph_engine="mermaid",
        show_conditions=True,
        title=spec.name,
    )
    text = canvas.get_graph().draw(None)  # type: ignore[attr-defined]
    finals = [ids[n] for n, s in spec.states.items() if s.final]
    return _front_matter(spec.name) + _plain(_body(text), labels, finals)


def write_all(flows: dict[str, FlowSpec], folder: Path) -> list[Path]:
    """Write `<flow>.mmd` for every flow into `folder`; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, spec in sorted(flows.items()):
        # Flow names are plain words (flows.FLOW_NAME); the file stays here.
        path = folder / Path(f"{name}.mmd").name
        path.write_text(mermaid(spec) + "\n", "utf-8")
        written.append(path)
    return written


def _state_label(name: str, reply: Any, handover: str | None) -> str:
    label = name
    if isinstance(reply, dict):
        # A reply with buttons, a list or a location request was left out.
        shown = [
            key for key in ("buttons", "list", "location_request") if reply.get(key)
        ]
        reply = (
            f"{reply.get('template', '')} [{', '.join(shown)}]"
            if shown
            else reply.get("template")
        )
    if isinstance(reply, str):
        label += f" 💬 {reply}"
    if handover:
        label += f" ➜ {handover}"
    return _quote(label)


def _input_label(kind: str, item: TransitionSpec) -> str:
    if kind == "always":
        label = "(sin esperar)"
    else:
        label = item.input
        if item.one_of:
            label += " " + "/".join(item.one_of)
        elif item.ids:
            label += " " + "/".join(item.ids)
        elif item.match is not None:
            label += " ~" + item.match.pattern
    if item.actions:
        label += " → " + ", ".join(item.actions)
    return _quote(label)


def _quote(text: str) -> str:
    # A colon ends a Mermaid edge label and quotes end a state label.
    return text.replace('"', "'").replace(":", "∶").replace("\n", " ")


def _front_matter(title: str) -> str:
    # transitions writes the bare title between the `---` lines; Mermaid
    # reads that block as YAML and wants `title:`. JSON quoting is valid YAML.
    if not re.fullmatch(r"\w[\w-]*", title) or yaml.safe_load(title) != title:
        title = json.dumps(title, ensure_ascii=False)
    return f"---\ntitle: {title}\n---\n"


def _body(text: str) -> str:
    """The diagram without the front matter transitions wrote, if any."""
    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        if end >= 0:
            return text[end + len("\n---\n") :]
    return text


def _plain(text: str, labels: dict[str, str], finals: list[str]) -> str:
    """Label the states, drop the live-model styling, mark the ends."""
    kept = []
    for line in text.splitlines():
        if line.strip().startswith(("classDef ", "Class ")):
            continue
        for state_id, label in labels.items():
            if line.strip() == f'state "{state_id}" as {state_id}':
                line = f'  state "{label}" as {state_id}'
        kept.append(line)
    kept += [f"  {state_id} --> [*]" for state_id in finals]
    return "\n".join(line.rstrip() for line in kept)

"""The shipped templates with the values real business data can hold."""

from __future__ import annotations

import pytest

from bot.engine.replies import Renderer
from tests.engine.project import REPO

GUIDE = {"folio": "884540", "cliente": "Minera", "estado": "Emitida", "fecha": "-"}


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(REPO / "message_templates")


@pytest.mark.parametrize("link", ["", None, "   "])
def test_a_guide_without_a_link_shows_no_link_line(renderer, link):
    # A guide row with link='' ended in a bare "Link:".
    text = renderer.render("guia", {"guia": {**GUIDE, "link": link}})
    assert "Link" not in text
    assert text.endswith("Fecha: -")


def test_a_guide_with_a_link_shows_it_after_a_blank_line(renderer):
    text = renderer.render("guia", {"guia": {**GUIDE, "link": "https://x.example/1"}})
    assert text.endswith("Fecha: -\n\nLink: https://x.example/1")

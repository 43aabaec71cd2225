"""What a reply template may make text of (bot/engine/guards.py), rendered
in the environment every reply is rendered in."""

from __future__ import annotations

import datetime

import pytest

from bot.engine.guards import WholeValueError
from bot.engine.replies import make_environment
from bot.errors import RenderError

TRIP = {
    "patente": "GHZW-77",
    "ubicacion": None,
    "paradas": 3,
    "camion": {"modelo": "Scania G 460"},
    "fecha": datetime.date(2026, 12, 5),
}


def render(source: str, **values) -> str:
    env = make_environment({"t.j2": source})
    return env.get_template("t.j2").render(trip=TRIP, trips=[TRIP], **values)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # A column left empty in the business data is None, not undefined.
        ("{{ trip.ubicacion|default('sin datos') }}", "sin datos"),
        ("{{ trip.ubicacion|d('sin datos') }}", "sin datos"),
        ("{{ trip.nada|default('sin datos') }}", "sin datos"),
        ("{{ trip.paradas|default('x') }}", "3"),
        ("{{ 0|default('x') }}", "0"),
        ("{{ ''|default('x', true) }}", "x"),
    ],
)
def test_default_stands_in_for_none_too(source, expected):
    assert render(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ trip.patente|lower }}", "ghzw-77"),
        ("{{ (trips|first).patente }}", "GHZW-77"),
        ("{{ trips|map(attribute='patente')|join(', ') }}", "GHZW-77"),
        ("{{ trips|length ~ ' viaje' }}", "1 viaje"),
        ("{{ '%(patente)s' % trip }}", "GHZW-77"),
        ("{{ '%s: %d' % (trip.patente, trip.paradas) }}", "GHZW-77: 3"),
        ("{{ '{0[patente]} / {1}'.format(trip, 2) }}", "GHZW-77 / 2"),
        ("{{ '{p}'.format(p=trip.patente) }}", "GHZW-77"),
        ("{{ '{0[camion][modelo]}'.format(trip) }}", "Scania G 460"),
        ("{{ '{0:%Y}'.format(trip.fecha) }}", "2026"),
        ("{{ '%d%%' % 5 }}", "5%"),
        ("{{ 7 % 3 }}", "1"),
        ("{{ 'a' ~ 'b' ~ 1 }}", "ab1"),
        ("{{ trips|join(', ', attribute='patente') }}", "GHZW-77"),
        ("{% macro m(x) %}<{{ x }}>{% endmacro %}{{ m('y') }}", "<y>"),
        ("{{ cycler('a', 'b').next() }}", "a"),
    ],
)
def test_fields_of_records_make_text(source, expected):
    assert render(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        "{{ trip|upper }}",
        "{{ trips|first|string }}",
        "{{ trip ~ '' }}",
        "{{ '%s' % trip }}",
        "{{ '%(t)s' % {'t': trips} }}",
        "{{ '{}'.format(trip) }}",
        "{{ '{t}'.format_map({'t': trip}) }}",
        # key=value text of every field.
        "{{ trip|urlencode }}",
        "{{ trip|xmlattr }}",
        # Ways a second tester found past the first guards.
        "{{ '{0[camion]}'.format(trip) }}",
        "{{ '{0.camion}'.format(trip) }}",
        "{{ '{0:{1}}'.format(trip.fecha, trip) }}",
        "{{ ('{}'|safe).format(trip) }}",
        "{{ trips|join(', ', attribute='camion') }}",
        "{{ trips|batch(1)|join(', ', attribute=0) }}",
        "{{ '%s %%(patente)s' % trip }}",
        "{{ {'id': 'C14'} ~ '' }}",
        # Python's text of objects: "<Namespace {…}>", "<built-in method …>".
        "{{ namespace(t=trip) }}",
        "{{ '%s' % namespace(t=trip) }}",
        "{{ trip.items }}",
        "{{ self }}",
        "{{ cycler(1) }}",
        "{% macro m() %}x{% endmacro %}{{ m }}",
    ],
)
def test_whole_records_make_no_text(source):
    with pytest.raises(WholeValueError):
        render(source)


@pytest.mark.parametrize(
    ("source", "how"),
    [
        ("{{ trip.ubicacion ~ '!' }}", "None with ~"),
        # "NONE", "0", "None" and "None" reached the driver.
        ("{{ trip.ubicacion|upper }}", "None with |upper"),
        ("{{ trip.ubicacion|int }}", "None with |int"),
        ("{{ 'en %s' % trip.ubicacion }}", "None with %"),
        ("{{ 'en {}'.format(trip.ubicacion) }}", "None with str.format"),
        ("{{ '{0[ubicacion]}'.format(trip) }}", "None with str.format"),
        ("{{ [trip.ubicacion, 'x']|join(', ') }}", "None with |join"),
        ("{{ trips|map(attribute='ubicacion')|join(', ') }}", "None with |join"),
        ("{{ 'X'|replace('X', trip.ubicacion) }}", "None with |replace"),
        ("{{ 'en %s'|format(trip.ubicacion) }}", "None with |format"),
        ("{{ none ~ '!' }}", "None with ~"),
    ],
)
def test_none_made_text_is_refused_like_none_printed(source, how):
    with pytest.raises(RenderError, match=how):
        render(source)

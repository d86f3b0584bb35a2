"""Job params: what a run is given (``sluice run train --param epochs=5``), checked against the
params a job declares with their defaults. Pure, so it is tested as a table.

    >>> check_params({"epochs": 10, "lr": 0.01}, {"epochs": 5}, "params")
    {'epochs': 5, 'lr': 0.01}
    >>> check_params({"epochs": 10}, {"epoch": 5}, "params")
    Traceback (most recent call last):
    ...
    ValueError: params.epoch: not a param of this job (its params: epochs)
    >>> parse_param_option("lr=0.5")
    ('lr', 0.5)
"""

from __future__ import annotations

import json
import re
from typing import Any

_NAME = re.compile(r"^[A-Za-z_][\w.-]{0,62}$")
_EXAMPLES = {bool: "true or false", int: "a whole number such as 5",
             float: "a number such as 0.01", str: "text", list: "a list such as [1, 2]",
             dict: "a mapping such as {\"a\": 1}"}


def parse_param_option(text: str) -> tuple[str, Any]:
    """``name=value`` from the command line; the value is read as JSON when it parses
    (``5``, ``0.1``, ``true``, ``[1,2]``), else kept as text."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not _NAME.match(name):
        raise ValueError(f"--param {text!r}: must be NAME=VALUE, e.g. --param epochs=5")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return name, value


def _kind(value: Any) -> type:
    for kind in (bool, int, float, str, list, dict):
        if isinstance(value, kind):
            return kind
    return object


def _fits(default: Any, value: Any) -> bool:
    if default is None:
        return True  # declared without a type: anything goes
    want, got = _kind(default), _kind(value)
    return want is got or (want is float and got is int)


def check_params(declared: dict[str, Any], given: Any, where: str = "params") -> dict[str, Any]:
    """The params a run gets: the declared defaults overlaid with ``given``.

    A job that declares no params takes any mapping. One that does refuses unknown names and
    values whose type differs from the default's (an int is fine where a float is declared)."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise ValueError(f"{where}: must be a mapping of name to value, e.g. {{\"epochs\": 5}} "
                         f"(got {type(given).__name__})")
    problems = []
    for name, value in given.items():
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(f"{where}.{name}: a param name is letters, digits, '_', '.', '-'")
        elif declared and name not in declared:
            problems.append(f"{where}.{name}: not a param of this job (its params: "
                            f"{', '.join(sorted(declared))})")
        elif declared and not _fits(declared[name], value):
            default = declared[name]
            problems.append(f"{where}.{name}: must be {_EXAMPLES.get(_kind(default), 'JSON')} "
                            f"like its default {json.dumps(default)} (got {json.dumps(value)})")
    if problems:
        raise ValueError("; ".join(problems))
    merged = dict(declared)
    merged.update(given)
    return merged

"""One grammar for changing a trainer's recipe from the command line: `--set FIELD=VALUE ...`, each value read
as its field's type. Both trainers' recipes are frozen dataclasses (offline.train.Recipe,
offline.train_tagger.TaggerRecipe), so an ablation is a new recipe, never a changed module."""
from __future__ import annotations

import dataclasses
import typing

from common.errors import UserError

BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _read(kind, text: str):
    if kind is bool:
        return BOOLEANS[text.lower()]
    if typing.get_origin(kind) is tuple:  # tuple[float, ...]: numbers separated by commas, none for empty
        return tuple(float(x) for x in text.split(",") if x)
    return kind(text)


def _takes(kind) -> str:
    if kind is bool:
        return "true or false"
    if typing.get_origin(kind) is tuple:
        return "numbers separated by commas (nothing after '=' for none)"
    return f"a {kind.__name__}"


def with_overrides(recipe, pairs: list[str]):
    """`recipe` with each FIELD=VALUE of `pairs` in place; UserError names a bad pair and what it takes."""
    kinds = typing.get_type_hints(type(recipe))
    changes = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or name not in kinds:
            raise UserError(f"--set {pair}: expected FIELD=VALUE with FIELD one of {', '.join(kinds)}")
        try:
            changes[name] = _read(kinds[name], text)
        except (ValueError, KeyError):
            raise UserError(f"--set {pair}: {name} takes {_takes(kinds[name])}") from None
    try:
        return dataclasses.replace(recipe, **changes)
    except ValueError as exc:  # a recipe's own check (e.g. an optimizer it does not know)
        raise UserError(f"--set: {exc}") from None

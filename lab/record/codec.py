"""The one codec between typed step values (dataclasses) and the JSON the logbook stores.

`encode` turns a dataclass into plain JSON data, field by field (nested dataclasses, lists,
dicts, None). `decode` does the reverse for a declared type: it reads the type hints of the
dataclass (`typing.get_type_hints`) and builds each field from its declared type, recursively
(dataclasses, `list[X]`, `dict[str, X]`, `X | None`, unions of JSON scalars, `Any`).

Decoding is strict: a key the type does not declare, a required field that is missing, or a
value of the wrong kind raises `CodecError`, so drift between what a step writes and what a
reader expects shows up as an error, never as a silently different figure. (The logbook turns
a row it cannot decode into "not measured"; see lab.record.logbook.)

    >>> data = encode(LatencyStats(mean=1.0, median=1.0, p90=2.0, p99=2.0))
    >>> decode(LatencyStats, data)
    LatencyStats(mean=1.0, median=1.0, p90=2.0, p99=2.0)
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, TypeVar, Union

T = TypeVar("T")

_SCALARS: tuple[type, ...] = (str, int, float, bool)


class CodecError(ValueError):
    """A JSON value does not fit the declared type (the message names the path)."""


def encode(value: Any) -> Any:
    """A dataclass (or list/dict/scalar of them) as JSON data. Properties are not stored:
    derived figures are computed from the stored ones when read."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if value is None or isinstance(value, _SCALARS):
        return value
    raise CodecError(f"cannot encode {type(value).__name__}: {value!r}")


def decode(cls: type[T], data: Any) -> T:
    """`data` (JSON) as an instance of the dataclass `cls`."""
    return typing.cast(T, _decode(cls, data, cls.__name__))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode(tp: Any, data: Any, path: str) -> Any:
    if tp is Any:
        return data
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _union(typing.get_args(tp), data, path)
    if dataclasses.is_dataclass(tp):
        return _dataclass(typing.cast(type, tp), data, path)
    if origin is list:
        if not isinstance(data, list):
            raise CodecError(f"{path}: expected a list, got {type(data).__name__}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_decode(item, v, f"{path}[{i}]") for i, v in enumerate(data)]
    if origin is dict:
        if not isinstance(data, dict):
            raise CodecError(f"{path}: expected an object, got {type(data).__name__}")
        _, item = typing.get_args(tp) or (str, Any)
        return {k: _decode(item, v, f"{path}.{k}") for k, v in data.items()}
    if tp is float:
        # A whole number stays an int (PEP 484: an int is a float), so 99 reads back as 99.
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise CodecError(f"{path}: expected a number, got {data!r}")
        return data
    if tp is int:
        if isinstance(data, bool) or not isinstance(data, int):
            if isinstance(data, float) and data.is_integer():
                return int(data)
            raise CodecError(f"{path}: expected a whole number, got {data!r}")
        return data
    if tp in (str, bool):
        if not isinstance(data, tp):
            raise CodecError(f"{path}: expected {tp.__name__}, got {data!r}")
        return data
    if tp is type(None):
        if data is not None:
            raise CodecError(f"{path}: expected null, got {data!r}")
        return None
    raise CodecError(f"{path}: no decoder for {tp!r}")


def _union(args: tuple[Any, ...], data: Any, path: str) -> Any:
    if data is None:
        if type(None) in args:
            return None
        raise CodecError(f"{path}: missing (null) but required")
    rest = [a for a in args if a is not type(None)]
    if len(rest) == 1:
        return _decode(rest[0], data, path)
    # A union of JSON scalars (e.g. str | float | bool): the value's own kind, as stored.
    for arg in rest:
        if arg in _SCALARS and type(data) is arg:
            return data
    if isinstance(data, int) and not isinstance(data, bool) and float in rest:
        return data
    raise CodecError(f"{path}: {data!r} fits none of {rest}")


def _dataclass(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise CodecError(f"{path}: expected an object, got {type(data).__name__}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise CodecError(f"{path}: unknown field(s) {', '.join(unknown)}")
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _decode(hints[name], data[name], f"{path}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise CodecError(f"{path}: missing field {name}")
    return cls(**kwargs)

"""Native format for a client that names its protocol revision (`client_protocol_version`).

The embedded engine writes Native as for revision 0; ClickHouse's server writes it for the
revision a client sends, and clickhouse-go (Grafana's driver) decodes every block at that
revision. The two differ, for the types here, by two things only: a BlockInfo before each block
(revision > 0) and a "custom serialization" flag byte after each column's type (revision >=
54454), 0 here since the engine's columns use the default serialization. So the bytes of each
column are copied as they are; finding where a column ends needs its type's layout, below.
A type whose layout is not here (Dynamic, Variant, JSON, AggregateFunction) is refused with the
advice to cast it; revision 0 (clickhouse-connect's default) needs no rewrite at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

WITH_BLOCK_INFO = 1
WITH_CUSTOM_SERIALIZATION = 54454
# BlockInfo: field 1 is_overflows = 0, field 2 bucket_num = -1, field 0 ends it
BLOCK_INFO = b"\x01\x00\x02\xff\xff\xff\xff\x00"

_FIXED = {
    "UInt8": 1, "Int8": 1, "Bool": 1, "Enum8": 1, "UInt16": 2, "Int16": 2, "Date": 2, "Enum16": 2,
    "BFloat16": 2, "UInt32": 4, "Int32": 4, "Float32": 4, "Date32": 4, "DateTime": 4, "IPv4": 4,
    "Time": 4, "Decimal32": 4, "UInt64": 8, "Int64": 8, "Float64": 8, "DateTime64": 8, "Time64": 8,
    "Decimal64": 8, "UInt128": 16, "Int128": 16, "UUID": 16, "IPv6": 16, "Decimal128": 16,
    "UInt256": 32, "Int256": 32, "Decimal256": 32, "Nothing": 1,
}
_GEO = {"Point": "Tuple(Float64, Float64)", "Ring": "Array(Point)", "LineString": "Array(Point)",
        "Polygon": "Array(Ring)", "MultiLineString": "Array(LineString)",
        "MultiPolygon": "Array(Polygon)"}
_NAMED_ELEMENT = re.compile(r"^(?:`(?:[^`]|``)*`|[A-Za-z_][A-Za-z0-9_]*)\s+(?=[A-Z])")


class UnsupportedType(ValueError):
    """A column type whose Native layout this module does not know."""


@dataclass(frozen=True)
class Type:
    name: str  # the outer name: Array, Nullable, String, ...
    args: tuple[Type, ...] = ()
    size: int = 0  # bytes per value, for a fixed-size type


def parse_type(text: str) -> Type:
    text = text.strip()
    if text in _GEO:
        return parse_type(_GEO[text])
    outer, paren, rest = text.partition("(")
    if not paren:
        if text in _FIXED:
            return Type(text, size=_FIXED[text])
        if text == "String" or text.startswith("Interval"):
            return Type("String") if text == "String" else Type(text, size=8)
        raise UnsupportedType(text)
    inner = rest[:-1]
    if outer in ("DateTime", "DateTime64", "Enum8", "Enum16", "Time64"):
        return Type(outer, size=_FIXED[outer])
    if outer == "FixedString":
        return Type(outer, size=int(inner))
    if outer == "Decimal":
        precision = int(_split(inner)[0])
        return Type(outer, size=4 if precision <= 9 else 8 if precision <= 18
                    else 16 if precision <= 38 else 32)
    if outer in ("Decimal32", "Decimal64", "Decimal128", "Decimal256"):
        return Type(outer, size=_FIXED[outer])
    if outer in ("Nullable", "Array", "LowCardinality"):
        return Type(outer, (parse_type(inner),))
    if outer == "SimpleAggregateFunction":
        return parse_type(_split(inner)[1])
    if outer in ("Tuple", "Map"):
        parts = [_NAMED_ELEMENT.sub("", part, count=1) for part in _split(inner)]
        return Type(outer, tuple(parse_type(part) for part in parts))
    raise UnsupportedType(text)


def _split(args: str) -> list[str]:
    """Top-level comma-separated arguments (quotes and parentheses respected)."""
    parts, depth, start, quote = [], 0, 0, ""
    for i, ch in enumerate(args):
        if quote:
            if ch == quote and args[i - 1] != "\\":
                quote = ""
        elif ch in "'`\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(args[start:i])
            start = i + 1
    parts.append(args[start:])
    return [p.strip() for p in parts]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def varint(self) -> int:
        shift = result = 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7

    def skip(self, count: int) -> None:
        if self.pos + count > len(self.data):
            raise ValueError("truncated Native data")
        self.pos += count

    def uint64(self) -> int:
        value = int.from_bytes(self.data[self.pos:self.pos + 8], "little")
        self.skip(8)
        return value

    def string(self) -> bytes:
        length = self.varint()
        start = self.pos
        self.skip(length)
        return self.data[start:self.pos]


def _skip_prefix(kind: Type, reader: _Reader) -> None:
    """The serialization state prefixes: written for the whole column before its data."""
    if kind.name == "LowCardinality":
        reader.skip(8)  # the keys' serialization version
    for arg in kind.args:
        _skip_prefix(arg, reader)


def _skip_data(kind: Type, rows: int, reader: _Reader) -> None:
    if kind.size:
        reader.skip(kind.size * rows)
    elif kind.name == "String":
        for _ in range(rows):
            reader.skip(reader.varint())
    elif kind.name == "Nullable":
        reader.skip(rows)  # the null map
        _skip_data(kind.args[0], rows, reader)
    elif kind.name in ("Array", "Map"):
        if rows:
            reader.skip(8 * (rows - 1))
            nested = reader.uint64()  # the last offset: how many values all rows hold
        else:
            nested = 0
        _skip_data(kind.args[0] if kind.name == "Array" else Type("Tuple", kind.args), nested, reader)
    elif kind.name == "Tuple":
        for arg in kind.args:
            _skip_data(arg, rows, reader)
    elif kind.name == "LowCardinality":
        dictionary = kind.args[0].args[0] if kind.args[0].name == "Nullable" else kind.args[0]
        done = 0
        while done < rows:
            flags = reader.uint64()
            if flags & (1 << 9):  # HasAdditionalKeysBit: this granule carries its keys
                _skip_data(dictionary, reader.uint64(), reader)
            count = reader.uint64()
            reader.skip(count * (1, 2, 4, 8)[flags & 0xFF])
            done += count
    else:
        raise UnsupportedType(kind.name)


def for_revision(native: bytes, revision: int) -> bytes:
    """Revision-0 Native (what the engine writes) as a client at `revision` reads it."""
    if revision < WITH_BLOCK_INFO:
        return native
    reader, out = _Reader(native), bytearray()
    while reader.pos < len(native):
        out += BLOCK_INFO
        start = reader.pos
        columns, rows = reader.varint(), reader.varint()
        out += native[start:reader.pos]
        for _ in range(columns):
            start = reader.pos
            reader.string()  # name
            type_name = reader.string().decode()
            out += native[start:reader.pos]
            if revision >= WITH_CUSTOM_SERIALIZATION:
                out += b"\x00"  # no custom serialization
            if rows:
                start = reader.pos
                kind = parse_type(type_name)
                _skip_prefix(kind, reader)
                _skip_data(kind, rows, reader)
                out += native[start:reader.pos]
    return bytes(out)

"""A reader for the small protobuf text-format files TF Serving takes (batching, monitoring).

Their message types are not shipped in the tensorflow-serving-api wheel, so
they are read into plain dicts: `name: value` pairs and nested `name { ... }`
blocks; wrapper messages such as `max_batch_size { value: 8 }` come out as
{"max_batch_size": {"value": 8}}. Repeated fields become lists.
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(r'\s*(?:#[^\n]*\n?)*\s*(?:(?P<brace>[{}])|(?P<colon>:)|(?P<str>"(?:[^"\\]|\\.)*")|(?P<word>[^\s{}:"#]+))')


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot parse text proto near: {text[pos:pos + 30]!r}")
        pos = m.end()
        tok = m.group("brace") or m.group("colon") or m.group("str") or m.group("word")
        if tok:
            out.append(tok)
    return out


def _scalar(tok: str) -> Any:
    if tok.startswith('"'):
        return bytes(tok[1:-1], "utf-8").decode("unicode_escape")
    if tok in ("true", "false"):
        return tok == "true"
    for cast in (int, float):
        try:
            return cast(tok)
        except ValueError:
            pass
    return tok  # enum name


def _put(msg: dict, key: str, value: Any) -> None:
    if key in msg:
        msg[key] = msg[key] if isinstance(msg[key], list) else [msg[key]]
        msg[key].append(value)
    else:
        msg[key] = value


def parse(text: str) -> dict:
    toks = _tokens(text)
    stack: list[dict] = [{}]
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok == "}":
            if len(stack) == 1:
                raise ValueError("unbalanced '}' in text proto")
            stack.pop()
            i += 1
            continue
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if nxt == ":" and i + 2 < len(toks) and toks[i + 2] != "{":
            _put(stack[-1], tok, _scalar(toks[i + 2]))
            i += 3
        elif nxt == "{" or (nxt == ":" and i + 2 < len(toks) and toks[i + 2] == "{"):
            child: dict = {}
            _put(stack[-1], tok, child)
            stack.append(child)
            i += 2 if nxt == "{" else 3
        else:
            raise ValueError(f"unexpected token {tok!r} in text proto")
    if len(stack) != 1:
        raise ValueError("unbalanced '{' in text proto")
    return stack[0]


def unwrap(value: Any, default: Any = None) -> Any:
    """`{ value: 8 }` -> 8 (google.protobuf wrapper types); a bare scalar passes through."""
    if value is None:
        return default
    if isinstance(value, dict):
        return value.get("value", default)
    return value

"""iServer ``attributeFilter`` text -> a small expression tree, never SQL text.

The filters iServer clients send are SQL ``WHERE`` fragments (``SmID < 100``, ``NAME = '京深路'``,
``pop > 1e6 AND (kind IN ('a', 'b') OR name LIKE 'Bei%')``). This module parses a safe subset:

* comparisons ``field op literal`` (or ``literal op field``) with ``= == <> != < <= > >=``;
* ``field [NOT] IN (literal, ...)``, ``field [NOT] LIKE 'pattern'``, ``field IS [NOT] NULL``,
  ``field [NOT] BETWEEN literal AND literal``;
* ``AND``, ``OR``, ``NOT`` and parentheses;
* literals: numbers, ``'single-quoted'`` strings (``''`` is a quote), ``"double-quoted"`` strings in
  value position, ``TRUE``/``FALSE``; fields: bare names (any letters, e.g. Chinese), ``"quoted"`` or
  ``[bracketed]`` names. ``SmID`` (any case) is the feature id.

Anything else (functions, arithmetic, comparisons of two fields or two literals, ``;``, comments) is
an error that names the position. The tree is JSON (it travels in task parameters) and is compiled to
a parameterised query by ``geoservice.services.selection``: values are bound parameters and field
names are checked against the dataset's fields, so nothing from the filter is ever spliced into SQL.

Tree nodes: ``{"op": "and"|"or", "args": [...]}``, ``{"op": "not", "arg": ...}``,
``{"op": "cmp", "field": f, "cmp": "="|"<>"|"<"|"<="|">"|">=", "value": v}``,
``{"op": "in", "field": f, "values": [...]}``, ``{"op": "like", "field": f, "pattern": p}``,
``{"op": "null", "field": f}``; ``not`` wraps the negated forms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from geoservice.errors import BadRequest

MAX_LENGTH = 10_000
MAX_DEPTH = 50
MAX_IN = 10_000
KEYWORDS = {"AND", "OR", "NOT", "IN", "LIKE", "IS", "NULL", "TRUE", "FALSE", "BETWEEN"}
_CMP = {"=": "=", "==": "=", "<>": "<>", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_FLIP = {"=": "=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_LEX = re.compile(
    r"""(?P<ws>\s+)
      |(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
      |(?P<str>'(?:[^']|'')*')
      |(?P<dq>"(?:[^"]|"")*")
      |(?P<br>\[[^\]]+\])
      |(?P<word>[^\W\d]\w*)
      |(?P<op><>|!=|<=|>=|==|=|<|>)
      |(?P<punct>[(),])
      |(?P<minus>-)""",
    re.X,
)


@dataclass(frozen=True)
class Token:
    kind: str  # num, str, dq, br, word, op, punct, minus, end
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    """Split a filter into tokens; any other character is an error naming its position."""
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _LEX.match(text, pos)
        if m is None:
            raise _error(text, pos, f"unexpected character {text[pos]!r}")
        if m.lastgroup != "ws":
            out.append(Token(m.lastgroup or "", m.group(), pos))
        pos = m.end()
    out.append(Token("end", "", len(text)))
    return out


def _error(text: str, pos: int, problem: str) -> BadRequest:
    snippet = text[max(0, pos - 20):pos + 20]
    return BadRequest(f"attributeFilter: {problem} at character {pos} (near {snippet!r}); supported: comparisons of "
                      "a field with a number or 'string', IN, LIKE, IS NULL, BETWEEN, AND, OR, NOT, parentheses")


def parse_filter(text: str | None) -> dict[str, Any] | None:
    """Parse an attribute filter; None or blank gives None (no filter)."""
    if text is None or not text.strip():
        return None
    if not isinstance(text, str):
        raise BadRequest("attributeFilter must be a string")
    if len(text) > MAX_LENGTH:
        raise BadRequest(f"attributeFilter is longer than {MAX_LENGTH} characters")
    parser = _Parser(text, tokenize(text))
    tree = parser.expr(0)
    parser.expect_end()
    return tree


def ids_filter(ids: Any, where: str) -> dict[str, Any] | None:
    """Turn ``filterQueryParameter.ids`` (feature ids, i.e. SmIDs) into a tree node."""
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise BadRequest(f"{where}.ids must be an array of integer SmIDs")
    if len(ids) > MAX_IN:
        raise BadRequest(f"{where}.ids has more than {MAX_IN} ids")
    return {"op": "in", "field": "SmID", "values": list(ids)}


def combine(*trees: dict[str, Any] | None) -> dict[str, Any] | None:
    """AND the given trees together (None entries are skipped)."""
    present = [t for t in trees if t is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else {"op": "and", "args": present}


class _Parser:
    def __init__(self, text: str, tokens: list[Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.i = 0

    # --- token helpers -------------------------------------------------------------------
    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def keyword(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == "word" and tok.text.upper() in words

    def take_keyword(self, word: str) -> None:
        if not self.keyword(word):
            raise self.fail(f"expected {word}")
        self.next()

    def fail(self, problem: str, tok: Token | None = None) -> BadRequest:
        tok = tok or self.peek()
        found = "the end of the filter" if tok.kind == "end" else repr(tok.text)
        return _error(self.text, tok.pos, f"{problem}, found {found}")

    def expect_end(self) -> None:
        if self.peek().kind != "end":
            raise self.fail("expected AND, OR or the end of the filter")

    # --- grammar ---------------------------------------------------------------------------
    def expr(self, depth: int) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise self.fail(f"the filter is nested more than {MAX_DEPTH} levels deep")
        args = [self.conjunction(depth)]
        while self.keyword("OR"):
            self.next()
            args.append(self.conjunction(depth))
        return args[0] if len(args) == 1 else {"op": "or", "args": args}

    def conjunction(self, depth: int) -> dict[str, Any]:
        args = [self.negation(depth)]
        while self.keyword("AND"):
            self.next()
            args.append(self.negation(depth))
        return args[0] if len(args) == 1 else {"op": "and", "args": args}

    def negation(self, depth: int) -> dict[str, Any]:
        if self.keyword("NOT"):
            self.next()
            return {"op": "not", "arg": self.negation(depth + 1)}
        tok = self.peek()
        if tok.kind == "punct" and tok.text == "(":
            self.next()
            inner = self.expr(depth + 1)
            close = self.next()
            if close.kind != "punct" or close.text != ")":
                raise self.fail("expected ')'", close)
            return inner
        return self.predicate()

    def predicate(self) -> dict[str, Any]:
        left = self.operand()
        tok = self.peek()
        if tok.kind == "op":
            self.next()
            right = self.operand()
            return self.comparison(left, _CMP[tok.text], right, tok)
        if left[0] != "field":
            raise self.fail("expected a comparison operator after the value")
        field = left[1]
        negate = False
        if self.keyword("NOT"):
            self.next()
            negate = True
            if not self.keyword("IN", "LIKE", "BETWEEN"):
                raise self.fail("expected IN, LIKE or BETWEEN after NOT")
        node = self.field_predicate(field)
        return {"op": "not", "arg": node} if negate else node

    def field_predicate(self, field: str) -> dict[str, Any]:
        if self.keyword("IN"):
            self.next()
            return {"op": "in", "field": field, "values": self.literal_list()}
        if self.keyword("LIKE"):
            self.next()
            tok = self.peek()
            value = self.literal()
            if not isinstance(value, str):
                raise self.fail("LIKE needs a quoted pattern", tok)
            return {"op": "like", "field": field, "pattern": value}
        if self.keyword("BETWEEN"):
            self.next()
            low = self.literal()
            self.take_keyword("AND")
            high = self.literal()
            return {"op": "and", "args": [{"op": "cmp", "field": field, "cmp": ">=", "value": low},
                                          {"op": "cmp", "field": field, "cmp": "<=", "value": high}]}
        if self.keyword("IS"):
            self.next()
            negate = False
            if self.keyword("NOT"):
                self.next()
                negate = True
            self.take_keyword("NULL")
            node: dict[str, Any] = {"op": "null", "field": field}
            return {"op": "not", "arg": node} if negate else node
        raise self.fail("expected a comparison operator, IN, LIKE, BETWEEN or IS after the field")

    def comparison(self, left: tuple[str, Any], op: str, right: tuple[str, Any], tok: Token) -> dict[str, Any]:
        if left[0] == "field" and right[0] == "value":
            return {"op": "cmp", "field": left[1], "cmp": op, "value": right[1]}
        if left[0] == "value" and right[0] == "field":
            return {"op": "cmp", "field": right[1], "cmp": _FLIP[op], "value": left[1]}
        both = "two fields" if left[0] == "field" else "two values"
        raise self.fail(f"a comparison needs one field and one value, not {both}", tok)

    def literal_list(self) -> list[Any]:
        tok = self.next()
        if tok.kind != "punct" or tok.text != "(":
            raise self.fail("expected '(' after IN", tok)
        values = [self.literal()]
        while self.peek().kind == "punct" and self.peek().text == ",":
            self.next()
            values.append(self.literal())
            if len(values) > MAX_IN:
                raise self.fail(f"IN lists are limited to {MAX_IN} values")
        close = self.next()
        if close.kind != "punct" or close.text != ")":
            raise self.fail("expected ',' or ')' in the IN list", close)
        return values

    def literal(self) -> Any:
        kind, value = self.operand(value_position=True)
        if kind != "value":
            raise self.fail("expected a number or a quoted string")
        return value

    def operand(self, value_position: bool = False) -> tuple[str, Any]:
        """Return ("field", name) or ("value", literal)."""
        tok = self.next()
        if tok.kind == "minus":
            num = self.next()
            if num.kind != "num":
                raise self.fail("expected a number after '-'", num)
            return "value", -_number(num.text)
        if tok.kind == "num":
            return "value", _number(tok.text)
        if tok.kind == "str":
            return "value", tok.text[1:-1].replace("''", "'")
        if tok.kind == "dq":
            name = tok.text[1:-1].replace('""', '"')
            # "..." after an operator is a string (iServer users write NAME = "Beijing"); before it, a field.
            return ("value", name) if value_position or self._after_operator() else ("field", name)
        if tok.kind == "br":
            return "field", tok.text[1:-1]
        if tok.kind == "word":
            upper = tok.text.upper()
            if upper in ("TRUE", "FALSE"):
                return "value", upper == "TRUE"
            if upper in KEYWORDS:
                raise self.fail("expected a field or a value", tok)
            nxt = self.peek()
            if nxt.kind == "punct" and nxt.text == "(":
                raise _error(self.text, tok.pos, f"functions such as {tok.text}(...) are not supported")
            return "field", tok.text
        raise self.fail("expected a field or a value", tok)

    def _after_operator(self) -> bool:
        prev = self.tokens[self.i - 2] if self.i >= 2 else None
        return prev is not None and prev.kind == "op"


def _number(text: str) -> int | float:
    value = float(text)
    return int(text) if text.isdigit() else value


def fields_of(tree: dict[str, Any] | None) -> set[str]:
    """Return the field names a tree mentions."""
    if tree is None:
        return set()
    if tree["op"] in ("and", "or"):
        return set().union(*(fields_of(a) for a in tree["args"]))
    if tree["op"] == "not":
        return fields_of(tree["arg"])
    return {tree["field"]}

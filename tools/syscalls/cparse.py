"""Just enough C for kernel headers: comments, ``#if`` branches, ``#define``, enums, prototypes.

This is not a C parser. It reads the regular, reviewed shape of the few kernel files the
generator names (``include/linux/syscalls.h``, ``SYSCALL_DEFINEn(...)`` lines, uapi headers)
and fails loudly (via the generator's checks) when something expected is missing.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_DIRECTIVE = re.compile(r"^\s*#\s*(if|ifdef|ifndef|elif|else|endif)\b(.*)$")
_DEFINE = re.compile(r"^\s*#\s*define\s+([A-Za-z_]\w*)(?!\()\s+(.*?)\s*$")
_LITERAL = re.compile(r"\b(0[xX][0-9a-fA-F]+|\d+)([uUlL]*)\b")
_IDENT = re.compile(r"\b[A-Za-z_]\w*\b")


def strip_comments(text: str) -> str:
    """Replace comments by a space, keeping line breaks so line numbers survive."""
    return _COMMENT.sub(lambda m: " " + "\n" * m.group(0).count("\n"), text)


def join_continuations(text: str) -> str:
    return text.replace("\\\n", " ")


# --- expressions -------------------------------------------------------------------------

_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Constant,
            ast.BitOr, ast.BitAnd, ast.BitXor, ast.LShift, ast.RShift, ast.Add, ast.Sub,
            ast.Mult, ast.Invert, ast.USub, ast.UAdd, ast.Not, ast.And, ast.Or, ast.Eq,
            ast.NotEq, ast.Lt, ast.Gt, ast.LtE, ast.GtE, ast.FloorDiv)


def _c_literal(match: re.Match[str]) -> str:
    digits = match.group(1)
    if digits.lower().startswith("0x"):
        return str(int(digits, 16))
    if len(digits) > 1 and digits.startswith("0"):
        return str(int(digits, 8))
    return digits


def evaluate(expr: str, names: dict[str, int]) -> int | None:
    """Value of a constant C expression, or None if it uses something we do not know.

    ``names`` resolves identifiers (other macros). Casts such as ``(unsigned long)`` and
    ``_AC(x, UL)``/``_BITUL(n)`` helpers are understood; anything else gives None.
    """
    expr = re.sub(r"\((?:unsigned\s+)?(?:int|long|long\s+long|__u32|__u64|u32|u64)\)", "", expr)
    expr = re.sub(r"\b_AC\(([^,]+),\s*\w+\)", r"(\1)", expr)
    expr = re.sub(r"\b_BITUL\(([^)]+)\)", r"(1 << (\1))", expr)
    expr = re.sub(r"\b_BITULL\(([^)]+)\)", r"(1 << (\1))", expr)
    expr = _LITERAL.sub(_c_literal, expr)

    def ident(m: re.Match[str]) -> str:
        word = m.group(0)
        if word not in names:
            raise KeyError(word)
        return str(names[word])

    try:
        expr = _IDENT.sub(ident, expr)
    except KeyError:
        return None
    expr = expr.replace("/", "//").replace("!", " not ").replace(" not =", "!=")
    expr = expr.replace("&&", " and ").replace("||", " or ")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        return None
    if not all(isinstance(node, _ALLOWED) for node in ast.walk(tree)):
        return None
    return int(eval(compile(tree, "<c-expr>", "eval"), {"__builtins__": {}}))  # noqa: S307


# --- conditional compilation -------------------------------------------------------------

def _condition(kind: str, rest: str, config: dict[str, int]) -> bool:
    rest = rest.strip()
    if kind == "ifdef":
        return rest.split()[0] in config
    if kind == "ifndef":
        return rest.split()[0] not in config
    rest = re.sub(r"defined\s*\(\s*(\w+)\s*\)|defined\s+(\w+)",
                  lambda m: "1" if (m.group(1) or m.group(2)) in config else "0", rest)
    names = {name: 0 for name in _IDENT.findall(rest)}
    names.update({k: v for k, v in config.items() if k in names})
    value = evaluate(rest, names)
    return bool(value) if value is not None else True


def preprocess(text: str, config: dict[str, int], keep_comments: bool = False) -> str:
    """Drop the inactive ``#if`` branches for the given configuration (name -> value).

    Unknown names count as undefined, as in cpp. Only conditionals are handled; includes and
    macro expansion are not needed for the files we read. With ``keep_comments`` a comment
    stays on its line (multi-line ones are folded onto one line).
    """
    out: list[str] = []
    stack: list[tuple[bool, bool]] = []  # (this branch active, some branch already taken)
    active = True
    if keep_comments:
        text = re.sub(r"/\*.*?\*/", lambda m: m.group(0).replace("\n", " "), text, flags=re.S)
    else:
        text = strip_comments(text)
    for line in join_continuations(text).split("\n"):
        m = _DIRECTIVE.match(strip_comments(line) if keep_comments else line)
        if not m:
            out.append(line if active else "")
            continue
        kind, rest = m.group(1), m.group(2)
        parent = all(a for a, _ in (stack if kind.startswith("if") else stack[:-1]))
        if kind in ("if", "ifdef", "ifndef"):
            cond = parent and _condition(kind, rest, config)
            stack.append((cond, cond))
        elif kind == "elif" and stack:
            _, taken = stack[-1]
            cond = parent and not taken and _condition("if", rest, config)
            stack[-1] = (cond, taken or cond)
        elif kind == "else" and stack:
            _, taken = stack[-1]
            stack[-1] = (parent and not taken, True)
        elif kind == "endif" and stack:
            stack.pop()
        active = all(a for a, _ in stack)
        out.append("")
    return "\n".join(out)


# --- constants ---------------------------------------------------------------------------

@dataclass
class Define:
    name: str
    expr: str
    comment: str
    member: str


def defines(text: str, member: str) -> list[Define]:
    """Object-like ``#define NAME value`` lines, in file order, with their trailing comment."""
    found = []
    text = re.sub(r"/\*.*?\*/", lambda m: m.group(0).replace("\n", " "), text, flags=re.S)
    for line in join_continuations(text).split("\n"):
        comment = " ".join(c.strip("/* ") for c in re.findall(r"/\*.*?\*/", line))
        m = _DEFINE.match(strip_comments(line))
        if m and m.group(2):
            found.append(Define(m.group(1), m.group(2), comment, member))
    return found


def enum_members(text: str, member: str) -> list[Define]:
    """``NAME = value,`` and bare ``NAME,`` members of every enum, in file order."""
    found = []
    for body in re.findall(r"\benum\b[^{;]*\{(.*?)\}", strip_comments(text), re.S):
        body = re.sub(r"^\s*#.*$", "", body, flags=re.M)
        previous = None
        for item in body.split(","):
            item = item.strip()
            if not item or item.startswith("#"):
                continue
            name, _, expr = item.partition("=")
            name = name.strip()
            if not re.fullmatch(r"[A-Za-z_]\w*", name):
                continue
            if not expr.strip():
                expr = f"({previous}) + 1" if previous is not None else "0"
            found.append(Define(name, expr.strip(), "", member))
            previous = name
    return found


def resolve(entries: list[Define], known: dict[str, int] | None = None) -> dict[str, int]:
    """Values of every name that evaluates; the first definition that evaluates wins.

    (``#define IPPROTO_IP IPPROTO_IP`` beside ``enum { IPPROTO_IP = 0 }`` resolves to 0.)
    """
    values: dict[str, int] = dict(known or {})
    candidates: dict[str, list[Define]] = {}
    for entry in entries:
        candidates.setdefault(entry.name, []).append(entry)
    pending = {name: list(defs) for name, defs in candidates.items() if name not in values}
    progress = True
    while pending and progress:
        progress = False
        for name in list(pending):
            for entry in pending[name]:
                value = evaluate(entry.expr, values)
                if value is not None:
                    values[name] = value
                    del pending[name]
                    progress = True
                    break
    return values


# --- prototypes --------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    ctype: str  # normalised: tokens joined by single spaces, "*" as its own token
    name: str   # "" when the prototype leaves it unnamed


_TYPE_WORDS = {"int", "long", "short", "char", "unsigned", "signed", "void", "const", "__user",
               "struct", "union", "enum", "*"}


def split_param(text: str) -> Param:
    tokens = re.findall(r"[A-Za-z_]\w*|\*", text.replace("[]", "*"))
    if not tokens:
        return Param("", "")
    last = tokens[-1]
    unnamed = (len(tokens) == 1 or last in _TYPE_WORDS or last.endswith("_t")
               or tokens[-2] in ("struct", "union", "enum")
               or last in ("u8", "u16", "u32", "u64", "s32", "s64", "__u32", "__u64",
                           "__s32", "__s64"))
    if unnamed:
        return Param(" ".join(tokens), "")
    return Param(" ".join(tokens[:-1]), last)


def prototypes(text: str) -> dict[str, list[Param]]:
    """``asmlinkage long sys_x(...)`` declarations (first one wins) as parameter lists."""
    found: dict[str, list[Param]] = {}
    pattern = r"asmlinkage\s+long\s+((?:compat_)?sys_\w+)\s*\(([^;{]*?)\)\s*;"
    for m in re.finditer(pattern, text, re.S):
        params = [p.strip() for p in m.group(2).split(",")]
        found.setdefault(m.group(1), [] if params == ["void"] else [split_param(p)
                                                                     for p in params])
    return found


def syscall_defines(text: str) -> dict[str, list[Param]]:
    """``SYSCALL_DEFINEn(name, type, arg, ...)`` and ``COMPAT_SYSCALL_DEFINEn`` definitions."""
    found: dict[str, list[Param]] = {}
    pattern = r"\b(COMPAT_)?SYSCALL_DEFINE(\d)\(\s*(\w+)\s*((?:,[^)]*)?)\)"
    for m in re.finditer(pattern, strip_comments(text)):
        symbol = ("compat_sys_" if m.group(1) else "sys_") + m.group(3)
        parts = [p.strip() for p in m.group(4).split(",")[1:]]
        count = int(m.group(2))
        if len(parts) != 2 * count:
            continue
        params = [Param(" ".join(re.findall(r"[A-Za-z_]\w*|\*", parts[i])), parts[i + 1])
                  for i in range(0, len(parts), 2)]
        found.setdefault(symbol, params)
    return found

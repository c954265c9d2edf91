"""The package's import graph, read from every module's AST (issue 14):

- no cycles among the package's modules (an import inside a function
  counts: it is a cycle deferred, not removed; one under ``if
  TYPE_CHECKING:`` does not: it is never executed);
- no private name (``_x``) crosses a module boundary, whether imported
  (``from ._m import _x``) or reached as an attribute, of a module
  (``_m._x``) or of an object (``ledger._actor``, ``getattr(ledger,
  "_actor")``: a private attribute that another module of the package
  defines and this one does not; see :func:`_private_attributes`);
- the command line imports only ``scopeledger``'s public names
  (``scopeledger.__all__``).

The library's side has a ratchet: ``KNOWN_*`` lists what is left to mend
(empty now; an entry fails the test once it is mended, so that the list
only shrinks); anything new fails at once.
"""

from __future__ import annotations

import ast
import os


import scopeledger

PKG = os.path.dirname(scopeledger.__file__)

#: Modules of the command line (the ``cli`` package and what it still
#: keeps outside it); they may import ``scopeledger``'s public names only.
CLI_MODULES = ("cli", "_render", "_demo", "_timeline", "_export", "_plot", "__main__")


def _modules() -> dict[str, str]:
    """``{dotted name relative to the package: file}``, every module."""
    out = {}
    for root, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, f), PKG)[:-3].replace(os.sep, ".")
                if rel.endswith(".__init__"):
                    rel = rel[: -len(".__init__")]
                out[rel] = os.path.join(root, f)
    return out


MODULES = _modules()


def _is_cli(mod: str) -> bool:
    return mod.split(".")[0] in CLI_MODULES


def _resolve(mod: str, node: ast.ImportFrom, is_pkg: bool) -> str | None:
    """The module (relative to the package, ``"__init__"`` for the package
    itself) a relative ``from`` import names; ``None`` outside the package."""
    if node.level == 0:
        if node.module and (node.module == "scopeledger" or node.module.startswith("scopeledger.")):
            rest = node.module[len("scopeledger"):].lstrip(".")
            return rest or "__init__"
        return None
    parts = mod.split(".") if mod != "__init__" else []
    base = parts if is_pkg else parts[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    name = ".".join(base + ([node.module] if node.module else []))
    return name or "__init__"


def _private(name: str) -> bool:
    """``_x``, not ``__x`` (a dunder, or a class-private name that Python
    mangles), not ``_`` (a throwaway)."""
    return name.startswith("_") and not name.startswith("__") and len(name) > 1


#: Calls whose second argument, a string, names an attribute.
_ATTR_CALLS = {"getattr", "hasattr", "setattr", "delattr", "__setattr__", "__getattribute__"}


def _attribute_names(tree: ast.AST) -> tuple[set[str], dict[str, int]]:
    """``(defined, read)``: the private names a module defines (functions,
    classes, methods, variables, arguments, imports, attributes it assigns,
    ``__slots__`` entries, ``setattr``'s literal names) and those it reads as
    an attribute of something that is not a module alias (``obj._x``,
    ``getattr(obj, "_x")``), each with a line where it does."""
    defined: set[str] = set()
    read: dict[str, int] = {}
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(n.name)
        elif isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
            defined.add(n.id)
        elif isinstance(n, ast.arg):
            defined.add(n.arg)
        elif isinstance(n, ast.alias):
            defined.add(n.asname or n.name.split(".")[0])
        elif isinstance(n, ast.Attribute):
            if isinstance(n.ctx, ast.Load):
                if _private(n.attr):
                    read.setdefault(n.attr, n.lineno)
            else:
                defined.add(n.attr)
        elif (isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
              and n.targets[0].id == "__slots__"):
            defined |= {c.value for c in ast.walk(n.value) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
        if isinstance(n, ast.Call) and len(n.args) >= 2:
            func = (n.func.id if isinstance(n.func, ast.Name)
                    else n.func.attr if isinstance(n.func, ast.Attribute) else None)
            name = n.args[1].value if isinstance(n.args[1], ast.Constant) else None
            if func in _ATTR_CALLS and isinstance(name, str) and _private(name):
                if func in ("setattr", "__setattr__"):
                    defined.add(name)
                else:
                    read.setdefault(name, n.lineno)
    return {d for d in defined if _private(d)}, read


def _private_attributes(trees: dict[str, ast.AST]) -> set[tuple[str, str]]:
    """``(module, "owner._x:line")``: a private attribute a module reads
    (``obj._x``, ``getattr(obj, "_x")``) that it does not define, and that
    another module of the package does (``owner``: the first such, by
    name). Without types this goes by name: an attribute both modules
    define is not seen (nor a name built at run time); a private name of
    another library (``os._exit``, a named tuple's ``_replace``) is no
    concern of this check. A read through a module alias (``_m._x``) is
    left to the import check, which names the module exactly."""
    names = {mod: _attribute_names(tree) for mod, tree in trees.items()}
    owners: dict[str, list[str]] = {}
    for mod, (defined, _) in sorted(names.items()):
        for name in defined:
            owners.setdefault(name, []).append(mod)
    out = set()
    for mod, (defined, read) in names.items():
        for name, line in read.items():
            if name not in defined and name in owners:
                out.add((mod, f"{owners[name][0]}.{name}:{line}"))
    return out


def _analyse():
    """``(edges, private, cli_private)``: ``edges[mod]`` = modules it
    imports; ``private`` = ``(mod, what)`` private names crossing a boundary
    in the library; ``cli_private`` = names the command line takes that are
    not in ``scopeledger.__all__``."""
    public = set(scopeledger.__all__)
    edges: dict[str, set[str]] = {}
    private: set[tuple[str, str]] = set()
    cli_private: set[tuple[str, str]] = set()
    trees: dict[str, ast.AST] = {}
    for mod, path in MODULES.items():
        is_pkg = path.endswith("__init__.py")
        key = "__init__" if mod == "__init__" else mod
        tree = trees[key] = ast.parse(open(path, encoding="utf-8").read(), path)
        edges[key] = set()
        aliases: dict[str, str] = {}  # local name -> module, for attribute access
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                       for n in ast.walk(block)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or id(node) in typing_only:
                continue
            target = _resolve(mod, node, is_pkg)
            if target is None:
                continue
            for a in node.names:
                sub = f"{target}.{a.name}" if target != "__init__" else a.name
                if sub in MODULES:  # ``from . import _snapshots``: a module
                    edges[key].add(sub)
                    aliases[a.asname or a.name] = sub
                    continue
                if target != key:
                    edges[key].add(target)
                if _is_cli(key) and not _is_cli(target):
                    if target != "__init__" or (a.name not in public and a.name != "__version__"):
                        cli_private.add((key, f"{target}.{a.name}"))
                elif (a.name.startswith("_") and not a.name.startswith("__") and target != key
                      and not _is_cli(target)):  # (a dunder such as __version__ is public)
                    private.add((key, f"{target}.{a.name}"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                where = (key, f"{aliases[node.value.id]}.{node.attr}")
                (cli_private if _is_cli(key) else private).add(where)
    for key, where in _private_attributes(trees):
        (cli_private if _is_cli(key) else private).add((key, where))
    return edges, private, cli_private


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a
    module importing itself), each sorted (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


EDGES, PRIVATE, CLI_PRIVATE = _analyse()

#: What is left to mend in the library (the ratchet: remove an entry when
#: it is mended; the test fails until you do).
KNOWN_CYCLES: list[list[str]] = []
KNOWN_PRIVATE: set[tuple[str, str]] = set()


def test_the_analysis_sees_the_package():
    assert {"_fold", "_events", "_ledger", "__init__"} <= set(EDGES)
    assert "_fold" in EDGES["_ledger"] and "_events" in EDGES["_fold"]


def test_the_library_has_no_import_cycle():
    lib = {m: {t for t in ts if not _is_cli(t)} for m, ts in EDGES.items() if not _is_cli(m)}
    assert _cycles(lib) == KNOWN_CYCLES


def test_no_private_name_crosses_a_module_boundary_in_the_library():
    assert PRIVATE == KNOWN_PRIVATE


def test_the_command_line_imports_only_public_names_and_no_cycle():
    assert CLI_PRIVATE == set()
    assert _cycles(EDGES) == []


def test_the_checks_catch_what_they_look_for():
    # The analysis itself, on made-up graphs and modules.
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    tree = ast.parse("from ._store import _private, public\nfrom . import _snapshots\n_snapshots._file(1)")
    node = tree.body[0]
    assert _resolve("_ledger", node, False) == "_store"
    assert _resolve("cli.params", node, False) == "cli._store"
    # A private attribute of an object, defined in another module: read
    # (getattr with a literal too) where it is not defined is caught; where
    # it is defined, or a name no module of the package defines, is not.
    trees = {
        "_ledger": ast.parse("class Ledger:\n    def _actor(self): ...\n    def run(self):\n"
                             "        self._state = 1\n        return self._actor()\n"),
        "_wait": ast.parse("import os\ndef who(ledger):\n    a = ledger._actor\n"
                           "    b = getattr(ledger, '_state', None)\n    os._exit(0)\n"),
        "_async": ast.parse("class A:\n    __slots__ = ('_state',)\n    def f(self):\n"
                            "        return self._state, self._actor if False else 1\n"),
    }
    assert _private_attributes(trees) == {("_wait", "_ledger._actor:3"), ("_wait", "_async._state:4"),
                                          ("_async", "_ledger._actor:4")}

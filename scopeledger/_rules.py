"""The rule algebra: permissions, scope rules, overlap and coverage.

Pure: nothing here touches the filesystem, the clock or other processes.
Paths are compared component by component, never as string prefixes, so
``/data/proj`` does not contain ``/data/proj-backup``.

The overlap table is the seed's ``rules_overlap`` (REQUIREMENTS.md, "Scope
rules"): a recursive rule covers its path and everything below it, a
non-recursive rule covers its path and its direct children.
"""

from __future__ import annotations

import enum
import re
import sys
from typing import Any

import attrs

from ._errors import InvalidHolderName, InvalidScope, shown

#: Longest accepted path in bytes (Linux PATH_MAX, including the NUL).
PATH_MAX = 4096
#: Longest accepted path component in bytes (Linux NAME_MAX).
NAME_MAX = 255


class Permission(enum.Enum):
    """``read``, ``exclusive-read`` or ``write``; ordered ``READ <
    EXCLUSIVE_READ < WRITE`` (a rule covers another only with a permission
    at least as strong).

    ``READ`` is shared: reads never conflict. ``EXCLUSIVE_READ`` is a read
    that excludes writers (``flock -s`` against ``-x``, etcd's RWMutex
    reader): it conflicts with another holder's overlapping ``WRITE``, never
    with a read of either kind. ``WRITE`` conflicts with another holder's
    overlapping ``WRITE`` or ``EXCLUSIVE_READ`` (holders outside one line of
    delegation; see :func:`conflicts`).
    """

    READ = "read"
    WRITE = "write"
    EXCLUSIVE_READ = "exclusive-read"

    # Members are singletons compared by identity: hash by identity too (in
    # C), instead of Enum's Python-level hash of the name. ScopeRule hashes
    # are on the hot path of the path index.
    __hash__ = object.__hash__

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Permission):
            return NotImplemented
        return _RANK[self] < _RANK[other]

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Permission):
            return NotImplemented
        return self is other or self < other

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Permission):
            return NotImplemented
        return other < self

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Permission):
            return NotImplemented
        return self is other or other < self

    @classmethod
    def parse(cls, value: "Permission | str") -> "Permission":
        """``"read"``/``"write"``/``"exclusive-read"`` (any case; also
        ``"exclusive_read"``) or a Permission -> Permission.

        Raises:
            InvalidScope: for anything else.
        """
        if isinstance(value, Permission):
            return value
        fast = _BY_VALUE.get(value) if isinstance(value, str) else None
        if fast is not None:
            return fast
        if isinstance(value, str):
            try:
                return cls(value.strip().lower().replace("_", "-"))
            except ValueError:
                pass
        raise InvalidScope(f"invalid permission {shown(value)}: expected 'read', 'exclusive-read' or 'write'")


#: The log's spelling of each permission, ``{Permission: str}``: a dict
#: lookup, cheaper than ``.value`` (an Enum property) on the hot path.
PERMISSION_TEXT = {p: p.value for p in Permission}


_BY_VALUE = {"read": Permission.READ, "write": Permission.WRITE, "exclusive-read": Permission.EXCLUSIVE_READ}
_RANK = {Permission.READ: 0, Permission.EXCLUSIVE_READ: 1, Permission.WRITE: 2}

#: For each permission, the permissions of another holder's overlapping
#: rule it conflicts with (outside one line of delegation): a write with a
#: write or an exclusive read, an exclusive read with a write, a read with
#: nothing.
CONFLICTS_WITH: dict[Permission, frozenset[Permission]] = {
    Permission.WRITE: frozenset({Permission.WRITE, Permission.EXCLUSIVE_READ}),
    Permission.EXCLUSIVE_READ: frozenset({Permission.WRITE}),
    Permission.READ: frozenset(),
}
_set = object.__setattr__

#: A holder name (``HOLDER_NAME.fullmatch(name)``): 1-255 characters, one or
#: more parts joined by ``/`` (``team/agent 3``); a part is characters from
#: ``[A-Za-z0-9._@:+-]`` and spaces, starting with a letter or digit and not
#: ending with a space. So no control character, no empty part, no ``.`` or
#: ``..`` part (a name with ``/`` is a path below the runtime's socket
#: directory, ``socket_path_for``, and never leaves it), nothing outside
#: ASCII, no leading ``-`` (an option on a command line).
HOLDER_NAME = re.compile(r"(?=.{1,255}$)[A-Za-z0-9](?:[A-Za-z0-9._@:+ -]*[A-Za-z0-9._@:+-])?"
                         r"(?:/[A-Za-z0-9](?:[A-Za-z0-9._@:+ -]*[A-Za-z0-9._@:+-])?)*")


def check_path_text(path: str, what: str = "path") -> None:
    """Check a path's text as the log will hold it (``what`` names it in
    messages: ``'path'``, ``'socket'``).

    Raises:
        InvalidScope: empty, containing NUL, not absolute, not encodable as
            UTF-8, or ``PATH_MAX`` (4096) bytes or longer.
    """
    if not path:
        raise InvalidScope(f"invalid {what} '': empty")
    if "\x00" in path:
        raise InvalidScope(f"invalid {what} {shown(path)}: contains NUL")
    if not path.startswith("/"):
        raise InvalidScope(f"invalid {what} {shown(path)}: not absolute")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidScope(f"invalid {what} {shown(path)}: not valid UTF-8") from None
    if size >= PATH_MAX:
        raise InvalidScope(f"invalid {what} {shown(path[:60])}...: longer than {PATH_MAX - 1} bytes")


def normalize_path(path: Any) -> str:
    """Lexically normalise an absolute POSIX path.

    Removes ``.`` components, repeated and trailing slashes, and applies ``..``
    lexically (``/..`` stays ``/``). ``/data//x//``, ``/data/./x/`` and
    ``/data/x/`` all become ``/data/x``. Symlinks are not resolved here (that
    is IO; :class:`~scopeledger.Ledger` does it at its boundary).

    Args:
        path: a ``str`` (or ``os.PathLike``) absolute path.

    Returns:
        The normalised path, ``str``.

    Raises:
        InvalidScope: not a string, empty, relative, containing NUL, not
            encodable as UTF-8, longer than 4096 bytes or with a component
            longer than 255 bytes.
    """
    if type(path) is str and is_normal(path):
        return path
    if hasattr(path, "__fspath__"):
        path = path.__fspath__()
    if not isinstance(path, str):
        raise InvalidScope(f"invalid path {shown(path)}: expected a string")
    check_path_text(path)
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        if len(part.encode("utf-8")) > NAME_MAX:
            raise InvalidScope(
                f"invalid path {shown(path[:60])}: component {shown(part[:40])}... longer than {NAME_MAX} bytes")
        out.append(part)
    return "/" + "/".join(out)


def is_normal(path: str) -> bool:
    """Fast check that ``path`` is already normal (ASCII, short enough that
    no component can exceed NAME_MAX): most paths, at a fraction of the cost."""
    return (path.startswith("/") and len(path) <= NAME_MAX and path.isascii()
            and "\x00" not in path and "//" not in path and "/./" not in path
            and "/../" not in path and (path == "/" or not path.endswith(("/", "/.", "/.."))))


def components(path: str) -> tuple[str, ...]:
    """``"/a/b"`` -> ``("a", "b")``; ``"/"`` -> ``()``. Expects a normalised path."""
    if path == "/":
        return ()
    return tuple(path[1:].split("/"))


def _recursive_converter(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidScope(f"invalid recursive flag {shown(value)}: expected true or false")
    return value


@attrs.frozen(slots=True, order=False, init=False)
class ScopeRule:
    """One scope rule: ``(path, permission, recursive)``, and, once a
    :class:`~scopeledger.Ledger` has identified its path, where that path
    lives (``key``, ``via``, ``below``).

    ``ScopeRule(path, permission="write", recursive=True)``.

    Attributes:
        path: normalised absolute path (``str``); see :func:`normalize_path`.
            In a granted rule: the canonical path as its holder saw it
            (symlinks resolved), what users are shown.
        permission: :class:`Permission`; ``"read"``/``"exclusive-read"``/``"write"``
            are accepted.
        recursive: ``True`` (default) covers the path and everything below
            it; ``False`` covers the path and its direct children only.
        key: the path's identity, ``str``: its filesystem's device number
            and the path within that filesystem, ``"254:0/home/u/src"``
            (ARCHITECTURE.md, "The identity of a path"); ``None`` for a rule
            compared by its path alone (as built here, or granted by a
            scopeledger before 0.2).
        via: ``tuple[str, ...]``: the same path in each filesystem the one
            holding it is mounted on, nearest first (keys).
        below: ``tuple[str, ...]``: for a recursive rule, the root of each
            filesystem mounted below the path when it was identified (keys).

    Equality and hash are those of ``(path, permission, recursive)``, what
    was asked for: a granted rule equals the ``ScopeRule`` it was granted
    from. A rule without a ``key`` is compared with any rule by path. Two
    identified rules overlap when a key of one (``key``, ``below``) and a key of
    the other (``key``, ``below``, ``via``) are one path or one lies within
    the other as the rules' recursion says; two ``via`` keys are never
    compared with each other, nor two paths (two pods each with its own
    ``/work`` are not one directory).

    A ``..`` in the given path is applied lexically here (the algebra is
    pure), but the given spelling is kept (``given``, not part of equality)
    so that :class:`~scopeledger.Ledger` resolves it physically, after
    symlinks, at its boundary: ``/x/link/..`` is the parent of the link's
    target, not ``/x``.

    Raises:
        InvalidScope: on construction, for a bad path, permission or flag.
    """

    path: str
    permission: Permission = Permission.WRITE
    recursive: bool = True
    # The identity in one slot (building a rule costs one attribute more,
    # not three): ``None``; a device ``"254:0"`` when the key is that
    # device and the path itself, with no via or below (the common case,
    # which costs no string per rule); else ``(key, via, below)``.
    ident: "str | tuple[str, tuple[str, ...], tuple[str, ...]] | None" = attrs.field(
        default=None, init=False, eq=False, repr=False, hash=False)
    given: str | None = attrs.field(default=None, init=False, eq=False, repr=False, hash=False)

    @property
    def key(self) -> str | None:
        """The path's identity (see the class docstring), or ``None``."""
        ident = self.ident
        if type(ident) is str:
            path = self.path
            return ident if path == "/" else ident + path
        return None if ident is None else ident[0]

    @property
    def via(self) -> tuple[str, ...]:
        """Keys of the path in the filesystems its own is mounted on."""
        ident = self.ident
        return ident[1] if type(ident) is tuple else ()

    @property
    def below(self) -> tuple[str, ...]:
        """Keys of the roots of the filesystems mounted below the path."""
        ident = self.ident
        return ident[2] if type(ident) is tuple else ()

    def __init__(self, path: Any, permission: "Permission | str" = Permission.WRITE,
                 recursive: bool = True) -> None:
        _set(self, "ident", None)
        if type(path) is str and is_normal(path) and "*" not in path:
            _set(self, "path", path)
            _set(self, "given", None)  # a normal path has no '..'
        else:
            _set(self, "path", normalize_path(path))
            raw = path.__fspath__() if hasattr(path, "__fspath__") else path
            if "*" in raw:
                raise InvalidScope(_star_in_path(raw, permission))
            _set(self, "given", raw if ".." in raw.split("/") else None)
        try:
            perm = _PERM_FAST[permission]
        except (KeyError, TypeError):
            perm = Permission.parse(permission)
        _set(self, "permission", perm)
        _set(self, "recursive", recursive if recursive is True or recursive is False
             else _recursive_converter(recursive))

    @property
    def parts(self) -> tuple[str, ...]:
        """The path's components, ``tuple[str, ...]``."""
        return components(self.path)

    def display(self) -> str:
        """Compact form: ``/a/**`` (recursive) or ``/a/*`` (non-recursive)."""
        base = self.path.rstrip("/")
        return f"{base}/**" if self.recursive else f"{base}/*"

    def to_json(self) -> list[Any]:
        """The form stored in events: ``[path, "read"|"exclusive-read"|"write", recursive]``,
        and for an identified rule a fourth item, ``{"fs": key}`` with
        ``"via"`` and ``"below"`` lists when they are not empty."""
        if self.key is None:
            return [self.path, self.permission.value, self.recursive]
        return [self.path, self.permission.value, self.recursive, identity_json(self)]

    @classmethod
    def from_json(cls, value: Any) -> "ScopeRule":
        """Inverse of :meth:`to_json`, validating and normalising.

        Raises:
            InvalidScope: when ``value`` is not a ``[str, str, bool]`` list
                (or one with a valid identity as fourth item).
        """
        if cls is ScopeRule and type(value) is list and len(value) == 4:  # the usual rule of a v2 line
            ident = value[3]
            if type(ident) is dict and len(ident) == 1 and "fs" in ident:
                fast = identified_rule(value[0], value[1], value[2], ident["fs"])
                if fast is not None:
                    return fast
        if not (isinstance(value, (list, tuple)) and len(value) in (3, 4)):
            raise InvalidScope(f"invalid rule {shown(value)}: expected [path, permission, recursive]")
        path = value[0]
        if isinstance(path, str) and "*" in path:
            # A log written before '*' was refused may hold one: read it
            # back as it was recorded (a literal name), never re-parsed.
            rule = _new(cls)
            _set(rule, "path", normalize_path(path))
            _set(rule, "permission", Permission.parse(value[1]))
            _set(rule, "recursive", _recursive_converter(value[2]))
            _set(rule, "given", None)
            _set(rule, "ident", None)
        else:
            rule = cls(path, value[1], value[2])
        if len(value) == 4:
            why = identity_fault(value[3])
            if why is not None:
                raise InvalidScope(f"invalid rule {shown(value)}: {why}")
            ident = value[3]
            _set(rule, "ident", compact_ident(rule.path, ident["fs"], tuple(ident.get("via", ())),
                                              tuple(ident.get("below", ())) if rule.recursive else ()))
        return rule

    def identified(self, path: str, ident: Any) -> "ScopeRule":
        """This rule on canonical ``path`` with the identity ``ident``: as
        ``scopeledger._paths.identity`` gives it (a device, or ``(key,
        via, below)``; no checks: that made them)."""
        rule = _new(ScopeRule)
        _set(rule, "path", path)
        _set(rule, "permission", self.permission)
        _set(rule, "recursive", self.recursive)
        _set(rule, "ident", ident)
        _set(rule, "given", None)
        return rule

    def identity_text(self) -> str:
        """Where the path lives, for people, when that says more than the
        path: ``" [254:0:/data/p1/src]"`` (device, then the path within the
        filesystem), or ``""`` when the rule has no identity or that path
        is its own path."""
        key = self.key
        if key is None:
            return ""
        i = key.find("/")
        dev, within = (key, "/") if i < 0 else (key[:i], key[i:])
        return "" if within == self.path else f" [{dev}:{within}]"

    def __str__(self) -> str:
        return f"{self.permission.value} {self.display()}{self.identity_text()}"


_PERMS = _BY_VALUE
#: A permission given as text or as itself -> itself (the rule constructor's fast path).
_PERM_FAST: dict[str | Permission, Permission] = {p: p for p in Permission}
for _text, _perm in _PERMS.items():
    _PERM_FAST[_text] = _perm
_intern = sys.intern
_new = object.__new__


#: The keys of a rule's identity object (the fourth item of a rule in a
#: v2 line): ``fs`` (required), ``via``, ``below`` (omitted when empty).
IDENTITY_KEYS = frozenset({"fs", "via", "below"})

#: A key: a device number ``MAJ:MIN``, then the normalised path within that
#: filesystem (nothing for its root): no empty, ``.`` or ``..`` component.
KEY = re.compile(r"[0-9]{1,10}:[0-9]{1,10}(?:/(?!\.\.?(?:/|$))[^/\x00]+)*")
_DEVICE = re.compile(r"[0-9]{1,10}:[0-9]{1,10}")  # (a key's device, as KEY begins)


def compact_ident(path: str, key: str, via: tuple[str, ...], below: tuple[str, ...]) -> Any:
    """``ScopeRule.ident`` for these: the device alone (interned, shared by
    every such rule) when ``key`` is it and ``path``, with no ``via`` or
    ``below``; else the tuple."""
    if not via and not below:
        i = key.find("/")
        if (key[i:] == path) if i >= 0 else path == "/":
            return _intern(key if i < 0 else key[:i])
    return (_intern(key), via, below)


def identity_json(rule: ScopeRule) -> dict[str, Any]:
    """A rule's identity as the log stores it: ``{"fs", "via"?, "below"?}``."""
    ident = rule.ident
    if type(ident) is str:
        path = rule.path
        return {"fs": ident if path == "/" else ident + path}
    key, via, below = ident  # type: ignore[misc,str-unpack]  # (a tuple here: the str case returned above)
    if not via and not below:
        return {"fs": key}
    out: dict[str, Any] = {"fs": key}
    if via:
        out["via"] = list(via)
    if below:
        out["below"] = list(below)
    return out


def identity_fault(value: Any) -> str | None:
    """Why ``value`` is not a rule's identity object, or ``None``."""
    if type(value) is not dict:
        return f"identity {shown(value)} is not an object"
    if not value.keys() <= IDENTITY_KEYS:
        extra = sorted(str(k) for k in value if k not in IDENTITY_KEYS)
        return f"unknown key {shown(extra[0])} in a rule's identity (it has only below, fs, via)"
    fs = value.get("fs")
    if type(fs) is not str or not KEY.fullmatch(fs):
        return f"identity fs {shown(fs)} is not a key (MAJ:MIN and a normalised path)"
    for what in ("via", "below"):
        keys = value.get(what, ())
        if what in value and (type(keys) is not list or not keys):
            return f"identity {what} {shown(keys)} is not a non-empty list of keys"
        for k in keys:
            if type(k) is not str or not KEY.fullmatch(k):
                return f"identity {what} item {shown(k)} is not a key (MAJ:MIN and a normalised path)"
    return None


def rule_from_log(value: Any) -> ScopeRule:
    """``[path, permission, recursive]`` (or with an identity object as a
    fourth item) read back from the log or a snapshot -> :class:`ScopeRule`,
    without re-normalising (the fold's fast path; the path was normalised
    when the event was written; ``_fold`` checks the rest).

    Raises:
        ValueError: not a ``[str starting with "/", "read"|"write", bool]``,
            or a fourth item that is not an object with a str ``fs``.
    """
    if len(value) == 3:
        path, perm, rec = value
        ident = None
    else:
        path, perm, rec, ident = value
        if type(ident) is not dict or type(ident.get("fs")) is not str:
            raise ValueError(f"malformed rule {shown(value)}")
    if type(path) is not str or not path.startswith("/") or type(rec) is not bool:
        raise ValueError(f"malformed rule {shown(value)}")
    rule = _new(ScopeRule)
    _set(rule, "path", _intern(path))  # holders of one path share its string
    _set(rule, "permission", _PERMS[perm])
    _set(rule, "recursive", rec)
    _set(rule, "given", None)
    if ident is None:
        _set(rule, "ident", None)
    else:
        via = ident.get("via")
        below = ident.get("below")
        _set(rule, "ident", compact_ident(rule.path, ident["fs"], tuple(via) if via else (),
                                          tuple(below) if below else ()))
    return rule



def identified_rule(path: Any, perm: Any, recursive: Any, fs: Any) -> ScopeRule | None:
    """:func:`rule_from_log` of ``[path, perm, recursive, {"fs": fs}]``,
    the usual rule of a v2 line, when it is one a v2 line may hold as it
    is: a normal path (:func:`is_normal`), a permission's text, a bool, a
    key; else ``None`` (the caller checks it the long way, which says
    what is wrong). The fold's fast path: one call, no exception."""
    if type(path) is not str or type(perm) is not str or type(recursive) is not bool or type(fs) is not str:
        return None
    permission = _PERMS.get(perm)
    if permission is None or not is_normal(path):
        return None
    n = len(fs) - len(path)
    if n > 0 and path != "/" and fs.endswith(path) and _DEVICE.fullmatch(fs, 0, n):
        # The key is a device and this normal path: a KEY, and compact_ident's
        # answer is the device alone.
        ident: Any = _intern(fs[:n])
    elif KEY.fullmatch(fs):
        ident = compact_ident(path, fs, (), ())
    else:
        return None
    rule = _new(ScopeRule)
    _set(rule, "path", _intern(path))
    _set(rule, "permission", permission)
    _set(rule, "recursive", recursive)
    _set(rule, "given", None)
    _set(rule, "ident", ident)
    return rule

def _relation(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """Depth difference when one path is an ancestor-or-self of the other.

    Returns ``len(b) - len(a)`` (>= 0) when ``a`` is ``b`` or an ancestor of
    it, ``-(len(a) - len(b))`` (< 0) when ``b`` is a strict ancestor of ``a``,
    and ``None`` when neither contains the other.
    """
    n = min(len(a), len(b))
    if a[:n] != b[:n]:
        return None  # type: ignore[return-value]
    return len(b) - len(a)


def parts_overlap(a: tuple[str, ...], a_rec: bool, b: tuple[str, ...], b_rec: bool) -> bool:
    """Overlap on component tuples; see :func:`overlaps`."""
    d = _relation(a, b)
    if d is None:
        return False
    if d == 0:
        return True
    if d > 0:  # a is a strict ancestor of b
        return a_rec or d == 1
    return b_rec or d == -1  # b is a strict ancestor of a


def key_parts(key: str) -> tuple[str, ...]:
    """A key's components: the device, then the path's (``"254:0/a"`` ->
    ``("254:0", "a")``). A path is the key of a rule without an identity,
    its first component ``""`` (``"/a"`` -> ``("", "a")``, ``"/"`` ->
    ``("",)``), so that paths and keys never meet."""
    return ("",) if key == "/" else tuple(key.split("/"))


def real_keys(rule: ScopeRule) -> list[tuple[tuple[str, ...], bool]]:
    """``[(key parts, recursive)]`` of what ``rule`` itself covers: its key
    (its path when it has none), and the filesystems mounted below it."""
    out = [(key_parts(rule.key or rule.path), rule.recursive)]
    if rule.below:
        out.extend((key_parts(k), True) for k in rule.below)
    return out


def weak_keys(rule: ScopeRule) -> list[tuple[tuple[str, ...], bool]]:
    """``[(key parts, recursive)]`` of the places ``rule`` is also found at,
    compared only with other rules' :func:`real_keys`: its path in the
    filesystems its own is mounted on (``via``)."""
    rec = rule.recursive
    return [(key_parts(k), rec) for k in rule.via]


def overlaps(a: ScopeRule, b: ScopeRule) -> bool:
    """Whether what ``a`` covers intersects what ``b`` covers (permissions
    ignored). Symmetric. The four recursive/non-recursive cases of
    REQUIREMENTS.md reduce to: same path; or the ancestor rule is recursive;
    or the ancestor is the direct parent of the other path. Rules a
    :class:`~scopeledger.Ledger` identified are compared by their keys (see
    :class:`ScopeRule`).
    """
    if a.key is None or b.key is None:  # a rule without an identity: by path
        return parts_overlap(a.parts, a.recursive, b.parts, b.recursive)
    ra, rb = real_keys(a), real_keys(b)
    wa, wb = weak_keys(a), weak_keys(b)
    for pa, fa in ra:
        for pb, fb in rb:
            if parts_overlap(pa, fa, pb, fb):
                return True
        for pb, fb in wb:
            if parts_overlap(pa, fa, pb, fb):
                return True
    for pa, fa in wa:
        for pb, fb in rb:
            if parts_overlap(pa, fa, pb, fb):
                return True
    return False


def parts_cover(c: tuple[str, ...], c_rec: bool, i: tuple[str, ...], i_rec: bool) -> bool:
    """Coverage on component tuples (permissions ignored); see :func:`covers`."""
    d = _relation(c, i)
    if d is None or d < 0:
        return False
    if c_rec:
        return True
    # A non-recursive cover covers its path and its direct children only.
    # Any rule at a child covers that child's children too, so only a
    # non-recursive rule at the very same path is inside it.
    return d == 0 and not i_rec


def conflicts(a: ScopeRule, b: ScopeRule) -> bool:
    """Whether ``a`` and ``b``, held by two holders outside one line of
    delegation, conflict: they overlap (:func:`overlaps`) and one is a
    write while the other is a write or an exclusive read
    (:data:`CONFLICTS_WITH`). Symmetric."""
    return b.permission in CONFLICTS_WITH[a.permission] and overlaps(a, b)


def covers(cover: ScopeRule, inner: ScopeRule) -> bool:
    """Whether ``cover`` fully covers ``inner``: ``cover.permission >=
    inner.permission`` and everything ``inner`` covers, ``cover`` covers.

    A recursive cover covers any rule at or below its path. A non-recursive
    cover covers only a non-recursive rule at the same path (any rule at a
    child covers that child's children too, which the cover does not).
    """
    if cover.permission < inner.permission:
        return False
    if cover.key is None or inner.key is None:  # a rule without an identity: by path
        return parts_cover(cover.parts, cover.recursive, inner.parts, inner.recursive)
    # Where ``inner`` lives, or where its filesystem is mounted, lies inside
    # what ``cover`` itself covers (what is mounted below ``inner`` lies
    # below it there too).
    places = [(key_parts(inner.key or inner.path), inner.recursive)] + weak_keys(inner)
    rec = inner.recursive
    for pc, fc in real_keys(cover):
        for pi, _ in places:
            if parts_cover(pc, fc, pi, rec):
                return True
    return False


def covers_place(rule: ScopeRule, probe: ScopeRule) -> bool:
    """Whether ``rule`` covers the path of ``probe`` itself (``who``): the
    place is ``rule``'s path, below it (recursive) or a direct child, in
    the key pairs :func:`overlaps` compares."""
    def inside(pr: tuple[str, ...], fr: bool, pq: tuple[str, ...]) -> bool:
        d = len(pq) - len(pr)
        return d >= 0 and pq[:len(pr)] == pr and (d <= 1 or fr)

    if rule.key is None or probe.key is None:
        return inside(rule.parts, rule.recursive, probe.parts)
    own = key_parts(probe.key or probe.path)
    places = [own] + [p for p, _ in weak_keys(probe)]
    for pr, fr in real_keys(rule):
        if any(inside(pr, fr, pq) for pq in places):
            return True
    return any(inside(pr, fr, own) for pr, fr in weak_keys(rule))


def _star_in_path(raw: str, permission: Any) -> str:
    """Why a path with ``*`` is refused, and what was probably meant."""
    perm = permission.value if isinstance(permission, Permission) else permission
    head = f"invalid path {shown(raw)}: '*' is rule syntax, not part of a path"
    body = raw[:-3] if raw.endswith("/**") else raw[:-2] if raw.endswith("/*") else None
    if body is not None and "*" not in body:
        rec = raw.endswith("/**")
        return (f"{head}: read it as a rule with parse_rule({raw!r}, {perm!r}) (as the command "
                f"line does), or give ScopeRule({body or '/'!r}, {perm!r}, recursive={rec})")
    return (f"{head}, and the rule language has no wildcard but a final '/*' (the directory and "
            "its direct children) or '/**' (everything below it)")


def parse_rule(spec: str, permission: "Permission | str", root: str | None = None) -> ScopeRule:
    """Parse the compact rule syntax used by the command line and manifests
    (the one reader of rule text: :class:`ScopeRule` takes a path, and
    refuses a ``*`` in it).

    ``PATH/**`` or ``PATH``: recursive (the path and everything below it);
    ``PATH/*``: non-recursive (the path and its direct children). ``PATH`` is
    absolute, or relative to ``root``; a relative path may not climb out of
    ``root`` with ``..``. ``*`` anywhere else (``src/*.py``, ``src/**/x``)
    is refused: the rule language has no other wildcard. ``?`` and ``[``
    are ordinary characters of a name (``app/[id]``).

    Args:
        spec: e.g. ``"src/**"``, ``"/repo/docs/*"``, ``"src/parser"``.
        permission: ``"read"``/``"exclusive-read"``/``"write"`` or a :class:`Permission`.
        root: absolute base for relative specs; ``None`` refuses them.

    Returns:
        The :class:`ScopeRule` (lexically normalised; no symlink resolution).

    Raises:
        InvalidScope: empty spec, a ``*`` other than a final ``/*`` or
            ``/**``, a relative spec without root or escaping it, a bad
            permission, or any path error of :func:`normalize_path`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidScope(f"invalid rule {shown(spec)}: empty")
    if "\x00" in spec:
        raise InvalidScope(f"invalid rule {shown(spec)}: contains NUL")
    perm = Permission.parse(permission)
    recursive = True
    body = spec
    if body.endswith("/**") or body == "**":
        body = body[:-2]
    elif body.endswith("/*") or body == "*":
        body, recursive = body[:-1], False
    if "*" in body:
        raise InvalidScope(f"invalid rule {shown(spec)}: '*' is only allowed as a final '/*' or '/**' "
                           "(the rule language has no other wildcard)")
    return path_rule(body, perm, recursive, root, spec)


def path_rule(path: str, permission: "Permission | str", recursive: bool, root: str | None,
              spec: str | None = None) -> ScopeRule:
    """A rule on ``path`` (a path, not rule text: a ``*`` in it is refused),
    absolute or relative to ``root`` (a relative path may not climb out of
    it with ``..``): the long form of manifests' ``[[scope.rules]]``.

    Raises:
        InvalidScope: as :func:`parse_rule` (``spec``, if given, is the
            text named in messages).
    """
    if spec is None:
        spec = path
        if not isinstance(path, str) or not path.strip():
            raise InvalidScope(f"invalid rule path {shown(path)}: empty")
        if "\x00" in path:
            raise InvalidScope(f"invalid rule path {shown(path)}: contains NUL")
        permission = Permission.parse(permission)
        if "*" in path:
            raise InvalidScope(f"invalid rule path {shown(path)}: '*' is rule syntax, not part of a path "
                               "(give the path and recursive, or the rule in the compact form)")
    if not path.startswith("/"):
        if root is None:
            raise InvalidScope(f"invalid rule {shown(spec)}: relative path without a root")
        base = normalize_path(root)
        raw = base.rstrip("/") + "/" + path
        joined = normalize_path(raw)
        if joined != base and not joined.startswith(base.rstrip("/") + "/"):
            raise InvalidScope(f"invalid rule {shown(spec)}: climbs out of its root {base}")
        return ScopeRule(raw, permission, recursive)
    return ScopeRule(path, permission, recursive)


def check_name(name: Any, what: str | None = None) -> str:
    """Validate a holder name (``what``: the argument it was given as, for
    the message: ``invalid holder name '' for parent: ...``).

    Returns:
        The name as a plain ``str`` (a ``str`` subclass is copied, so that
        what a ledger keeps in memory is what the log's reader gets back).

    Raises:
        InvalidHolderName: not a ``str`` of 1-255 characters, parts of
            ``[A-Za-z0-9._@:+-]`` and inner spaces, each starting with a
            letter or digit, joined by ``/`` (``scopeledger._rules.HOLDER_NAME``).
    """
    if not isinstance(name, str) or not HOLDER_NAME.fullmatch(name):
        kind = "" if isinstance(name, str) else f"a str, not {type(name).__name__}, of "
        raise InvalidHolderName(
            f"invalid holder name {shown(name)}{' for ' + what if what else ''}: use {kind}1-255 "
            "characters: parts of [A-Za-z0-9._@:+-] and inner spaces, each starting with a letter or digit, "
            "joined by '/' (as in 'team/agent 3')")
    return name if type(name) is str else str.__str__(name)

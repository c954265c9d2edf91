"""Runtime embedding: manifests, the socket path, and the one-call start-up.

A manifest is a TOML file::

    [holder]
    name = "builder"          # required
    root = "/repo"            # base of relative rules; default: the manifest's directory

    [scope]
    write = ["src/**", "out/*"]   # compact syntax, see parse_rule
    read = ["docs/**"]
    exclusive-read = ["data/**"]  # read, no one writes meanwhile

    [[scope.rules]]           # the long form, may be mixed with the above
    path = "tests"
    permission = "write"
    recursive = false

Unknown keys, missing fields and wrong types are refused with
:class:`InvalidManifest` naming the key (validated by cattrs), and so is
every value that is wrong in itself (a bad holder name or rule, an empty
``root`` or rule path: an empty path never stands for a directory).
"""

from __future__ import annotations

import os
import stat
import tomllib
from typing import Any

import attrs
import cattrs

from ._errors import InvalidHolderName, InvalidManifest, InvalidScope
from ._ledger import Hold, Ledger
from ._rules import check_name
from ._fold import MAX_RULES_PER_REQUEST
from ._rules import PERMISSION_TEXT, ScopeRule, parse_rule, path_rule
from ._imports import first_use

ENV_RUNTIME_DIR = "SCOPELEDGER_RUNTIME_DIR"


def runtime_base() -> str:
    """Base of per-holder runtime directories: ``$SCOPELEDGER_RUNTIME_DIR``
    (a relative one taken from the working directory, a ``..`` applied as
    the OS does: :func:`scopeledger._store.resolve_path`), else
    ``$XDG_RUNTIME_DIR/scopeledger`` (a relative ``$XDG_RUNTIME_DIR`` is
    ignored, as the XDG Base Directory specification says), else
    ``/tmp/scopeledger-<uid>``."""
    with first_use:
        from ._store import resolve_path

    env = os.environ.get(ENV_RUNTIME_DIR)
    if env:
        return resolve_path(env)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "scopeledger")
    return f"/tmp/scopeledger-{os.geteuid()}"


def socket_path_for(name: str, base: str | None = None) -> str:
    """The socket path a holder's runtime exposes: ``<base>/<name>/sock``
    (a name with ``/``, ``team/agent-3``, is a directory below another:
    ``<base>/team/agent-3/sock``; no part of a name is ``.`` or ``..``, so
    the path never leaves ``base``).

    The one function both a runtime's directory code and the ledger call
    (the seed review's finding 2: never predict the path in two places).

    Raises:
        InvalidHolderName: ``name`` cannot be a directory name.
    """
    check_name(name)
    return os.path.join(base if base is not None else runtime_base(), name, "sock")


@attrs.frozen
class ManifestRule:
    path: str
    permission: str
    recursive: bool = True


@attrs.frozen
class ManifestHolder:
    name: str
    root: str | None = None


@attrs.frozen
class ManifestScope:
    write: list[str] = attrs.Factory(list)
    read: list[str] = attrs.Factory(list)
    #: The manifest's key is ``exclusive-read``, as the permission is spelled.
    exclusive_read: list[str] = attrs.Factory(list)
    rules: list[ManifestRule] = attrs.Factory(list)


@attrs.frozen
class Manifest:
    """A parsed manifest: ``name`` (str) and ``rules`` (tuple[ScopeRule])."""

    name: str
    rules: tuple[ScopeRule, ...]


@attrs.frozen
class _RawManifest:
    holder: ManifestHolder
    scope: ManifestScope


_converter = cattrs.Converter(forbid_extra_keys=True)


def _strict_str(value: Any, _type: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__} {value!r}")
    return value


def _strict_bool(value: Any, _type: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {type(value).__name__} {value!r}")
    return value


def _is_list(t: Any) -> bool:
    return getattr(t, "__origin__", None) is list


def _strict_list(value: Any, t: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__} {value!r}")
    (item,) = t.__args__
    out = []
    for i, v in enumerate(value):
        try:
            out.append(_converter.structure(v, item))
        except TypeError as exc:
            raise TypeError(f"item {i}: {exc}") from None
    return out


def _format_error(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, TypeError) and str(exc).startswith(("expected", "item ")):
        return f"invalid value: {exc}"
    return cattrs.v.format_exception(exc, type_)


_converter.register_structure_hook_func(_is_list, _strict_list)
_converter.register_structure_hook(str, _strict_str)
_converter.register_structure_hook(bool, _strict_bool)
_converter.register_structure_hook(ManifestScope, cattrs.gen.make_dict_structure_fn(
    ManifestScope, _converter, _cattrs_forbid_extra_keys=True,
    exclusive_read=cattrs.gen.override(rename="exclusive-read")))


def parse_manifest(data: dict[str, Any], root: str, source: str = "<manifest>") -> Manifest:
    """Validate a decoded manifest document.

    Args:
        data: the TOML document as a dict.
        root: default base for relative rule paths (absolute).
        source: where it came from, for messages.

    Raises:
        InvalidManifest: unknown keys, missing fields, wrong types, a bad
            holder name or rule, an empty ``[holder] root`` or rule path
            (never taken as the manifest's directory), no rules at all, or
            more than ``MAX_RULES_PER_REQUEST`` (10,000, ``@ manifest.scope``);
            the message names the key (``@ manifest.holder.root``,
            ``@ manifest.scope.write[0]``), but for "no rules".
    """
    try:
        raw = _converter.structure(data, _RawManifest)
    except (cattrs.ClassValidationError, cattrs.ForbiddenExtraKeysError) as exc:
        problems = "; ".join(cattrs.transform_error(exc, path="manifest",
                                                    format_exception=_format_error))
        # (cattrs names a renamed key by its attribute: the manifest's own spelling here)
        problems = problems.replace("@ manifest.scope.exclusive_read", "@ manifest.scope.exclusive-read")
        raise InvalidManifest(f"invalid manifest {source}: {problems}") from None
    except Exception as exc:  # noqa: BLE001 - cattrs may raise plain TypeErrors too
        raise InvalidManifest(f"invalid manifest {source}: {exc}") from None

    def refuse(why: Any, key: str) -> InvalidManifest:
        return InvalidManifest(f"invalid manifest {source}: {why} @ manifest.{key}")

    try:
        name = check_name(raw.holder.name)
    except InvalidHolderName as exc:
        raise refuse(exc, "holder.name") from None
    if raw.holder.root == "":
        # As '--root ""' on the command line: never the manifest's directory.
        raise refuse("must not be empty (leave root out for the manifest's directory, or "
                     "give '.')", "holder.root")
    if raw.holder.root is not None and "\x00" in raw.holder.root:
        raise refuse(f"invalid root {raw.holder.root!r}: contains NUL", "holder.root")
    base = raw.holder.root if raw.holder.root is not None else root
    if not base.startswith("/"):
        base = os.path.join(root, base)
    given = len(raw.scope.write) + len(raw.scope.read) + len(raw.scope.exclusive_read) + len(raw.scope.rules)
    if given > MAX_RULES_PER_REQUEST:
        raise refuse(f"too many rules: {given}, at most {MAX_RULES_PER_REQUEST} in one request", "scope")
    rules: list[ScopeRule] = []
    try:
        for perm, specs in (("write", raw.scope.write), ("read", raw.scope.read),
                            ("exclusive-read", raw.scope.exclusive_read)):
            for i, spec in enumerate(specs):
                key = f"scope.{perm}[{i}]"
                rules.append(parse_rule(spec, perm, base))
        for i, r in enumerate(raw.scope.rules):
            key = f"scope.rules[{i}]." + ("path" if r.permission in PERMISSION_TEXT.values() else "permission")
            rules.append(path_rule(r.path, r.permission, r.recursive, base))
    except (InvalidScope, ValueError) as exc:
        raise refuse(exc, key) from None
    if not rules:
        raise InvalidManifest(f"invalid manifest {source}: no scope rules ([scope] write/read/exclusive-read/rules)")
    return Manifest(name, tuple(rules))


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a TOML manifest file; relative rules are based at
    the manifest's directory unless ``[holder] root`` says otherwise.

    Raises:
        InvalidManifest: unreadable, not TOML, or invalid (see
            :func:`parse_manifest`).
    """
    with first_use:
        from ._store import resolve_path

    # Not os.path.abspath: a '..' after a symlink is the target's parent, as
    # for the OS that opens it (and relative rules are based there).
    path = resolve_path(os.fspath(path))
    text = _read_manifest(path)
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:  # (not UTF-8: not TOML either)
        raise InvalidManifest(f"invalid manifest {path}: not TOML ({exc})") from None
    return parse_manifest(data, os.path.dirname(path), path)


#: The largest manifest read, in bytes (1 MiB; a real one is a few hundred).
MAX_MANIFEST_BYTES = 1 << 20


def _read_manifest(path: str) -> bytes:
    """The bytes of the manifest file ``path`` (absolute): a regular file
    (symlinks followed) of at most :data:`MAX_MANIFEST_BYTES`. Anything else
    (a FIFO, a device such as ``/dev/zero``, a directory, a socket) is
    refused before it is opened, so that reading can neither block nor run
    out of memory; the size is checked again on the open file and while
    reading (a file that grows meanwhile).

    Raises:
        InvalidManifest: it cannot be read, is not a regular file, or is
            too large; the message names ``path``.
    """
    with first_use:
        from ._store import kind_of

    def refuse(why: str) -> InvalidManifest:
        return InvalidManifest(f"cannot read manifest {path}: {why}")

    too_big = f"larger than {MAX_MANIFEST_BYTES} bytes (1 MiB): not a manifest"
    if "\x00" in path:
        raise refuse("the path contains NUL")
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise refuse(f"is {kind_of(st.st_mode)}, not a regular file")
        if st.st_size > MAX_MANIFEST_BYTES:
            raise refuse(too_big)
        # O_NONBLOCK: should a FIFO be swapped in after the stat, opening it
        # does not wait for a writer (fstat then refuses it).
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise refuse(f"is {kind_of(st.st_mode)}, not a regular file")
            chunks = []
            size = 0
            while size <= MAX_MANIFEST_BYTES:
                chunk = os.read(fd, MAX_MANIFEST_BYTES + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise refuse(why[:1].lower() + why[1:]) from None
    if size > MAX_MANIFEST_BYTES:
        raise refuse(too_big)
    return b"".join(chunks)


def install_from_manifest(ledger: Ledger, manifest: "Manifest | str | os.PathLike[str]",
                          pid: int | None = None, *, runtime_dir: str | None = None) -> Hold:
    """Install a runtime's top-level allocation from its manifest in one call
    (the seed's ``install_top_level`` inside ``from_manifest``).

    The allocation's socket is :func:`socket_path_for` of its name. The
    returned :class:`Hold` releases it on ``with`` exit, garbage collection
    or interpreter exit.

    Raises:
        InvalidManifest: see :func:`load_manifest`.
        ScopeConflict, DuplicateHolder: as :meth:`Ledger.register`.
    """
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    return ledger.hold(manifest.name, manifest.rules, pid,
                       socket=socket_path_for(manifest.name, runtime_dir))

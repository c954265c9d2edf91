"""What ``ledger demo`` plays (:func:`run_demo`): the tour README starts with, on real processes.

In a new temporary directory it lays out a small source tree and a ledger,
then plays a story with real child processes (``python -m scopeledger.cli.demo_story
builder|worker``) and the real command line (``python -m scopeledger``):

    runtime (this process)          write src/**, tests/**; read docs/**
    └── builder (a child process)   the same, reserved before it is spawned
        ├── parser-worker           finishes its work and releases
        ├── lexer-worker            is killed with SIGKILL
        └── tests-worker            exits without releasing, never reaped: a zombie

A newcomer asking the builder for src/lexer is refused (the owner chain is
shown); ``ledger reclaim`` frees the dead workers and says why; the newcomer
then gets in. Finally it prints ``ledger replay`` and ``ledger show --at`` a
moment in the middle, and says where the ledger lives.
"""

from __future__ import annotations

import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any, Callable

import click

from .errors import EXIT_OK

if TYPE_CHECKING:
    from scopeledger import Event

    from .params import Env


#: Seconds any one step of the demo may take before it gives up.
STEP_TIMEOUT = 30.0

#: Longest a demo worker or builder lives, whatever happens to the demo.
MAX_LIFETIME = 120.0

TREE = {
    "README.md": "# calc\nA tiny calculator, the demo's source tree.\n",
    "src/parser/__init__.py": "from .grammar import parse\n",
    "src/parser/grammar.py": "def parse(tokens):\n    return list(tokens)\n",
    "src/lexer/__init__.py": "from .tokens import tokenize\n",
    "src/lexer/tokens.py": "def tokenize(text):\n    return text.split()\n",
    "src/codegen/emit.py": "def emit(tree):\n    return repr(tree)\n",
    "tests/test_parser.py": "def test_parse():\n    assert True\n",
    "tests/test_lexer.py": "def test_tokenize():\n    assert True\n",
    "docs/index.md": "# calc docs\n",
    "tools/fix_lexer.py": (
        "# The newcomer's job: patch the lexer while holding src/lexer.\n"
        "import os\n"
        "path = os.path.join('src', 'lexer', 'fix.txt')\n"
        "with open(path, 'w') as f:\n"
        "    f.write('fixed\\n')\n"
        "print(f\"newcomer's command (pid {os.getpid()}) wrote {path} as holder \"\n"
        "      f\"'{os.environ['SCOPELEDGER_HOLDER']}', token {os.environ['SCOPELEDGER_TOKEN']}\")\n"
    ),
}

#: The workers the builder spawns: name, mode, rules (relative to the tree).
WORKERS = [
    ("parser-worker", "finish", ["write:src/parser"]),
    ("lexer-worker", "hang", ["write:src/lexer"]),
    ("tests-worker", "crash", ["write:tests", "read:src"]),
]



class DemoError(Exception):
    """The demo did not go as written (a child that did not answer within
    :data:`STEP_TIMEOUT` seconds, or answered otherwise): not a user's mistake,
    so the command line reports it as an internal error (exit 70)."""


# -- the child processes ------------------------------------------------------------


def _rules(specs: list[str], root: str) -> list[Any]:
    from scopeledger import parse_rule

    out = []
    for spec in specs:
        perm, _, path = spec.partition(":")
        out.append(parse_rule(path, perm, root))
    return out


def _reply(msg: str) -> None:
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def _stdin_line(timeout: float) -> str | None:
    """A line from stdin, or None on EOF / after ``timeout`` seconds."""
    r, _, _ = select.select([sys.stdin], [], [], timeout)
    if not r:
        return None
    line = sys.stdin.readline()
    return line.strip() if line else None


def worker_main(name: str, mode: str) -> int:
    """A worker: attach to the reserved allocation, report, then act out
    ``mode`` when told to (a line on stdin)."""
    from scopeledger import Ledger

    ledger = Ledger.open(os.environ["SCOPELEDGER_DIR"])
    alloc = ledger.attach(name)
    _reply(f"attached {os.getpid()}")
    deadline = time.monotonic() + MAX_LIFETIME
    cmd = _stdin_line(MAX_LIFETIME)
    if cmd is None:  # the builder is gone, or we waited too long
        return 3
    if mode == "finish":
        tree = os.environ["DEMO_TREE"]
        with open(os.path.join(tree, "src", "parser", "generated.py"), "w") as f:
            f.write("# written by parser-worker\n")
        ledger.release(name, token=alloc.token)
        _reply("released")
        return 0
    if mode == "crash":
        sys.stdout.flush()
        os._exit(1)  # no release: the allocation stays behind
    while time.monotonic() < deadline:  # "hang": wait to be killed
        time.sleep(0.5)
    return 3


def _until_zombie(pid: int) -> str:
    """Poll process ``pid``'s status (psutil's) until it is a zombie (it
    exited, and its parent does not wait for it) or ``STEP_TIMEOUT`` seconds
    passed; returns the status last seen."""
    import psutil

    end = time.monotonic() + STEP_TIMEOUT
    status = ""
    while time.monotonic() < end:
        status = psutil.Process(pid).status()
        if status == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.01)
    return status


def builder_main() -> int:
    """The builder: attach to its reserved allocation, then serve the demo's
    requests (one line each) on stdin."""
    from scopeledger import Ledger, LedgerError

    ledger = Ledger.open(os.environ["SCOPELEDGER_DIR"])
    tree = os.environ["DEMO_TREE"]
    alloc = ledger.attach("builder")
    _reply(f"ready {os.getpid()} {alloc.token}")
    workers: dict[str, subprocess.Popen[str]] = {}  # kept: never reaped behind our back
    try:
        while True:
            line = _stdin_line(MAX_LIFETIME)
            if line is None:
                return 3
            cmd, *args = line.split()
            if cmd == "spawn":
                name, mode, *specs = args
                try:
                    ledger.delegate("builder", name, _rules(specs, tree), reserved=True)
                except LedgerError as exc:
                    _reply(f"refused {exc}")
                    continue
                p = subprocess.Popen([sys.executable, "-m", "scopeledger.cli.demo_story", "worker", name, mode],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                workers[name] = p
                assert p.stdout is not None
                answer = p.stdout.readline().split()
                _reply(f"ok {answer[1]}" if answer[:1] == ["attached"] else f"failed {answer}")
            elif cmd == "finish":
                p = workers[args[0]]
                assert p.stdin is not None and p.stdout is not None
                p.stdin.write("go\n")
                p.stdin.flush()
                said = p.stdout.readline().strip()
                _reply(f"ok {said} {p.wait(STEP_TIMEOUT)}")
            elif cmd == "crash":
                p = workers[args[0]]
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
                _reply(f"ok {_until_zombie(p.pid)}")
            elif cmd == "reap":
                _reply(f"ok {workers[args[0]].wait(STEP_TIMEOUT)}")
            elif cmd == "exit":
                for p in workers.values():
                    if p.poll() is None:
                        p.kill()
                    p.wait()
                try:
                    ledger.release("builder", token=alloc.token)
                except LedgerError:
                    pass
                _reply("bye")
                return 0
            else:
                _reply(f"unknown {cmd}")
    finally:
        for p in workers.values():
            if p.poll() is None:
                p.kill()


# -- the demo itself ------------------------------------------------------------------


class _Builder:
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "scopeledger.cli.demo_story", "builder"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env, start_new_session=True)

    def read(self) -> list[str]:
        assert self.proc.stdout is not None
        r, _, _ = select.select([self.proc.stdout], [], [], STEP_TIMEOUT)
        if not r:
            raise DemoError("the builder did not answer in time")
        line = self.proc.stdout.readline()
        if not line:
            raise DemoError(f"the builder exited unexpectedly (code {self.proc.wait()})")
        return line.split()

    def ask(self, line: str) -> list[str]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.read()
        if answer[:1] != ["ok"] and answer[:1] != ["bye"]:
            raise DemoError(f"the builder answered {' '.join(answer)!r} to {line!r}")
        return answer

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        self.proc.wait()


class _Story:
    """Prints the demo's narration (nothing in --json mode)."""

    def __init__(self, env: "Env", tree: str) -> None:
        self.env = env
        self.tree = tree
        self.step_no = 0

    @property
    def quiet(self) -> bool:
        return self.env.json

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.tree) if path.startswith(self.tree + "/") else path

    def step(self, title: str) -> None:
        self.step_no += 1
        if not self.quiet:
            self.env.out.print()
            self.env.out.print(f"[bold]{self.step_no}. {title}[/bold]")

    def say(self, text: str, style: str = "") -> None:
        """Print ``text`` indented, control characters escaped (a path given
        with ``--dir`` may hold any)."""
        from .render import safe

        if not self.quiet:
            self.env.out.print("   " + safe(text), style=style or None, markup=False, soft_wrap=True)

    def command(self, argv: list[str]) -> None:
        from .render import safe

        if not self.quiet:
            shown = ["python3" if a == sys.executable else a for a in argv]
            self.env.out.print(safe("   $ " + " ".join(shlex.quote(a) for a in shown)),
                               style="bold cyan", markup=False, soft_wrap=True)

    def show_tree(self, state: Any, title: str, liveness: Any = None) -> None:
        from .render import Trimmed, state_tree

        if not self.quiet:
            self.env.out.print()
            self.env.out.print(Trimmed(state_tree(state, title, liveness, self.tree), indent=3))

    def output(self, text: str, style: str = "") -> None:
        for line in text.rstrip("\n").splitlines():
            self.say("  " + line, style)


def _lay_out(tree: str) -> None:
    for rel, content in TREE.items():
        path = os.path.join(tree, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(content)


def _wait_gone_or_zombie(pid: int) -> None:
    import psutil

    end = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.01)
    raise DemoError(f"pid {pid} did not die in time")


def _path_hint() -> tuple[str, ...]:
    """``export PATH=...`` when the ``ledger`` running now is not the one the
    shell would find (a venv that is not activated, as README's command
    leaves it), so that the suggested commands work as printed."""
    me = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(me) != "ledger" or not os.access(me, os.X_OK):
        return ()  # run as 'python -m scopeledger' or from tests: no hint
    found = shutil.which("ledger")
    if found is not None and os.path.realpath(found) == me:
        return ()
    bindir = os.path.dirname(os.path.abspath(sys.argv[0]))
    return (f"export PATH={shlex.quote(bindir)}:\"$PATH\"",)


def _refuse_a_ledger_inside_a_ledger(ledger_dir: str) -> None:
    """The demo's ledger ``ledger_dir`` (its parent is, or will be, a
    directory) may not be made inside another ledger.

    Raises:
        UnsafeLedgerPath: it would be (naming that ledger).
    """
    from scopeledger import check_ledger_path, non_directory_on_the_way

    if non_directory_on_the_way(ledger_dir) is None:  # (else dir_problem says what is wrong)
        check_ledger_path(ledger_dir)


def dir_problem(base: str) -> str | None:
    """Why the demo cannot be built in ``base`` (``--dir``, as
    :func:`scopeledger.resolve_path` has it), for a usage error;
    ``None`` when it can: a dangling symlink (which ``mkdir`` cannot make a
    directory of: it said ``file exists``), or a directory that is not
    empty."""
    if os.path.islink(base) and not os.path.exists(base):
        return (f"demo directory {base} is a dangling symlink (to {os.readlink(base)}): give a "
                "new or empty directory")
    if os.path.isdir(base) and os.listdir(base):
        return f"demo directory {base} is not empty: give a new or empty one"
    return None


def _first_missing(path: str) -> str | None:
    """The topmost directory of ``path`` that does not exist yet (what
    ``os.makedirs(path)`` would create first); ``None`` if it exists."""
    first = None
    p = path
    while not os.path.lexists(p):
        first = p
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return first


# -- the demo, start to end -------------------------------------------------------------


def run_demo(env: "Env", dir_: str | None, keep: bool, timeline: str | None = None) -> int:
    """``ledger demo``: lay out a tree and a ledger in ``dir_`` (default: a new
    temporary directory), play the story (:func:`_play`), and remove what it
    made unless ``keep``; with ``timeline``, draw it into that file. Returns
    the exit code, 0.

    Raises:
        click.UsageError: ``dir_`` is not empty, or is not a directory.
        UnsafeLedgerPath: ``dir_`` (or ``$TMPDIR``) lies inside a ledger.
        DemoError: a step did not go as written (see :class:`DemoError`).
        OSError: the directory cannot be made.
    """
    from scopeledger import resolve_path

    if dir_ is not None:
        base = resolve_path(dir_)  # a '..' after a symlink as the OS has it
        # Before anything is made: not a ledger inside another (--dir
        # L/snapshots, not empty either: this is what is wrong with it).
        _refuse_a_ledger_inside_a_ledger(os.path.join(os.path.realpath(base), "ledger"))
        problem = dir_problem(base)
        if problem is not None:
            raise click.UsageError(problem)  # (inside the command: click adds its context, the hint)
        new = _first_missing(base)
        os.makedirs(base, mode=0o700, exist_ok=True)
        # --clean removes what the demo made: the directories it created for
        # --dir, else (a directory the user made) only the tree and ledger in it.
        created = [new] if new is not None else [os.path.join(base, "tree"), os.path.join(base, "ledger")]
    else:
        base = tempfile.mkdtemp(prefix="scopeledger-demo-")
        created = [base]
    base = os.path.realpath(base)
    tree = os.path.join(base, "tree")
    ledger_dir = os.path.join(base, "ledger")
    played = False
    try:
        _refuse_a_ledger_inside_a_ledger(ledger_dir)  # ($TMPDIR inside a ledger: removed below)
        played = True
        summary = _play(env, base, tree, ledger_dir, keep, timeline)
    finally:
        if not keep or not played:
            for path in created:
                shutil.rmtree(path, ignore_errors=True)
    if env.json:
        summary["kept"] = keep
        env.emit_json(summary)
    return EXIT_OK


def _play(env: "Env", base: str, tree: str, ledger_dir: str, keep: bool,
          timeline: str | None = None) -> dict[str, Any]:
    from scopeledger import Ledger, parse_rule

    t0 = time.monotonic()
    _lay_out(tree)
    story = _Story(env, tree)
    out = env.out
    if not story.quiet:
        out.print("[bold]scopeledger demo[/bold]: real processes, a real file tree, one ledger")
        story.say(f"tree:   {tree}  (src/parser, src/lexer, src/codegen, tests, docs)")
        story.say(f"ledger: {ledger_dir}")

    child_env = dict(os.environ)
    child_env.update({"SCOPELEDGER_DIR": ledger_dir, "DEMO_TREE": tree})
    for var in ("SCOPELEDGER_HOLDER", "SCOPELEDGER_TOKEN"):
        child_env.pop(var, None)
    summary: dict[str, Any] = {"dir": base, "tree": tree, "ledger": ledger_dir}

    def cli(*args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        # As a shell would run it: the variables given to this command first.
        argv = [f"{k}={v}" for k, v in (extra_env or {}).items()] + ["ledger", *args]
        story.command(argv)
        e = dict(child_env)
        e.update(extra_env or {})
        e["NO_COLOR"] = "1"
        proc = subprocess.run([sys.executable, "-m", "scopeledger", *args], cwd=tree, env=e,
                              capture_output=True, text=True, timeout=STEP_TIMEOUT)
        story.output(proc.stdout)
        story.output(proc.stderr, "red" if proc.returncode else "")
        story.say(f"(exit code {proc.returncode})", "dim")
        return proc

    builder: _Builder | None = None
    with Ledger.open(ledger_dir) as ledger:
        try:
            # 1. the runtime
            story.step(f"The runtime (this process, pid {os.getpid()}) registers its top-level scope")
            rt_rules = [parse_rule("src", "write", tree), parse_rule("tests", "write", tree),
                        parse_rule("docs", "read", tree)]
            runtime = ledger.register("runtime", rt_rules)
            story.say(f"granted 'runtime', token {runtime.token}: " + ", ".join(
                f"{r.permission.value} {story.rel(r.path)}/**" for r in rt_rules))

            # 2. the builder, reserved before it exists
            story.step("It reserves a scope for 'builder' before spawning it; the builder attaches")
            ledger.delegate("runtime", "builder", rt_rules, reserved=True)
            story.say(f"reserved 'builder' (bound to the runtime's pid {os.getpid()} until it attaches)")
            builder = _Builder(child_env)
            ready = builder.read()
            if ready[:1] != ["ready"]:
                raise DemoError(f"the builder said {' '.join(ready)!r}")
            builder_pid, builder_token = int(ready[1]), ready[2]
            story.say(f"spawned the builder, pid {builder_pid}; it attached itself (token {builder_token})")

            # 3. the workers
            story.step("The builder delegates to three workers, each reserved before it is spawned")
            pids: dict[str, int] = {}
            for name, mode, specs in WORKERS:
                answer = builder.ask(f"spawn {name} {mode} {' '.join(specs)}")
                pids[name] = int(answer[1])
                rules = ", ".join(f"{s.split(':')[0]} {s.split(':')[1]}/**" for s in specs)
                story.say(f"'{name}' pid {pids[name]}: {rules}")
            story.say("delegation chain, three deep: runtime -> builder -> tests-worker")
            middle = ledger.seq
            summary["middle_seq"] = middle
            story.show_tree(ledger.state(), f"the tree now (seq {middle}; paths relative to the tree)")

            # 4. one worker finishes
            story.step("parser-worker does its work, releases its scope and exits normally")
            answer = builder.ask("finish parser-worker")
            story.say(f"parser-worker wrote src/parser/generated.py, said {answer[1]!r}, "
                      f"exit code {answer[2]}; its scope returns to 'builder'")

            # 5. a newcomer is refused
            story.step("A newcomer asks for src/lexer, which lexer-worker holds")
            story.say("an outsider asks at top level whether it could have it (this records nothing):")
            check = cli("check", "--top-level", "--write", "src/lexer", "--relative-to", ".")
            story.say("a newcomer started by the builder asks for it with 'ledger run -n' "
                      "($SCOPELEDGER_HOLDER names the parent to delegate from; a refusal is recorded):")
            newcomer = ("run", "-n", "--name", "newcomer", "--write", "src/lexer", "--",
                        sys.executable, "tools/fix_lexer.py")
            as_builder = {"SCOPELEDGER_HOLDER": "builder", "SCOPELEDGER_TOKEN": builder_token}
            refused = cli(*newcomer, extra_env=as_builder)
            if refused.returncode != 1 or check.returncode != 1:
                raise DemoError("the newcomer was not refused")
            story.say("('ledger run' has no --relative-to: it names paths in full; the replay below "
                      "shows this refusal relative to the tree)", "dim")
            summary["refusal"] = refused.stderr.strip()

            # 6. deaths
            story.step("lexer-worker is killed with SIGKILL; tests-worker crashes and is never reaped")
            os.kill(pids["lexer-worker"], signal.SIGKILL)
            builder.ask("reap lexer-worker")
            _wait_gone_or_zombie(pids["lexer-worker"])
            story.say(f"kill -KILL {pids['lexer-worker']}: lexer-worker is gone (the builder reaped it)")
            status = builder.ask("crash tests-worker")[1]
            story.say(f"tests-worker (pid {pids['tests-worker']}) exited without releasing; the builder "
                      f"keeps its Popen unwaited, so it is a {status}")
            state = ledger.state()
            story.show_tree(state, f"the tree now (seq {state.seq}): the dead still hold",
                            ledger.liveness(list(state.holders.values())))

            # 7. reclaim
            story.step("'ledger reclaim' frees the dead holders and says why")
            rec = cli("reclaim")
            if rec.returncode != 0:
                raise DemoError("reclaim failed")
            summary["reclaimed"] = [line for line in rec.stdout.splitlines() if line.startswith("reclaimed")]

            # 8. the newcomer again
            story.step("The newcomer asks again: granted; its command runs, then it releases")
            again = cli(*newcomer, extra_env=as_builder)
            if again.returncode != 0:
                raise DemoError("the newcomer was refused again")

            # 9. wind down
            story.step("The builder and the runtime finish and release")
            builder.ask("exit")
            builder.proc.wait(STEP_TIMEOUT)
            ledger.release("runtime", token=runtime.token)
            story.say("released 'builder' and 'runtime'; the ledger is empty again")
        except BaseException:
            if builder is not None:
                builder.kill()
            raise
        last = ledger.seq
        summary["last_seq"] = last
        summary["seconds"] = round(time.monotonic() - t0, 3)

        # what happened
        events = list(ledger.events())
        summary["events"] = [e.data for e in events]
        if timeline is not None:
            from .pictures import draw_timeline

            drawn = draw_timeline(ledger, timeline, root=tree,
                                  title="ledger demo: who held what, and how it ended")
            summary["timeline"] = drawn["output"]
        if not story.quiet:
            _tell_what_happened(story, cli, events, summary, keep, t0)
    return summary


def _tell_what_happened(story: _Story, cli: Callable[..., subprocess.CompletedProcess[str]],
                        events: list[Event], summary: dict[str, Any], keep: bool, t0: float) -> None:
    """The demo's epilogue: the replay, the tree in the middle, the timeline
    drawn, and (``keep``) how to explore the ledger left behind."""
    from rich.text import Text

    from .render import REASONS, safe

    out = story.env.out
    base, tree, ledger_dir = summary["dir"], summary["tree"], summary["ledger"]
    middle, last = summary["middle_seq"], summary["last_seq"]
    timeline = summary.get("timeline")
    out.print()
    out.print("[bold]What happened[/bold], as the ledger recorded it:")
    if cli("replay", "--relative-to", ".").returncode != 0:
        raise DemoError("ledger replay failed")
    out.print()
    out.print(f"[bold]The tree in the middle[/bold], before anything went wrong (seq {middle}):")
    if cli("show", "--at", str(middle), "--relative-to", ".").returncode != 0:
        raise DemoError("ledger show failed")
    reasons = ", ".join(sorted({REASONS[e.data['reason']] for e in events if e.type == "reclaimed"}))
    if timeline is not None:
        out.print()
        out.print(safe(f"The timeline of it all ('ledger timeline -o FILE'): {timeline}"),
                  markup=False, soft_wrap=True)
    out.print()
    out.print(f"Done in {time.monotonic() - t0:.1f}s ({last} events; reclaimed because: {reasons}).")
    if not keep:
        out.print(safe(f"The ledger was in {ledger_dir}; it is removed now (--clean). Run "
                       "'ledger demo' without --clean to keep one to explore."), markup=False)
        return
    out.print(Text.assemble("The ledger lives in ", (safe(ledger_dir), "bold"), "; explore it:"))
    for cmd in (*_path_hint(),
                f"export SCOPELEDGER_DIR={shlex.quote(ledger_dir)}",
                f"cd {shlex.quote(tree)}",
                "ledger replay --holder builder --relative-to .",
                "ledger replay --type refused --type reclaimed --relative-to .",
                f"ledger who src/lexer --at {middle} --relative-to .",
                "ledger history lexer-worker --relative-to .",
                f"ledger diff {middle} {last}",
                "ledger show --relative-to .",
                "ledger replay --json | head -3",
                "ledger verify"):
        out.print(safe(f"  {cmd}"), markup=False, style="cyan", soft_wrap=True)
    out.print(safe(f"Remove it when done: rm -rf {shlex.quote(base)}"), markup=False, soft_wrap=True)


def _main(argv: list[str]) -> int:
    if argv[:1] == ["builder"]:
        return builder_main()
    if argv[:1] == ["worker"] and len(argv) == 3:
        return worker_main(argv[1], argv[2])
    sys.stderr.write("usage: python -m scopeledger.cli.demo_story builder | worker NAME MODE\n")
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

"""Every process that runs a service's code runs in a sandbox: bubblewrap (`bwrap`).

Test, setup and command stages, venv and build-environment installs (pip runs packages'
build code), PEP 517 builds and scanners run code the worker did not write. The allow-listed
environment (`child_env`) keeps the worker's secrets out of their environment; the sandbox
keeps them out of everything else:

- **its own pid namespace** (`--unshare-pid`, a fresh `/proc`): the worker's processes and
  their `/proc/<pid>/environ` (SLIPWAY_CODEC_KEY, AWS_*) are not there; `--die-with-parent`
  ends it with the worker;
- **another uid**: as root, bwrap (privileged, no user namespace) builds the mount namespace
  and the command is exec'd through `setpriv` as uid/gid 65534 with no capabilities, no
  supplementary groups and no_new_privs (setuid binaries do not raise it). A worker that is not
  root uses `--unshare-user` instead (the inside uid is the worker's own uid outside, so the
  read-only mounts, not file permissions, are what protect its files);
- **only what it needs, built from binds on an empty root** (never `--ro-bind / /`):
  `/usr`, `/bin`, `/lib*`, `/etc` and `/opt` read-only; a private `/tmp`, `/var/tmp` and
  `HOME` (tmpfs); the worker's base interpreter (`sys.base_prefix`, which venvs link to)
  read-only; the worker's own venv read-only only for the worker's tools (pip driving an
  install, scanners); the venv or build environment in use read-only; and a **per-run writable
  copy** of the service directory bound at the checkout's own path, so paths in reports and
  messages are unchanged while the shared checkout (reused by every run of that sha) is never
  writable. Parent directories of every bind are created 0755 in the sandbox's root, so a
  checkout or venv below a private directory (root's 0700 home, a `mktemp -d`) is reachable
  while the rest of that directory stays hidden;
- the network namespace is shared: backing services on 127.0.0.1 stay reachable.

The worker's policy (`sandbox: required | off`, `plumbing/worker_policy.py`) decides what
happens where bwrap cannot run (not installed, no namespaces): `required` (the default)
refuses every untrusted step with a sentence saying why; `off` runs them unsandboxed, with
the allow-listed environment only. The worker says which at start (`configure`).

Arguments reach bwrap through a file descriptor (`--args`), so the environment given to the
command (which may carry an index token) is not in bwrap's world-readable command line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from contracts.errors import ErrorType, verdict

__all__ = [
    "SANDBOX_GID",
    "SANDBOX_UID",
    "Bind",
    "Mounts",
    "Prepared",
    "RunCopy",
    "Sandbox",
    "SandboxMode",
    "configure",
    "current",
    "install_paths",
    "paths_named_in",
    "sync_back",
    "use",
]

SandboxMode = Literal["required", "off"]
SANDBOX_UID = 65534  # nobody
SANDBOX_GID = 65534  # nogroup
_SYSTEM_DIRS = ("/usr", "/etc", "/opt")
_SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_PROBE_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Bind:
    """`source` on the worker, seen at `target` (default: `source`) in the sandbox.

    A source reached through a symlink is bound at its real path, with the symlink recreated
    in the sandbox (shebangs and `bin/python` links hold real paths)."""

    source: Path
    target: Path | None = None
    writable: bool = False


@dataclass(frozen=True)
class Mounts:
    """What one command sees besides the system: `binds` in order, `private` paths as empty
    tmpfs (a HOME, a download cache: written, then gone), and with `worker_tools` the worker's
    own venv read-only (for pip driving an install, and scanners installed in it). A program
    named by path must be visible (FileNotFoundError otherwise), unless `program_from_worker`."""

    binds: tuple[Bind, ...] = ()
    private: tuple[Path, ...] = ()
    worker_tools: bool = False
    # The program is the worker's (a scanner's binary): bound read-only wherever it is. Never
    # for a command a definition names, which could name any executable file of the worker's.
    program_from_worker: bool = False


@dataclass(frozen=True)
class Prepared:
    """What to hand `subprocess.Popen`: the argv, its environment and the fds it inherits."""

    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()


@dataclass(frozen=True)
class RunCopy:
    """A per-run writable copy of a service directory (`original`), at `copy` on the worker
    and at `original`'s path in the sandbox. `host(p)` is where the worker finds `p`."""

    original: Path
    copy: Path
    binds: tuple[Bind, ...] = field(default=())

    def host(self, path: Path) -> Path:
        try:
            return self.copy / Path(path).relative_to(self.original)
        except ValueError:
            return Path(path)


class Sandbox:
    """The sandbox of one worker; see the module docstring. `check()` says whether untrusted
    steps may run, `prepare()` wraps one command."""

    def __init__(
        self,
        mode: SandboxMode = "required",
        *,
        bwrap: str | None = None,
        setpriv: str | None = None,
        uid: int = SANDBOX_UID,
        gid: int = SANDBOX_GID,
    ) -> None:
        self.mode: SandboxMode = mode
        self.uid, self.gid = uid, gid
        self.privileged = os.geteuid() == 0
        self._bwrap = bwrap or shutil.which("bwrap")
        self._setpriv = setpriv or shutil.which("setpriv")
        self.unavailable: str | None = None
        if mode == "required":
            self.unavailable = self._probe()

    # --- what the worker says -------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Commands are wrapped in bwrap."""
        return self.mode == "required" and self.unavailable is None

    def describe(self) -> str:
        """One sentence for the worker's start line."""
        if self.mode == "off":
            return (
                "sandbox off (the policy's `sandbox: off`): tests, builds, installs and "
                "scanners run unsandboxed as the worker's own user, with the allow-listed "
                "environment only"
            )
        if self.unavailable is not None:
            return (
                f"sandbox unavailable ({self.unavailable}): untrusted steps (tests, command "
                "stages, builds, installs, scanners) will be refused; install bubblewrap, or "
                "set `sandbox: off` in the worker's policy to run them unsandboxed"
            )
        who = (
            f"uid {self.uid} via setpriv"
            if self.privileged
            else "a user namespace of the worker's uid"
        )
        return f"sandbox: bwrap ({who}, own pid/mount namespaces, read-only system and caches)"

    def check(self) -> None:
        """Raise the refusal when untrusted code may not run here."""
        if self.mode == "required" and self.unavailable is not None:
            raise verdict(
                ErrorType.CONFIGURATION,
                f"This worker runs no untrusted code without its sandbox, which is unavailable "
                f"({self.unavailable}). Install bubblewrap (Debian: bubblewrap) on the worker, "
                "or set `sandbox: off` in the worker's policy to run it unsandboxed.",
            )

    # --- wrapping a command ---------------------------------------------------------------

    @contextlib.contextmanager
    def prepare(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        mounts: Mounts,
    ) -> Iterator[Prepared]:
        """The argv/env that run `argv` in `cwd` with `env` inside the sandbox (unchanged when
        the policy turned it off). FileNotFoundError/PermissionError when the program is not
        there or not executable, as `subprocess` would raise."""
        self.check()
        if not self.active:
            yield Prepared(list(argv), dict(env))
            return
        options, command = self._args(list(argv), Path(cwd), dict(env), mounts)
        with tempfile.TemporaryFile() as handle:
            handle.write(b"".join(arg.encode() + b"\0" for arg in options))
            handle.flush()
            handle.seek(0)
            fd = handle.fileno()
            assert self._bwrap is not None  # active
            # bwrap reads options from --args, the command only from its own command line.
            yield Prepared([self._bwrap, "--args", str(fd), "--", *command], {}, (fd,))

    def _args(
        self, argv: list[str], cwd: Path, env: dict[str, str], mounts: Mounts
    ) -> tuple[list[str], list[str]]:
        """bwrap's options, and the command it runs."""
        cwd = Path(os.path.abspath(cwd))
        layout = _Layout()
        args = [
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "sandbox",
        ]
        if not self.privileged:
            args += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
        args += ["--proc", "/proc", "--dev", "/dev"]
        # POSIX semaphores (multiprocessing's locks: detect-secrets' pool) live in /dev/shm,
        # which bwrap's /dev leaves unwritable to the sandbox's uid.
        args += layout.tmpfs(Path("/dev/shm"), "1777")
        for name in _SYSTEM_DIRS:
            if Path(name).is_dir():
                args += layout.bind(Path(name), Path(name), writable=False)
        for name in _SYSTEM_LINKS:
            path = Path(name)
            if path.is_symlink():
                args += layout.symlink(os.readlink(path), path)
            elif path.is_dir():
                args += layout.bind(path, path, writable=False)
        args += layout.tmpfs(Path("/tmp"), "1777")
        args += layout.tmpfs(Path("/var/tmp"), "1777")
        interpreters = [Path(sys.base_prefix)]
        if mounts.worker_tools:
            interpreters.append(Path(sys.prefix))
        for prefix in interpreters:
            args += layout.bind_real(prefix, prefix, writable=False)
        for bind in mounts.binds:
            if not os.path.lexists(bind.source):
                continue
            args += layout.bind_real(bind.source, bind.target or bind.source, bind.writable)
        home = env.get("HOME")
        private = list(mounts.private)
        if home and os.path.isabs(home):
            if self.privileged and os.path.isdir(home) and not os.listdir(home):
                # The caller's throwaway HOME, given to the sandbox's uid: tools refuse a
                # home another user may write (pip: "writable by another user").
                self.give(Path(home))
                args += layout.bind_real(Path(home), Path(home), writable=True)
            else:
                private.append(Path(home))
        for path in private:
            args += layout.tmpfs(Path(path), "0777")
        env = {**env, "TMPDIR": "/tmp"}
        env["PATH"] = os.pathsep.join(
            entry
            for entry in env.get("PATH", "").split(os.pathsep)
            if entry and layout.visible(Path(entry))
        )
        program = _resolve_program(argv[0], env["PATH"])
        if not layout.visible(program):
            if not mounts.program_from_worker:
                raise FileNotFoundError(
                    errno.ENOENT,
                    "not visible in the sandbox (only the venv's and the system's programs are)",
                    argv[0],
                )
            args += layout.bind_real(program, program, writable=False)
        if not layout.visible(cwd):
            raise FileNotFoundError(errno.ENOENT, f"{cwd} is not visible in the sandbox", str(cwd))
        args += ["--chdir", str(cwd), "--clearenv"]
        for name, value in env.items():
            args += ["--setenv", name, value]
        command: list[str] = []
        if self.privileged:
            assert self._setpriv is not None
            command = [
                self._setpriv,
                f"--reuid={self.uid}",
                f"--regid={self.gid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
            ]
        return args, [*command, *argv]

    # --- the files it writes --------------------------------------------------------------

    def give(self, path: Path) -> None:
        """Make `path` (a tree the sandbox is to write) the sandbox uid's, as root."""
        if self.active and self.privileged:
            _chown_tree(path, self.uid, self.gid)

    def take_back(self, path: Path) -> None:
        """Make `path` (a tree the sandbox wrote) the worker's again, so no process of the
        sandbox uid can change it afterwards."""
        if self.active and self.privileged:
            _chown_tree(path, os.getuid(), os.getgid())

    @contextlib.contextmanager
    def writable_copy(self, directory: Path) -> Iterator[RunCopy]:
        """A fresh writable copy of `directory` for one run, bound at its path (and its `.git`
        read-only, not copied), removed afterwards. Without the sandbox: `directory` itself."""
        original = Path(directory)
        if not self.active:
            yield RunCopy(original, original)
            return
        scratch = Path(tempfile.mkdtemp(prefix="slipway-run-"))
        try:
            copy = scratch / "tree"
            shutil.copytree(
                original,
                copy,
                symlinks=True,
                ignore=lambda where, _names: [".git"] if Path(where) == original else [],
            )
            binds = [Bind(copy, original, writable=True)]
            git = original / ".git"
            if git.is_dir() and not git.is_symlink():
                (copy / ".git").mkdir()
                binds.append(Bind(git, git))
            self.give(copy)
            yield RunCopy(original, copy, tuple(binds))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    # --- is it there ----------------------------------------------------------------------

    def _probe(self) -> str | None:
        """Why bwrap cannot run here, or None: it runs `/bin/true` in a sandbox once."""
        if self._bwrap is None:
            return "bwrap is not installed"
        if self.privileged and self._setpriv is None:
            return "setpriv (util-linux) is not installed"
        try:
            with self.prepare(
                ["true"], cwd=Path("/"), env={"PATH": "/usr/bin:/bin"}, mounts=Mounts()
            ) as prepared:
                done = subprocess.run(
                    prepared.argv,
                    env=prepared.env,
                    pass_fds=prepared.pass_fds,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=_PROBE_TIMEOUT_S,
                    check=False,
                )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"bwrap could not start: {exc}"
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip().splitlines()
            return f"bwrap failed: {said[-1] if said else f'exit {done.returncode}'}"
        return None


class _Layout:
    """bwrap arguments for an empty root, creating each bind's parents 0755 (bwrap would
    make them 0700, which the sandbox uid could not cross) and tracking what is visible."""

    def __init__(self) -> None:
        self._made: set[Path] = set()
        self._mounted: list[Path] = []

    def visible(self, path: Path) -> bool:
        """Is `path` the worker's own file or directory in the sandbox (bound, or below)?"""
        path = Path(os.path.normpath(path))
        if path == Path("/"):
            return True
        return any(path == m or m in path.parents for m in self._mounted)

    def _parents(self, target: Path) -> list[str]:
        args: list[str] = []
        for parent in reversed(target.parents):
            if parent == Path("/") or parent in self._made or self.visible(parent):
                continue
            args += ["--perms", "0755", "--dir", str(parent)]
            self._made.add(parent)
        return args

    def bind(self, source: Path, target: Path, writable: bool) -> list[str]:
        target = Path(os.path.normpath(target))
        args = self._parents(target)
        args += ["--bind" if writable else "--ro-bind", str(source), str(target)]
        self._mounted.append(target)
        return args

    def bind_real(self, source: Path, target: Path, writable: bool) -> list[str]:
        """Bind `source` at `target`'s real path; recreate `target` as a symlink to it when
        the two differ (a venv's `<key>` link, a worker venv reached through a symlink)."""
        source, target = Path(os.path.abspath(source)), Path(os.path.abspath(target))
        real_source = Path(os.path.realpath(source))
        real_target = Path(os.path.realpath(target)) if source == target else target
        args = self.bind(real_source, real_target, writable)
        shown = Path(os.path.normpath(target))
        if shown != real_target and not self.visible(shown):
            args += self.symlink(str(real_target), shown)
        return args

    def symlink(self, points_to: str, path: Path) -> list[str]:
        args = self._parents(path)
        self._mounted.append(path)
        return [*args, "--symlink", points_to, str(path)]

    def tmpfs(self, path: Path, perms: str) -> list[str]:
        path = Path(os.path.normpath(path))
        args = self._parents(path)
        self._made.add(path)  # empty: what is below it is made, not the worker's
        return [*args, "--perms", perms, "--tmpfs", str(path)]


def _resolve_program(name: str, path: str) -> Path:
    """The program `name` names, found as the sandbox would find it (on `path`)."""
    if "/" in name:
        found: str | None = name
    else:
        found = shutil.which(name, path=path)
    if found is None or not os.path.exists(found):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
    if not os.access(found, os.X_OK) or os.path.isdir(found):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
    return Path(found)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            with contextlib.suppress(FileNotFoundError):
                os.lchown(os.path.join(dirpath, name), uid, gid)


def paths_named_in(env: Mapping[str, str]) -> list[Path]:
    """Existing absolute paths (or file:// URLs) named by `env`'s values: the local index,
    find-links, pip.conf and CA bundle an install needs to see. Only for the worker's own
    settings, never a stage's `env:` (which would name the worker's files to read)."""
    found: list[Path] = []
    for value in env.values():
        for word in value.replace(",", " ").split():
            candidate = word.removeprefix("file://")
            if os.path.isabs(candidate) and os.path.exists(candidate):
                found.append(Path(candidate))
    return found


def install_paths() -> list[Path]:
    """What the worker's own install settings name (PIP_*, NPM_CONFIG_*, CA bundles, its
    user pip.conf): read-only in the sandbox of every step that installs packages."""
    from activities.providers.execution.child_env import child_env

    settings = child_env(home=Path("/nonexistent"), install=True)
    return paths_named_in(
        {k: v for k, v in settings.items() if k not in ("PATH", "HOME", "TMPDIR")}
    )


def sync_back(copy: Path, original: Path) -> list[str]:
    """Bring what a command stage wrote in its copy into the checkout (the build that follows
    packs it): new and changed files and symlinks (as links, never followed), never through a
    symlink of the checkout, never with setuid/setgid bits. Deletions are not carried over.
    Returns the paths skipped, with why."""
    skipped: list[str] = []
    for dirpath, dirnames, filenames in os.walk(copy):
        here = Path(dirpath)
        relative = here.relative_to(copy)
        if relative == Path() and ".git" in dirnames:
            dirnames.remove(".git")
        destination = original / relative
        if destination.is_symlink() or not destination.is_dir():
            skipped.append(f"{relative}: not a directory in the checkout")
            dirnames.clear()
            continue
        for name in list(dirnames):
            source, target = here / name, destination / name
            if source.is_symlink():
                dirnames.remove(name)
                _replace_link(source, target, skipped, relative / name)
            elif not os.path.lexists(target):
                target.mkdir(mode=0o755)
        for name in filenames:
            source, target = here / name, destination / name
            if source.is_symlink():
                _replace_link(source, target, skipped, relative / name)
                continue
            info = source.lstat()
            if not stat.S_ISREG(info.st_mode):
                continue  # sockets, fifos: not a build's output
            if target.is_dir() and not target.is_symlink():
                skipped.append(f"{relative / name}: a directory in the checkout")
                continue
            with contextlib.suppress(FileNotFoundError):
                known = target.lstat()
                if (
                    stat.S_ISREG(known.st_mode)
                    and known.st_size == info.st_size
                    and known.st_mtime_ns == info.st_mtime_ns
                ):
                    continue
            staged = destination / f".{name}.slipway-{os.getpid()}-{threading.get_ident()}"
            shutil.copyfile(source, staged, follow_symlinks=False)
            os.chmod(staged, stat.S_IMODE(info.st_mode) & 0o777)
            os.utime(staged, ns=(info.st_atime_ns, info.st_mtime_ns))
            os.replace(staged, target)
    return skipped


def _replace_link(source: Path, target: Path, skipped: list[str], shown: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        skipped.append(f"{shown}: a directory in the checkout")
        return
    points_to = os.readlink(source)
    if target.is_symlink() and os.readlink(target) == points_to:
        return
    staged = target.with_name(f".{target.name}.slipway-{os.getpid()}-{threading.get_ident()}")
    os.symlink(points_to, staged)
    os.replace(staged, target)


_lock = threading.Lock()
_current: Sandbox | None = None


def configure(mode: SandboxMode) -> Sandbox:
    """Set the worker's sandbox from its policy (at worker start); returns it."""
    global _current
    sandbox = Sandbox(mode)
    with _lock:
        _current = sandbox
    return sandbox


def current() -> Sandbox:
    """The worker's sandbox: the configured one, else `required`, probed at first use."""
    global _current
    with _lock:
        if _current is None:
            _current = Sandbox("required")
        return _current


def use(sandbox: Sandbox | None) -> Sandbox | None:
    """Replace the worker's sandbox (tests); returns the previous one."""
    global _current
    with _lock:
        previous, _current = _current, sandbox
    return previous

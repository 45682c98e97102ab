"""Where an editor under test lives: on the host, or in one of the cached Debian
chroots that tests/hosts/setup.sh builds (see chroot.sh for which holds what).

A `Place` says which, knows the installed version of a package there (read from
its dpkg database, without entering it) and turns a command line into one that
runs there. The worker always runs from the host's Python (with torch):
`python_prefixes()` names the folders to bind-mount for it.
"""
from __future__ import annotations

import os
import pathlib
import shlex
import subprocess
import sys
from dataclasses import dataclass

DEFAULT_ROOTS = "/var/cache/fbcnn-hosts"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SUITES = ("trixie", "sid", "experimental")


def roots() -> pathlib.Path:
    """Where the chroots are (FBCNN_CHROOTS, as in chroot.sh)."""
    return pathlib.Path(os.environ.get("FBCNN_CHROOTS", DEFAULT_ROOTS))


def upstream(version: str) -> str:
    """A Debian version without epoch, revision or repack suffix:
    1:5.3.4.1+dfsg-1+b1 -> 5.3.4.1, 3.0.4-3 -> 3.0.4."""
    return version.split(":", 1)[-1].rsplit("-", 1)[0].split("+", 1)[0].split("~", 1)[0]


def series_of(version: str) -> tuple:
    """5.3.4.1 -> (5, 3)."""
    return tuple(int(part) for part in version.split(".")[:2])


def dpkg_version(package: str, root: pathlib.Path | None = None) -> str | None:
    """The installed Debian version of a package, on the host or in a chroot."""
    args = ["dpkg-query", "-W", "-f=${Status}\t${Version}", package]
    if root is not None:
        args.insert(1, f"--admindir={root}/var/lib/dpkg")
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    status, _, version = out.partition("\t")
    return version if status == "install ok installed" and version else None


@dataclass(frozen=True)
class Place:
    """The host itself (suite None) or the chroot of one Debian suite."""

    suite: str | None = None

    @property
    def root(self) -> pathlib.Path | None:
        return None if self.suite is None else roots() / self.suite

    @property
    def ready(self) -> bool:
        """The host always is; a chroot once setup.sh has finished it."""
        return self.root is None or (self.root / ".fbcnn-ready").is_file()

    def version(self, package: str) -> str | None:
        """The upstream version of an installed package here (None when absent)."""
        if not self.ready:
            return None
        found = dpkg_version(package, self.root)
        return upstream(found) if found else None

    def __str__(self):
        return "the host" if self.suite is None else f"the {self.suite} chroot {self.root}"

    def command(self, argv: list, env: dict, binds=()) -> tuple:
        """(argv, env) for Popen that run `argv` here with exactly `env`.

        `binds`: host folders that must be visible at the same path inside a
        chroot (the repo and the worker's Python are always added).
        """
        if self.root is None:
            return argv, env
        paths = [*map(str, binds), str(pathlib.Path(__file__).resolve().parents[2]),
                 *python_prefixes()]
        return chroot_command(self.root, paths, env, argv), {"PATH": SYSTEM_PATH}


HOST = Place()
PLACES = (HOST,) + tuple(Place(s) for s in SUITES)


def python_prefixes() -> list[str]:
    """Folders the worker's Python needs to run: its venv and the base install."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    cfg = pathlib.Path(sys.prefix) / "pyvenv.cfg"
    if cfg.is_file():
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                paths.add(str(pathlib.Path(value.strip()).parent))
    real = pathlib.Path(sys.executable).resolve().parent.parent
    paths.add(str(real))
    # Keep only the outermost folders; nested binds are redundant.
    out = []
    for p in sorted(paths, key=len):
        if p and not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


def chroot_command(root: pathlib.Path, paths, env: dict, cmd: list[str]) -> list[str]:
    """unshare + chroot command line: a private mount namespace, so that nothing
    stays mounted after the run and parallel runs don't clash.

    `paths` (host folders) appear at the same path inside; the chroot's /tmp is a
    fresh tmpfs for each run, so their mount points don't pile up in the cache.
    /tmp/.X11-unix, when among them, comes back over it so that the host's Xvfb
    stays reachable. The program gets exactly `env`; it replaces the calling
    process (exec all the way down), so its pid and process group are those of
    the command started.
    """
    binds = []
    for p in dict.fromkeys(os.path.realpath(p) for p in paths):
        if os.path.isdir(p):
            binds.append(p)
    script = ["set -e", 'root="$1"; shift',
              'mount -t proc proc "$root/proc"',
              'mount --rbind /sys "$root/sys"',
              'mount --rbind /dev "$root/dev"',
              'mkdir -p "$root/tmp" && mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"']
    for p in binds:
        q = shlex.quote(p)
        script.append(f'mkdir -p "$root"{q} && mount --bind {q} "$root"{q}')
    script.append('exec chroot "$root" /usr/bin/env -i "$@"')
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", "\n".join(script),
            "sh", str(root)]
    argv += [f"{k}={v}" for k, v in env.items()] + cmd
    if os.geteuid() != 0:
        argv = ["sudo"] + argv
    return argv


@dataclass(frozen=True)
class Editor:
    """One build of an editor to test: which program, which series, where.

    `version` is the installed upstream version (None when it is not set up),
    and `id` the test id, e.g. "gimp-3.2.6", "krita-6.0.4" (three components),
    or "krita-6.0-missing" when it should be here but isn't.
    """

    program: str
    series: str
    place: Place
    version: str | None

    @property
    def id(self) -> str:
        if self.version is None:
            return f"{self.program}-{self.series}-missing"
        return f"{self.program}-{'.'.join(self.version.split('.')[:3])}"

    def why_missing(self) -> str | None:
        if self.version is not None:
            return None
        return (f"{self.program.capitalize()} {self.series} is not set up in {self.place} "
                "(tests/hosts/setup.sh installs it; tests/run.sh runs that first)")


def editors(package: str, expected: dict, oldest: tuple) -> list:
    """Every build of `package` to test here, one per series, oldest first.

    `expected` maps each series that this kind of host should have to the place
    setup.sh puts it ({"3.0": HOST or Place("trixie"), ...}); installed builds of
    other series from `oldest` on count too. An expected series that is absent stays in the list
    with version None, so that its tests skip loudly instead of vanishing.
    """
    found = {}
    for place in PLACES:
        version = place.version(package)
        if version is None:
            continue
        if series_of(version) < oldest:
            continue
        series = ".".join(map(str, series_of(version)))
        found.setdefault(series, Editor(package, series, place, version))
    for series, place in expected.items():
        found.setdefault(series, Editor(package, series, place, None))
    return sorted(found.values(), key=lambda e: series_of(e.series))


def debian_major() -> int:
    """The host's Debian release (12, 13, ...), 0 when it can't be told."""
    try:
        text = pathlib.Path("/etc/debian_version").read_text().strip()
        return int(text.split(".")[0])
    except (OSError, ValueError):
        return 0

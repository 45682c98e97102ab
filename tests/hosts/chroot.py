"""Run programs in the shared Debian 13 chroot that tests/hosts/chroot.sh builds.

GIMP 3 (tests/hosts/gimp.py) and Krita 5.2 (tests/hosts/krita.py) live in the same
cached chroot on Debian 12 hosts; each has its own marker file there, written by
its setup script once its packages are in. The worker still runs from the host's
Python (with torch): `python_prefixes()` names the folders to bind-mount for it.
"""
from __future__ import annotations

import os
import pathlib
import shlex
import subprocess
import sys

DEFAULT_ROOT = "/var/cache/fbcnn-hosts/trixie"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def root() -> pathlib.Path:
    """Where the chroot is (FBCNN_CHROOT, as in chroot.sh)."""
    return pathlib.Path(os.environ.get("FBCNN_CHROOT", DEFAULT_ROOT))


def ready(name: str) -> bool:
    """Whether NAME's setup script finished installing its packages in the chroot."""
    return (root() / f".fbcnn-{name}-ready").is_file()


def dpkg_version(package: str, chroot: pathlib.Path | None = None) -> str | None:
    """The installed Debian version of a package, on the host or in a chroot (no
    need to enter it: dpkg-query reads its database directly)."""
    args = ["dpkg-query", "-W", "-f=${Status}\t${Version}", package]
    if chroot is not None:
        args.insert(1, f"--admindir={chroot}/var/lib/dpkg")
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    status, _, version = out.partition("\t")
    return version if status == "install ok installed" and version else None


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
    The program gets exactly `env`; it replaces the calling process (exec all the
    way down), so its pid and process group are those of the command started.
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

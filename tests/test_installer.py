"""Unit tests of the installer (installer.py, the package install/): path discovery on three OSes, torch choice, kritarc
editing, manifest-based uninstall, dry-run and re-runs.

Fake HOME/APPDATA/LOCALAPPDATA trees live under tmp_path; sys.platform is patched
where an OS matters. Nothing here creates a venv or runs pip (the end-to-end test
does that with the real installer)."""
import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import install.discovery  # noqa: E402
import install.doctor  # noqa: E402
import install.gimp_python  # noqa: E402
import install.kritarc  # noqa: E402
import install.main  # noqa: E402
import install.manifest  # noqa: E402
import install.paths  # noqa: E402
import install.placing  # noqa: E402
import install.plan  # noqa: E402
import install.torch_choice  # noqa: E402
import install.worker_env  # noqa: E402


@pytest.fixture
def fake_home(tmp_path, monkeypatch):
    """An empty HOME with no XDG/Windows variables leaking in from the real one."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "APPDATA", "LOCALAPPDATA",
                "USERPROFILE", "GIMP3_DIRECTORY", "FBCNN_FRONTEND_CONFIG", "FBCNN_MODEL_DIR",
                "FBCNN_MODEL_URL_BASE"):
        monkeypatch.delenv(var, raising=False)
    return h


def snapshot(root: Path) -> dict:
    """path -> file bytes (None for folders): a whole tree, for before/after diffs."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = None if p.is_dir() and not p.is_symlink() else (
            "link:" + os.readlink(p) if p.is_symlink() else p.read_bytes())
    return out


def quiet_flatpak(app):
    return False


# ------------------------------------------------------------------ path discovery

def test_linux_paths_follow_xdg_and_defaults(fake_home, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    assert install.paths.data_dir() == fake_home / ".local/share/fbcnn"
    assert install.paths.default_venv() == fake_home / ".local/share/fbcnn/venv"
    assert install.paths.frontend_config_path() == fake_home / ".config/fbcnn/frontend.json"
    assert install.discovery.native_kritarc() == fake_home / ".config/kritarc"
    assert install.paths.venv_python(Path("/v")) == Path("/v/bin/python")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(fake_home / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(fake_home / "dat"))
    assert install.paths.frontend_config_path() == fake_home / "cfg/fbcnn/frontend.json"
    assert install.paths.data_dir() == fake_home / "dat/fbcnn"
    assert install.discovery.native_kritarc() == fake_home / "cfg/kritarc"
    # A relative XDG value is invalid per the spec and ignored.
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")
    assert install.paths.data_dir() == fake_home / ".local/share/fbcnn"


def test_linux_discovers_native_and_flatpak_profiles(fake_home, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    gimp_native = fake_home / ".config/GIMP/3.0"
    gimp_flat = fake_home / ".var/app/org.gimp.GIMP/config/GIMP/3.0"
    krita_native = fake_home / ".local/share/krita"
    krita_flat = fake_home / ".var/app/org.kde.krita/data/krita"
    for d in (gimp_native, gimp_flat, krita_native, krita_flat):
        d.mkdir(parents=True)
    extra = fake_home / "elsewhere/profile"
    gimp = install.discovery.find_gimp_targets([str(extra)], programs=[], flatpak_check=quiet_flatpak)
    assert [(t.kind, t.root, t.flatpak_app) for t in gimp] == [
        ("custom", extra, None), ("native", gimp_native, None),
        ("flatpak", gimp_flat, "org.gimp.GIMP")]
    assert gimp[1].plugin_dir == gimp_native / "plug-ins/fbcnn_gimp"
    assert gimp[0].exists is False  # --gimp-dir that does not exist yet is created

    krita = install.discovery.find_krita_targets(programs=[], flatpak_check=quiet_flatpak)
    assert [(t.kind, t.root, t.kritarc) for t in krita] == [
        ("native", krita_native, fake_home / ".config/kritarc"),
        ("flatpak", krita_flat, fake_home / ".var/app/org.kde.krita/config/kritarc")]
    assert krita[0].plugin_dir == krita_native / "pykrita/fbcnn_krita"


def test_linux_nothing_found_without_profiles_or_programs(fake_home, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    assert install.discovery.find_gimp_targets(programs=[], flatpak_check=quiet_flatpak) == []
    assert install.discovery.find_krita_targets(programs=[], flatpak_check=quiet_flatpak) == []


def test_installed_program_without_profile_gets_one_unless_210_would_migrate(fake_home, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    gimp = install.discovery.find_gimp_targets(programs=["/usr/bin/gimp-3.0"], flatpak_check=quiet_flatpak)
    assert [(t.root, t.exists) for t in gimp] == [(fake_home / ".config/GIMP/3.0", False)]
    krita = install.discovery.find_krita_targets(programs=["/usr/bin/krita"], flatpak_check=quiet_flatpak)
    assert [(t.root, t.exists) for t in krita] == [(fake_home / ".local/share/krita", False)]
    # A GIMP 2.10 profile: GIMP 3 migrates it only into a profile that does not exist.
    (fake_home / ".config/GIMP/2.10").mkdir(parents=True)
    assert install.discovery.find_gimp_targets(programs=["/usr/bin/gimp-3.0"], flatpak_check=quiet_flatpak) == []
    # A Flatpak that is installed but never started.
    gimp = install.discovery.find_gimp_targets(programs=[], flatpak_check=lambda app: app == "org.gimp.GIMP")
    assert [(t.kind, t.exists) for t in gimp] == [("flatpak", False)]


def test_flatpak_install_detected_from_the_user_installation(fake_home, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    assert not install.discovery.flatpak_installed("org.example.Nothing")
    (fake_home / ".local/share/flatpak/app/org.kde.krita").mkdir(parents=True)
    assert install.discovery.flatpak_installed("org.kde.krita")
    krita = install.discovery.find_krita_targets(programs=[])
    assert [(t.kind, t.exists) for t in krita] == [("flatpak", False)]


def test_windows_paths_use_appdata_and_localappdata(fake_home, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    roaming, local = tmp_path / "Roaming", tmp_path / "Local"
    monkeypatch.setenv("APPDATA", str(roaming))
    monkeypatch.setenv("LOCALAPPDATA", str(local))
    monkeypatch.setenv("ProgramFiles", str(tmp_path / "nowhere"))
    (roaming / "GIMP/3.0").mkdir(parents=True)
    (roaming / "krita").mkdir(parents=True)
    assert install.paths.data_dir() == local / "fbcnn"
    assert install.paths.frontend_config_path() == roaming / "fbcnn/frontend.json"
    assert install.paths.venv_python(Path("v")) == Path("v/Scripts/python.exe")
    gimp = install.discovery.find_gimp_targets(programs=[], flatpak_check=quiet_flatpak)
    assert [(t.kind, t.root) for t in gimp] == [("native", roaming / "GIMP/3.0")]
    krita = install.discovery.find_krita_targets(programs=[], flatpak_check=quiet_flatpak)
    # kritarc lives in LOCALAPPDATA, not beside the resources in APPDATA.
    assert [(t.root, t.kritarc) for t in krita] == [(roaming / "krita", local / "kritarc")]
    # No Flatpak on Windows, and GIMP's own Python needs no pinning.
    assert install.gimp_python.gimp_interpreter_pin(has_gi=lambda p: False)[0] is None


def test_windows_program_files_detection(fake_home, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    pf = tmp_path / "Program Files"
    exe = pf / "GIMP 3" / "bin" / "gimp-3.0.exe"
    exe.parent.mkdir(parents=True)
    exe.write_text("")
    kexe = pf / "Krita (x64)" / "bin" / "krita.exe"
    kexe.parent.mkdir(parents=True)
    kexe.write_text("")
    monkeypatch.setenv("ProgramFiles", str(pf))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert install.discovery.gimp_programs() == [str(exe)]
    assert install.discovery.krita_programs() == [str(kexe)]


def test_macos_paths_use_library(fake_home, monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    support = fake_home / "Library/Application Support"
    (support / "GIMP/3.0").mkdir(parents=True)
    (support / "krita").mkdir(parents=True)
    assert install.paths.data_dir() == support / "fbcnn"
    assert install.paths.frontend_config_path() == support / "fbcnn/frontend.json"
    gimp = install.discovery.find_gimp_targets(programs=[], flatpak_check=quiet_flatpak)
    assert [t.root for t in gimp] == [support / "GIMP/3.0"]
    krita = install.discovery.find_krita_targets(programs=[], flatpak_check=quiet_flatpak)
    assert [(t.root, t.kritarc) for t in krita] == [
        (support / "krita", fake_home / "Library/Preferences/kritarc")]
    assert install.paths.venv_python(Path("/v")) == Path("/v/bin/python")


def test_gimp3_directory_env_is_a_profile(fake_home, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    prof = tmp_path / "gimpprof"
    prof.mkdir()
    monkeypatch.setenv("GIMP3_DIRECTORY", str(prof))
    gimp = install.discovery.find_gimp_targets(programs=[], flatpak_check=quiet_flatpak)
    assert [t.root for t in gimp] == [prof]


# ------------------------------------------------------------------ GIMP 3.x series, editor versions

def gimp_says(version):
    return f"GNU Image Manipulation Program version {version}"


FLATPAK_INFO = """
GNU Image Manipulation Program - Create images and edit photographs

          ID: {app}
         Ref: app/{app}/x86_64/stable
        Arch: x86_64
      Branch: stable
     Version: {version}
     License: GPL-3.0+
"""


def prints(text: str) -> str:
    """A shell command printing text with builtins only (PATH holds nothing else)."""
    return "printf '%s\\n' " + " ".join("'" + line + "'" for line in text.splitlines())


def fake_path(tmp_path, monkeypatch, programs: dict, flatpaks: dict = None) -> Path:
    """A PATH holding only small scripts: name -> what it prints (None: it fails), and a
    `flatpak` whose `info APP` prints a version for each app in flatpaks."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    scripts = {name: prints(out) if out is not None else "exit 1" for name, out in programs.items()}
    if flatpaks:
        scripts["flatpak"] = "case \"$1 $2\" in\n" + "".join(
            f"'info {app}') {prints(FLATPAK_INFO.format(app=app, version=v))};;\n"
            for app, v in flatpaks.items()) + "*) exit 1;;\nesac"
    for name, body in scripts.items():
        (bindir / name).write_text("#!/bin/sh\n" + body + "\n")
        (bindir / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    return bindir


def gimp_roots(targets):
    return [(t.kind, t.root, t.version, t.exists) for t in targets]


def test_profiles_of_gimp_30_and_32_are_both_installed_into(fake_home, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    config = fake_home / ".config/GIMP"
    for series in ("2.10", "3.0", "3.2", "3.10"):
        (config / series).mkdir(parents=True)
    (config / "3.2-backup").mkdir()
    before = snapshot(fake_home)
    gimp = install.discovery.find_gimp_targets(programs=[], flatpak_check=quiet_flatpak)
    # 3.10 sorts after 3.2 by number, not by text; 2.10 and the backup are no GIMP 3 profiles.
    assert gimp_roots(gimp) == [("native", config / "3.0", "3.0", True),
                                ("native", config / "3.2", "3.2", True),
                                ("native", config / "3.10", "3.10", True)]
    manifest = install.manifest.Manifest(install.paths.manifest_path())
    install.manifest.make_dirs(manifest.path.parent, manifest)
    place_everything(make_test_plan(fake_home, fake_sources(tmp_path), gimp, []), manifest)
    for series in ("3.0", "3.2", "3.10"):
        assert (config / series / "plug-ins/fbcnn_gimp/fbcnn_gimp.py").is_file()
        assert (config / series / "plug-ins/fbcnn_gimp/fbcnn_frontend/client.py").is_file()
    assert not (config / "2.10/plug-ins").exists()
    assert install.main.main(["--uninstall"]) == 0
    assert snapshot(fake_home) == before


def test_only_a_32_profile_and_the_plan_names_its_version(fake_home, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "linux")
    fake_path(tmp_path, monkeypatch, {"gimp-console-3": gimp_says("3.2.6"), "gimp-3": gimp_says("3.2.6")})
    profile = fake_home / ".config/GIMP/3.2"
    profile.mkdir(parents=True)
    gimp = install.discovery.find_gimp_targets(flatpak_check=quiet_flatpak)
    assert gimp_roots(gimp) == [("native", profile, "3.2", True)]
    assert not (fake_home / ".config/GIMP/3.0").exists()
    install.plan.print_plan(make_test_plan(fake_home, fake_sources(tmp_path), gimp, []))
    lines = capsys.readouterr().out.splitlines()
    assert f"  GIMP 3.2         {profile}/plug-ins/fbcnn_gimp" in lines


def test_a_gimp_32_without_a_profile_gets_the_32_folder(fake_home, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "linux")
    bindir = fake_path(tmp_path, monkeypatch, {"gimp-3": gimp_says("3.2.6"),
                                               "gimp-console-3.2": gimp_says("3.2.6")})
    assert install.discovery.gimp_programs() == [str(bindir / "gimp-3"), str(bindir / "gimp-console-3.2")]
    config = fake_home / ".config/GIMP"
    gimp = install.discovery.find_gimp_targets(flatpak_check=quiet_flatpak)
    assert gimp_roots(gimp) == [("native", config / "3.2", "3.2", False)]
    plan = make_test_plan(fake_home, fake_sources(tmp_path), gimp, [])
    install.plan.print_plan(plan)
    assert f"  GIMP 3.2         {config}/3.2/plug-ins/fbcnn_gimp  (profile created)" in \
        capsys.readouterr().out.splitlines()
    manifest = install.manifest.Manifest(install.paths.manifest_path())
    install.placing.install_gimp(gimp[0], plan, manifest)
    assert (config / "3.2/plug-ins/fbcnn_gimp/fbcnn_gimp.py").is_file()
    assert str(config / "3.2") in manifest.data["dirs"]


@pytest.mark.parametrize("older", ["3.0", "2.10"])
def test_a_new_series_beside_an_older_profile_is_left_to_gimp_to_migrate(
        fake_home, tmp_path, monkeypatch, capsys, older):
    """GIMP 3.2 takes a 3.0 (or 2.10) profile over only into a 3.2 folder that does not exist."""
    monkeypatch.setattr(sys, "platform", "linux")
    fake_path(tmp_path, monkeypatch, {"gimp-3": gimp_says("3.2.6")})
    config = fake_home / ".config/GIMP"
    (config / older).mkdir(parents=True)
    gimp = install.discovery.find_gimp_targets(flatpak_check=quiet_flatpak)
    expected = [("native", config / "3.0", "3.0", True)] if older == "3.0" else []
    assert gimp_roots(gimp) == expected
    assert not (config / "3.2").exists()
    assert (f"  note: GIMP 3.2 is installed but has no profile yet and a GIMP {older} profile "
            "exists; start GIMP 3.2 once (it takes your settings over), then run this installer "
            "again.") in capsys.readouterr().out.splitlines()


def test_flatpak_gimp_32(fake_home, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    fake_path(tmp_path, monkeypatch, {}, flatpaks={"org.gimp.GIMP": "3.2.6"})
    flat = fake_home / ".var/app/org.gimp.GIMP/config/GIMP"
    is_gimp = lambda app: app == "org.gimp.GIMP"  # noqa: E731
    # Installed, never started: its own series' folder is created.
    gimp = install.discovery.find_gimp_targets(programs=[], flatpak_check=is_gimp)
    assert gimp_roots(gimp) == [("flatpak", flat / "3.2", "3.2", False)]
    assert gimp[0].flatpak_app == "org.gimp.GIMP" and gimp[0].title() == "GIMP 3.2 (Flatpak)"
    # Started once: the profile is there, and no 3.0 one is made beside it.
    (flat / "3.2").mkdir(parents=True)
    gimp = install.discovery.find_gimp_targets(programs=[], flatpak_check=is_gimp)
    assert gimp_roots(gimp) == [("flatpak", flat / "3.2", "3.2", True)]


def test_windows_finds_every_series_and_creates_the_installed_ones(fake_home, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    roaming = tmp_path / "Roaming"
    monkeypatch.setenv("APPDATA", str(roaming))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    pf = tmp_path / "Program Files"
    monkeypatch.setenv("ProgramFiles", str(pf))
    (roaming / "GIMP/3.0").mkdir(parents=True)
    (roaming / "GIMP/3.4").mkdir(parents=True)
    gimp = install.discovery.find_gimp_targets(programs=[], flatpak_check=quiet_flatpak)
    assert gimp_roots(gimp) == [("native", roaming / "GIMP/3.0", "3.0", True),
                                ("native", roaming / "GIMP/3.4", "3.4", True)]
    # GIMP 3.2's installer puts gimp-3.2.exe in "GIMP 3": its name tells the series.
    exe = pf / "GIMP 3/bin/gimp-3.2.exe"
    exe.parent.mkdir(parents=True)
    exe.write_text("")
    (pf / "GIMP 3/bin/gimptool.exe").write_text("")
    old = pf / "GIMP 2/bin/gimp-2.10.exe"
    old.parent.mkdir(parents=True)
    old.write_text("")
    assert install.discovery.gimp_programs() == [str(old), str(exe)]
    assert install.discovery.program_version(str(exe)) == "3.2"
    shutil.rmtree(roaming / "GIMP/3.0")
    shutil.rmtree(roaming / "GIMP/3.4")
    gimp = install.discovery.find_gimp_targets(flatpak_check=quiet_flatpak)
    assert gimp_roots(gimp) == [("native", roaming / "GIMP/3.2", "3.2", False)]


def test_macos_finds_a_32_profile_and_creates_one_for_gimp_32(fake_home, monkeypatch):
    import plistlib
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("PATH", "/nonexistent")
    support = fake_home / "Library/Application Support/GIMP"
    (support / "3.2").mkdir(parents=True)
    gimp = install.discovery.find_gimp_targets(programs=[], flatpak_check=quiet_flatpak)
    assert gimp_roots(gimp) == [("native", support / "3.2", "3.2", True)]
    app = fake_home / "Applications/GIMP.app/Contents"
    (app / "MacOS").mkdir(parents=True)
    (app / "MacOS/gimp").write_text("")
    with open(app / "Info.plist", "wb") as f:
        plistlib.dump({"CFBundleShortVersionString": "3.2.6"}, f)
    (support / "3.2").rmdir()
    gimp = install.discovery.find_gimp_targets(flatpak_check=quiet_flatpak)
    assert gimp_roots(gimp) == [("native", support / "3.2", "3.2", False)]


def test_an_unknown_gimp_version_falls_back_to_30_and_says_so(fake_home, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "linux")
    bindir = fake_path(tmp_path, monkeypatch, {"gimp-3": None})
    gimp = install.discovery.find_gimp_targets(flatpak_check=quiet_flatpak)
    assert gimp_roots(gimp) == [("native", fake_home / ".config/GIMP/3.0", "3.0", False)]
    note = (f"the version of {bindir / 'gimp-3'} could not be learned; "
            "GIMP 3.0's profile folder is assumed")
    assert gimp[0].note == note
    install.plan.print_plan(make_test_plan(fake_home, fake_sources(tmp_path), gimp, []))
    assert f"                   note: {note}" in capsys.readouterr().out.splitlines()
    # A known version elsewhere wins over the guess.
    fake_path(tmp_path, monkeypatch, {"gimp-3": None, "gimp-console-3": gimp_says("3.2.6")})
    gimp = install.discovery.find_gimp_targets(flatpak_check=quiet_flatpak)
    assert gimp_roots(gimp) == [("native", fake_home / ".config/GIMP/3.2", "3.2", False)]
    # A Flatpak whose version flatpak cannot tell: the same fallback.
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    gimp = install.discovery.find_gimp_targets(programs=[], flatpak_check=lambda app: app == "org.gimp.GIMP")
    assert [(t.root.name, t.note) for t in gimp] == [
        ("3.0", "the version of Flatpak org.gimp.GIMP could not be learned; "
                "GIMP 3.0's profile folder is assumed")]


def test_version_advice_follows_the_tested_ranges():
    assert install.discovery.GIMP_TESTED == ((3, 0), (3, 2)) and install.discovery.KRITA_TESTED == ((5, 1), (6, 0))
    for app, version in (("GIMP", "3.0.0"), ("GIMP", "3.2.6"), ("Krita", "5.1.5"), ("Krita", "6.0.4.1")):
        assert install.discovery.version_advice(app, version) == "", (app, version)
    assert install.discovery.version_advice("GIMP", "2.10.38").startswith(
        "WARNING: the plug-in needs GIMP 3.0 or newer: install GIMP 3 (")
    assert install.discovery.version_advice("Krita", "5.0.2").startswith(
        "WARNING: the plug-in needs Krita 5.1 or newer: install a newer Krita (")
    assert install.discovery.version_advice("GIMP", "3.4.0").startswith(
        "note: GIMP 3.4.0 is newer than tested (GIMP 3.0 to 3.2); it is untested")
    assert install.discovery.version_advice("Krita", None).startswith("note: its version could not be learned")


def test_check_lists_every_editor_with_its_version_and_advice(fake_home, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "linux")
    bindir = fake_path(tmp_path, monkeypatch,
                       {"gimp-2.10": gimp_says("2.10.38"), "gimp-console-3": gimp_says("3.2.6"),
                        "gimp-3.4": gimp_says("3.4.0"), "gimp-3": None,
                        "krita": None, "krita_version": "4.4.8"},
                       flatpaks={"org.kde.krita": "6.1.0"})
    (fake_home / ".local/share/flatpak/app/org.kde.krita").mkdir(parents=True)
    (fake_home / ".config/GIMP/3.2").mkdir(parents=True)
    assert install.doctor.check(install.main.parse_args(["--check"]), probes=FakeProbes()) == 1
    out = capsys.readouterr().out
    editors = out.split("==> Editors\n")[1].split("\n\n")[0].splitlines()
    pad = " " * 19
    assert editors == [
        f"  GIMP 2.10.38     {bindir}/gimp-2.10",
        pad + "WARNING: the plug-in needs GIMP 3.0 or newer: " + install.discovery.TOO_OLD_ADVICE["GIMP"],
        f"  GIMP (version unknown) {bindir}/gimp-3",
        pad + "note: its version could not be learned; the plug-in is tested with GIMP 3.0 to 3.2",
        f"  GIMP 3.4.0       {bindir}/gimp-3.4",
        pad + "note: GIMP 3.4.0 is newer than tested (GIMP 3.0 to 3.2); it is untested there and "
              "likely works; please report what does not",
        f"  GIMP 3.2.6       {bindir}/gimp-console-3",
        f"  Krita 4.4.8      {bindir}/krita",
        pad + "WARNING: the plug-in needs Krita 5.1 or newer: " + install.discovery.TOO_OLD_ADVICE["Krita"],
        "  Krita 6.1.0      Flatpak org.kde.krita",
        pad + "note: Krita 6.1.0 is newer than tested (Krita 5.1 to 6.0); it is untested there and "
              "likely works; please report what does not"]
    lines = out.splitlines()
    assert f"  GIMP 3.2         {fake_home}/.config/GIMP/3.2/plug-ins/fbcnn_gimp: MISSING or not executable" in lines
    # GIMP 3.4 has not taken the 3.2 profile over yet: its folder is left for it to make.
    assert ("  note: GIMP 3.4 is installed but has no profile yet and a GIMP 3.2 profile exists; "
            "start GIMP 3.4 once (it takes your settings over), then run this installer again.") in lines
    assert f"  warning: GIMP 2.10.38 ({bindir}/gimp-2.10): the plug-in needs GIMP 3.0 or newer: " \
        + install.discovery.TOO_OLD_ADVICE["GIMP"] in lines
    assert f"  warning: Krita 4.4.8 ({bindir}/krita): the plug-in needs Krita 5.1 or newer: " \
        + install.discovery.TOO_OLD_ADVICE["Krita"] in lines


@pytest.mark.parametrize("plat", ["linux", "win32", "darwin"])
def test_config_path_agrees_with_the_client(fake_home, tmp_path, monkeypatch, plat):
    """frontend.json must land where the client (inside GIMP/Krita) looks for it."""
    from core.frontend import client
    monkeypatch.setattr(sys, "platform", plat)
    monkeypatch.setenv("APPDATA", str(tmp_path / "Roaming"))
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert Path(client.config_path()) == install.paths.frontend_config_path()
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/cfg")  # invalid per the XDG spec: both ignore it
    assert Path(client.config_path()) == install.paths.frontend_config_path()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert Path(client.config_path()) == install.paths.frontend_config_path()
    monkeypatch.setenv("FBCNN_FRONTEND_CONFIG", str(tmp_path / "x.json"))
    assert Path(client.config_path()) == install.paths.frontend_config_path() == tmp_path / "x.json"


@pytest.mark.parametrize("plat", ["linux", "win32", "darwin"])
def test_model_dir_is_inside_the_data_dir_like_core_weights(fake_home, tmp_path, monkeypatch, plat):
    weights = pytest.importorskip("core.weights")
    monkeypatch.setattr(sys, "platform", plat)
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert weights.cache_dir() == install.paths.data_dir() / "models"


def test_flatpak_configs_land_in_the_sandbox_config_home(fake_home, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    assert install.paths.flatpak_frontend_config_path("org.gimp.GIMP") == \
        fake_home / ".var/app/org.gimp.GIMP/config/fbcnn/frontend.json"
    assert install.plan.flatpak_override_command("org.kde.krita") == \
        "flatpak override --user --talk-name=org.freedesktop.Flatpak org.kde.krita"


# ------------------------------------------------------------------ GIMP's python3 pin

def test_pin_when_path_python3_lacks_gi(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "python3"
    fake.write_text("#!/bin/sh\nexit 1\n")  # like a venv python3 without gi
    fake.chmod(0o755)
    system = tmp_path / "sys_python3"
    system.write_text("#!/bin/sh\nexit 0\n")  # "has gi"
    system.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    pin, why = install.gimp_python.gimp_interpreter_pin(system_python=str(system))
    assert pin == str(system)
    assert "no gi" in why
    assert install.gimp_python.interp_text(pin) == f"python3={system}\n"
    # The PATH python3 has gi: nothing to pin.
    fake.write_text("#!/bin/sh\nexit 0\n")
    assert install.gimp_python.gimp_interpreter_pin(system_python=str(system))[0] is None
    # Nobody has gi: no pin, and the reason says what is missing.
    pin, why = install.gimp_python.gimp_interpreter_pin(has_gi=lambda p: False, system_python=str(system))
    assert pin is None and "gi" in why


# ------------------------------------------------------------------ torch choice

class FakeProbes(install.torch_choice.Probes):
    def __init__(self, nvidia=(False, None, "no nvidia-smi on PATH"), rocm=(False, "no ROCm"),
                 machine="x86_64", base=None, pythons=None):
        self._nv, self._rocm, self._machine, self._base = nvidia, rocm, machine, base
        self._pythons = pythons or {}

    def nvidia(self):
        return self._nv

    def rocm(self):
        return self._rocm

    def machine(self):
        return self._machine

    def base_torch(self, python):
        return self._pythons.get(python, self._base)


CPU_TORCH = {"version": "2.13.0+cpu", "cuda": None, "hip": None, "mps": False}
CUDA_TORCH = {"version": "2.13.0+cu128", "cuda": "12.8", "hip": None, "mps": False}


def test_auto_on_a_cpu_only_linux_reuses_the_local_cpu_torch(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    c = install.torch_choice.choose_torch("auto", None, "py", FakeProbes(base=CPU_TORCH))
    assert (c.kind, c.index_url, c.reuse_base, c.gpu) == (
        "cpu", "https://download.pytorch.org/whl/cpu", True, False)
    text = " ".join(c.reasons)
    assert "no nvidia-smi" in text and "nothing is downloaded" in text


def test_auto_with_nvidia_picks_cuda_index_from_the_driver(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    nv = (True, "12.8", "nvidia-smi sees NVIDIA H100")
    c = install.torch_choice.choose_torch("auto", None, "py", FakeProbes(nvidia=nv, base=CPU_TORCH))
    assert (c.kind, c.index_url, c.reuse_base) == ("cuda", "https://download.pytorch.org/whl/cu128", False)
    assert "not a CUDA build" in " ".join(c.reasons)
    c = install.torch_choice.choose_torch("auto", None, "py", FakeProbes(nvidia=nv, base=CUDA_TORCH))
    assert c.reuse_base and c.gpu
    assert install.torch_choice.cuda_tag("13.1") == "cu130"
    assert install.torch_choice.cuda_tag("12.6") == "cu126"
    assert install.torch_choice.cuda_tag("11.8") == "cu118"
    assert install.torch_choice.cuda_tag(None) == "cu126"


def test_auto_with_rocm_and_on_apple_silicon(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    c = install.torch_choice.choose_torch("auto", None, "py", FakeProbes(rocm=(True, "rocminfo found")))
    assert (c.kind, c.index_url, c.reuse_base) == ("rocm", "https://download.pytorch.org/whl/rocm6.4", False)
    assert "no torch" in " ".join(c.reasons)
    monkeypatch.setattr(sys, "platform", "darwin")
    c = install.torch_choice.choose_torch("auto", None, "py", FakeProbes(machine="arm64"))
    assert (c.kind, c.index_url) == ("mps", None)
    c = install.torch_choice.choose_torch("auto", None, "py", FakeProbes(machine="x86_64"))
    assert (c.kind, c.index_url) == ("cpu", None)  # PyPI's macOS wheels are the CPU ones


def test_explicit_choice_and_index_override(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    nv = (True, "12.6", "nvidia-smi sees a GPU")
    c = install.torch_choice.choose_torch("cpu", None, "py", FakeProbes(nvidia=nv, base=CPU_TORCH))
    assert (c.kind, c.reuse_base) == ("cpu", True)  # --torch cpu wins over the GPU
    c = install.torch_choice.choose_torch("cpu", "http://mirror/simple", "py", FakeProbes(base=CPU_TORCH))
    assert (c.index_url, c.reuse_base) == ("http://mirror/simple", False)
    assert "--torch-index-url" in " ".join(c.reasons)
    old = {"version": "1.13.1", "cuda": None, "hip": None, "mps": False}
    c = install.torch_choice.choose_torch("cpu", None, "py", FakeProbes(base=old))
    assert not c.reuse_base and "outside" in " ".join(c.reasons)


def test_a_venv_python_with_torch_is_reused_through_a_link(monkeypatch):
    """`--python VENV/bin/python`: `venv --system-site-packages` would reach only that venv's
    base, which has no torch here; the new venv links the given venv's site-packages."""
    monkeypatch.setattr(sys, "platform", "linux")
    mine = dict(CPU_TORCH, file="/home/u/env/lib/python3.11/site-packages/torch/__init__.py")
    probes = FakeProbes(pythons={"/home/u/env/bin/python": mine})
    c = install.torch_choice.choose_torch("auto", None, "/usr/bin/python3", probes, "/home/u/env/bin/python")
    assert c.reuse_base and c.linked_site == "/home/u/env/lib/python3.11/site-packages"
    assert "the venv of /home/u/env/bin/python already has torch" in " ".join(c.reasons)
    assert "nothing is downloaded" in " ".join(c.reasons)
    # The base's own torch comes first: no link when it fits.
    probes = FakeProbes(base=CPU_TORCH, pythons={"/home/u/env/bin/python": mine})
    c = install.torch_choice.choose_torch("auto", None, "/usr/bin/python3", probes, "/home/u/env/bin/python")
    assert c.reuse_base and c.linked_site is None
    # A fresh install asked for: nothing linked.
    probes = FakeProbes(pythons={"/home/u/env/bin/python": mine})
    c = install.torch_choice.choose_torch("auto", "http://mirror/simple", "/usr/bin/python3", probes, "/home/u/env/bin/python")
    assert not c.reuse_base and c.linked_site is None


def test_link_site_makes_another_folder_importable_in_a_real_venv(tmp_path):
    other = tmp_path / "other-site"
    other.mkdir()
    (other / "linked_probe.py").write_text("VALUE = 42\n")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    vpy = install.paths.venv_python(tmp_path / "venv")
    install.worker_env.link_site(vpy, str(other))
    out = subprocess.run([str(vpy), "-I", "-c", "import linked_probe; print(linked_probe.VALUE)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "42"


def test_real_probes_find_fake_gpu_tools_on_path(tmp_path, monkeypatch):
    """The default probes read nvidia-smi's real output format and ROCm's tools via PATH."""
    monkeypatch.setattr(sys, "platform", "linux")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text("#!/bin/sh\ncat <<'EOF'\n"
                   "+-----------------------------------------------------------------------------------------+\n"
                   "| NVIDIA-SMI 570.86.15              Driver Version: 570.86.15      CUDA Version: 12.8     |\n"
                   "|-----------------------------------------+------------------------+----------------------+\n"
                   "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |\n"
                   "|=========================================+========================+======================|\n"
                   "|   0  NVIDIA GeForce RTX 4090        Off |   00000000:01:00.0 Off |                  Off |\n"
                   "EOF\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + "/usr/bin:/bin")
    present, cuda, detail = install.torch_choice.Probes().nvidia()
    assert (present, cuda) == (True, "12.8")
    assert "RTX 4090" in detail
    c = install.torch_choice.choose_torch("auto", None, "py", _RealButBase(CPU_TORCH))
    assert (c.kind, c.index_url) == ("cuda", "https://download.pytorch.org/whl/cu128")
    # A broken driver: nvidia-smi fails -> not a usable GPU.
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed'\nexit 9\n")
    assert install.torch_choice.Probes().nvidia()[0] is False
    smi.unlink()
    rocminfo = bindir / "rocminfo"
    rocminfo.write_text("#!/bin/sh\nexit 0\n")
    rocminfo.chmod(0o755)
    assert install.torch_choice.Probes().rocm()[0] is True
    c = install.torch_choice.choose_torch("auto", None, "py", _RealButBase(None))
    assert c.kind == "rocm"


class _RealButBase(install.torch_choice.Probes):
    """Real PATH probes; the base interpreter's torch is given (no torch import here)."""

    def __init__(self, base):
        self._base = base

    def base_torch(self, python):
        return self._base


def test_base_torch_probe_reads_a_real_interpreter():
    info = install.torch_choice.Probes().base_torch(sys.executable)
    import torch
    assert info["version"] == torch.__version__
    assert info["cuda"] == torch.version.cuda


# ------------------------------------------------------------------ models option

def test_models_default_and_list():
    assert install.plan.parse_models(None, gpu=False, no_download=False)[0] == []
    assert install.plan.parse_models(None, gpu=True, no_download=False)[0] == ["fbcnn_color"]
    assert install.plan.parse_models("color,gray-double,color", False, False)[0] == [
        "fbcnn_color", "fbcnn_gray_double"]
    assert install.plan.parse_models("all", False, False)[0] == [
        "fbcnn_color", "fbcnn_gray", "fbcnn_gray_double"]
    assert install.plan.parse_models("color", gpu=True, no_download=True)[0] == []
    with pytest.raises(SystemExit, match="unknown model"):
        install.plan.parse_models("colour", False, False)


def test_model_url_base_from_env(monkeypatch):
    monkeypatch.delenv("FBCNN_MODEL_URL_BASE", raising=False)
    assert install.plan.model_url_base(None) is None
    monkeypatch.setenv("FBCNN_MODEL_URL_BASE", "http://127.0.0.1:9/m")
    assert install.plan.model_url_base(None) == "http://127.0.0.1:9/m"
    assert install.plan.model_url_base("http://x") == "http://x"


# ------------------------------------------------------------------ kritarc

KRITARC = ("[General]\r\nWindowState=AAAA==\r\n\r\n[python]\r\nenable_comics_project=true\r\n"
           "enable_fbcnn_krita=false\r\n\r\n[theme]\r\nTheme=Krita dark\r\n")


def test_kritarc_set_changes_one_line_and_restores_the_earlier_value(tmp_path):
    rc = tmp_path / "kritarc"
    rc.write_bytes(KRITARC.encode())
    m = install.manifest.Manifest(tmp_path / "m.json")
    assert install.kritarc.enable_krita_plugin(rc, m) == "false"
    after = rc.read_bytes().decode()
    assert after == KRITARC.replace("enable_fbcnn_krita=false", "enable_fbcnn_krita=true")
    # A re-run must not record our own "true" as the earlier value.
    assert install.kritarc.enable_krita_plugin(rc, m) == "true"
    assert m.data["kritarc"][str(rc)]["previous"] == "false"
    install.kritarc.restore_kritarc(rc, m.data["kritarc"][str(rc)])
    assert rc.read_bytes() == KRITARC.encode()


def test_kritarc_key_added_to_existing_section_and_removed_again(tmp_path):
    rc = tmp_path / "kritarc"
    original = "[General]\nfoo=1\n\n[python]\nenable_other=true\n\n[Zed]\nz=2\n"
    rc.write_text(original)
    m = install.manifest.Manifest(tmp_path / "m.json")
    assert install.kritarc.enable_krita_plugin(rc, m) is None
    assert rc.read_text() == ("[General]\nfoo=1\n\n[python]\nenable_other=true\n"
                              "enable_fbcnn_krita=true\n\n[Zed]\nz=2\n")
    install.kritarc.restore_kritarc(rc, m.data["kritarc"][str(rc)])
    assert rc.read_text() == original


def test_kritarc_section_created_and_dropped(tmp_path):
    rc = tmp_path / "kritarc"
    original = "[General]\nfoo=1"  # no trailing newline
    rc.write_text(original)
    m = install.manifest.Manifest(tmp_path / "m.json")
    install.kritarc.enable_krita_plugin(rc, m)
    assert rc.read_text() == "[General]\nfoo=1\n\n[python]\nenable_fbcnn_krita=true\n"
    assert install.kritarc.ini_get(rc.read_text(), "python", "enable_fbcnn_krita") == "true"
    install.kritarc.restore_kritarc(rc, m.data["kritarc"][str(rc)])
    assert rc.read_text() == original


def test_kritarc_created_by_us_is_deleted_on_restore(tmp_path):
    rc = tmp_path / "cfg" / "kritarc"
    m = install.manifest.Manifest(tmp_path / "m.json")
    install.kritarc.enable_krita_plugin(rc, m)
    assert rc.read_text() == "[python]\nenable_fbcnn_krita=true\n"
    assert str(tmp_path / "cfg") in m.data["dirs"]
    install.kritarc.restore_kritarc(rc, m.data["kritarc"][str(rc)])
    assert not rc.exists()


def test_kritarc_restore_keeps_what_krita_wrote_meanwhile(tmp_path):
    rc = tmp_path / "kritarc"
    rc.write_text("[python]\nenable_fbcnn_krita=false\n")
    m = install.manifest.Manifest(tmp_path / "m.json")
    install.kritarc.enable_krita_plugin(rc, m)
    # Krita rewrites the file while the plug-in is installed.
    rc.write_text("[General]\nnew=1\n\n[python]\nenable_fbcnn_krita=true\n")
    install.kritarc.restore_kritarc(rc, m.data["kritarc"][str(rc)])
    assert rc.read_text() == "[General]\nnew=1\n\n[python]\nenable_fbcnn_krita=false\n"


def test_ini_keys_in_other_sections_are_not_touched():
    text = "[other]\nenable_fbcnn_krita=false\n"
    out = install.kritarc.ini_set(text, "python", "enable_fbcnn_krita", "true")
    assert out == "[other]\nenable_fbcnn_krita=false\n\n[python]\nenable_fbcnn_krita=true\n"
    assert install.kritarc.ini_get(out, "other", "enable_fbcnn_krita") == "false"


# ------------------------------------------------------------------ plug-in files, manifest, uninstall

def fake_sources(tmp_path, version="1"):
    """Plug-in sources in the layout of the repo (gimp_plugin/, krita_plugin/, core/frontend/)."""
    src = tmp_path / f"src{version}"
    (src / "gimp/fbcnn_gimp").mkdir(parents=True)
    (src / "gimp/fbcnn_gimp/fbcnn_gimp.py").write_text(f"#!/usr/bin/env python3\n# v{version}\n")
    (src / "gimp/fbcnn_gimp/__pycache__").mkdir()
    (src / "gimp/fbcnn_gimp/__pycache__/x.pyc").write_bytes(b"junk")
    (src / "krita/fbcnn_krita").mkdir(parents=True)
    (src / "krita/fbcnn_krita/__init__.py").write_text(f"# v{version}\n")
    (src / f"krita/fbcnn_krita/only_in_v{version}.py").write_text("")
    (src / "krita/fbcnn_krita.desktop").write_text("[Desktop Entry]\nX-KDE-Library=fbcnn_krita\n")
    (src / "frontend").mkdir()
    (src / "frontend/__init__.py").write_text("")
    (src / "frontend/client.py").write_text(f"# client v{version}\n")
    return {"gimp": src / "gimp/fbcnn_gimp", "krita_dir": src / "krita/fbcnn_krita",
            "krita_desktop": src / "krita/fbcnn_krita.desktop", "frontend": src / "frontend"}


def make_test_plan(home, sources, gimp, krita, pin=None):
    venv = home / "venv"
    return install.plan.Plan(sys.executable, venv, False, install.torch_choice.TorchChoice("cpu", None, True), [],
                          "", None, gimp, krita, pin, "test", [(install.paths.frontend_config_path(), False)],
                          [], sources, False)


def place_everything(plan, manifest):
    """The file-placing part of an install (the venv/pip part is the e2e test's job)."""
    for t in plan.gimp:
        install.placing.install_gimp(t, plan, manifest)
    for t in plan.krita:
        install.placing.install_krita(t, plan, manifest)
    install.placing.write_frontend_configs(plan, plan.venv / "bin/python", str(plan.venv / "site"), manifest)
    manifest.save()


def test_install_places_files_and_uninstall_leaves_the_tree_as_it_was(fake_home, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    # A user who has used GIMP and Krita: profiles with their own files and settings.
    gimp_root = fake_home / ".config/GIMP/3.0"
    (gimp_root / "plug-ins").mkdir(parents=True)
    (gimp_root / "gimprc").write_text("(theme \"Dark\")\n")
    (gimp_root / "plug-ins/other_plugin").mkdir()
    krita_root = fake_home / ".local/share/krita"
    (krita_root / "pykrita").mkdir(parents=True)
    (fake_home / ".config/kritarc").write_text("[General]\nx=1\n")
    before = snapshot(fake_home)

    gimp = install.discovery.find_gimp_targets(programs=[], flatpak_check=quiet_flatpak)
    krita = install.discovery.find_krita_targets(programs=[], flatpak_check=quiet_flatpak)
    plan = make_test_plan(fake_home, fake_sources(tmp_path), gimp, krita, pin="/usr/bin/python3")
    manifest = install.manifest.Manifest(install.paths.manifest_path())
    install.manifest.make_dirs(manifest.path.parent, manifest)
    place_everything(plan, manifest)

    main = gimp_root / "plug-ins/fbcnn_gimp/fbcnn_gimp.py"
    assert os.access(main, os.X_OK)
    assert (gimp_root / "plug-ins/fbcnn_gimp/fbcnn_frontend/client.py").read_text() == "# client v1\n"
    assert not (gimp_root / "plug-ins/fbcnn_gimp/__pycache__").exists()
    assert (gimp_root / "interpreters/python3.interp").read_text() == "python3=/usr/bin/python3\n"
    assert (krita_root / "pykrita/fbcnn_krita.desktop").is_file()
    assert (krita_root / "pykrita/fbcnn_krita/fbcnn_frontend/client.py").is_file()
    assert "enable_fbcnn_krita=true" in (fake_home / ".config/kritarc").read_text()
    cfg = json.loads(install.paths.frontend_config_path().read_text())
    assert cfg["python"] == str(plan.venv / "bin/python") and cfg["flatpak_spawn"] is False
    assert cfg["core_path"] == str(plan.venv / "site")

    # GIMP and Python later drop caches into our plug-in folders: still ours to remove.
    (gimp_root / "plug-ins/fbcnn_gimp/__pycache__").mkdir()
    (gimp_root / "plug-ins/fbcnn_gimp/__pycache__/fbcnn_gimp.cpython-313.pyc").write_bytes(b"x")
    (gimp_root / "plug-ins/fbcnn_gimp/fbcnn_frontend/__pycache__").mkdir()
    (gimp_root / "plug-ins/fbcnn_gimp/fbcnn_frontend/__pycache__/client.cpython-313.pyc").write_bytes(b"x")
    assert install.main.main(["--uninstall"]) == 0
    assert snapshot(fake_home) == before


def test_uninstall_keeps_folders_that_gained_foreign_files(fake_home, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "linux")
    krita = install.discovery.find_krita_targets(programs=["/usr/bin/krita"], flatpak_check=quiet_flatpak)
    plan = make_test_plan(fake_home, fake_sources(tmp_path), [], krita)
    manifest = install.manifest.Manifest(install.paths.manifest_path())
    install.manifest.make_dirs(manifest.path.parent, manifest)
    place_everything(plan, manifest)
    # Krita starts and writes its resource database into the folder we created.
    (fake_home / ".local/share/krita/resourcecache.sqlite").write_text("db")
    assert install.main.main(["--uninstall"]) == 0
    assert (fake_home / ".local/share/krita/resourcecache.sqlite").read_text() == "db"
    assert not (fake_home / ".local/share/krita/pykrita").exists()
    assert not (fake_home / ".config/kritarc").exists()
    assert not install.paths.manifest_path().exists()
    assert "kept" in capsys.readouterr().out


def test_rerun_upgrades_and_keeps_the_first_kritarc_value(fake_home, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    (fake_home / ".config/GIMP/3.0").mkdir(parents=True)
    (fake_home / ".local/share/krita").mkdir(parents=True)
    (fake_home / ".config/kritarc").write_text("[python]\nenable_fbcnn_krita=false\n")
    before = snapshot(fake_home)
    gimp = install.discovery.find_gimp_targets(programs=[], flatpak_check=quiet_flatpak)
    krita = install.discovery.find_krita_targets(programs=[], flatpak_check=quiet_flatpak)

    manifest = install.manifest.Manifest(install.paths.manifest_path())
    install.manifest.make_dirs(manifest.path.parent, manifest)
    place_everything(make_test_plan(fake_home, fake_sources(tmp_path, "1"), gimp, krita), manifest)

    manifest = install.manifest.Manifest.load(install.paths.manifest_path())
    assert manifest.exists()
    place_everything(make_test_plan(fake_home, fake_sources(tmp_path, "2"), gimp, krita), manifest)
    kdir = fake_home / ".local/share/krita/pykrita/fbcnn_krita"
    assert (kdir / "__init__.py").read_text() == "# v2\n"
    assert not (kdir / "only_in_v1.py").exists()  # stale files of the old version are gone
    assert (kdir / "only_in_v2.py").exists()
    assert (fake_home / ".config/GIMP/3.0/plug-ins/fbcnn_gimp/fbcnn_frontend/client.py").read_text() == "# client v2\n"
    data = json.loads(install.paths.manifest_path().read_text())
    assert data["kritarc"][str(fake_home / ".config/kritarc")]["previous"] == "false"
    assert len(data["trees"]) == len(set(data["trees"]))

    assert install.main.main(["--uninstall"]) == 0
    assert snapshot(fake_home) == before


def test_interp_file_of_the_user_is_left_alone(fake_home, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    root = fake_home / ".config/GIMP/3.0"
    (root / "interpreters").mkdir(parents=True)
    (root / "interpreters/python3.interp").write_text("python3=/opt/mine/python3\n")
    gimp = install.discovery.find_gimp_targets(programs=[], flatpak_check=quiet_flatpak)
    plan = make_test_plan(fake_home, fake_sources(tmp_path), gimp, [], pin="/usr/bin/python3")
    manifest = install.manifest.Manifest(install.paths.manifest_path())
    notes = install.placing.install_gimp(gimp[0], plan, manifest)
    assert (root / "interpreters/python3.interp").read_text() == "python3=/opt/mine/python3\n"
    assert any("left" in n for n in notes)
    assert str(root / "interpreters/python3.interp") not in manifest.data["files"]


def test_uninstall_without_manifest_is_a_no_op(fake_home, monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "linux")
    before = snapshot(fake_home)
    assert install.main.main(["--uninstall"]) == 0
    assert "Nothing to uninstall" in capsys.readouterr().out
    assert snapshot(fake_home) == before


# ------------------------------------------------------------------ --dev: links instead of copies

def test_dev_links_the_plugins_so_an_edit_is_live_and_uninstall_leaves_the_checkout(
        fake_home, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    (fake_home / ".config/GIMP/3.0").mkdir(parents=True)
    (fake_home / ".local/share/krita").mkdir(parents=True)
    sources = fake_sources(tmp_path)
    (sources["krita_desktop"].parent / "Manual.html").write_text("manual\n")
    checkout = tmp_path / "src1"
    before, before_checkout = snapshot(fake_home), snapshot(checkout)
    gimp = install.discovery.find_gimp_targets(programs=[], flatpak_check=quiet_flatpak)
    krita = install.discovery.find_krita_targets(programs=[], flatpak_check=quiet_flatpak)
    plan = make_test_plan(fake_home, sources, gimp, krita)
    plan.dev = True
    manifest = install.manifest.Manifest(install.paths.manifest_path())
    install.manifest.make_dirs(manifest.path.parent, manifest)
    notes = install.placing.install_gimp(gimp[0], plan, manifest)
    install.placing.install_krita(krita[0], plan, manifest)
    install.placing.write_frontend_configs(plan, plan.venv / "bin/python", str(checkout), manifest)
    manifest.save()

    gdir, kdir = gimp[0].plugin_dir, krita[0].plugin_dir
    assert gdir.is_symlink() and gdir.resolve() == sources["gimp"].resolve()
    assert kdir.is_symlink() and kdir.resolve() == sources["krita_dir"].resolve()
    # Python runs a plug-in from its real folder: the front-end package is linked in
    # there (git ignores the name), and so is Krita's manual.
    assert (sources["gimp"] / "fbcnn_frontend").is_symlink()
    assert (gdir / "fbcnn_frontend/client.py").read_text() == "# client v1\n"
    assert (kdir / "fbcnn_frontend/client.py").read_text() == "# client v1\n"
    assert (kdir / "Manual.html").read_text() == "manual\n"
    assert (kdir.parent / "fbcnn_krita.desktop").is_file()
    # The checkout's files are not made executable behind the developer's back: said instead.
    assert not os.access(sources["gimp"] / "fbcnn_gimp.py", os.X_OK)
    assert any("chmod +x it in the checkout" in n for n in notes)
    assert install.paths.frontend_config_path().is_file()
    links = json.loads(install.paths.manifest_path().read_text())["links"]
    assert sorted(links) == sorted(map(str, (
        gdir, kdir, sources["gimp"] / "fbcnn_frontend", sources["krita_dir"] / "fbcnn_frontend",
        sources["krita_dir"] / "Manual.html")))

    # An edit in the checkout is what the editors load.
    (sources["frontend"] / "client.py").write_text("# client edited\n")
    (sources["krita_dir"] / "__init__.py").write_text("# edited\n")
    assert (gdir / "fbcnn_frontend/client.py").read_text() == "# client edited\n"
    assert (kdir / "__init__.py").read_text() == "# edited\n"
    (sources["frontend"] / "client.py").write_text("# client v1\n")
    (sources["krita_dir"] / "__init__.py").write_text("# v1\n")

    # A re-run keeps the links; nothing is recorded twice.
    manifest = install.manifest.Manifest.load(install.paths.manifest_path())
    place_everything(plan, manifest)
    assert gdir.is_symlink()
    assert len(manifest.data["links"]) == len(set(manifest.data["links"])) == 5

    assert install.main.main(["--uninstall"]) == 0
    assert snapshot(fake_home) == before
    assert snapshot(checkout) == before_checkout  # the links are gone, the files they named are not


def test_a_plain_rerun_after_dev_copies_again_and_uninstall_still_cleans_up(fake_home, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    (fake_home / ".config/GIMP/3.0").mkdir(parents=True)
    sources = fake_sources(tmp_path)
    before, before_checkout = snapshot(fake_home), snapshot(tmp_path / "src1")
    gimp = install.discovery.find_gimp_targets(programs=[], flatpak_check=quiet_flatpak)
    plan = make_test_plan(fake_home, sources, gimp, [])
    plan.dev = True
    manifest = install.manifest.Manifest(install.paths.manifest_path())
    install.manifest.make_dirs(manifest.path.parent, manifest)
    place_everything(plan, manifest)
    assert gimp[0].plugin_dir.is_symlink()
    plan.dev = False
    place_everything(plan, install.manifest.Manifest.load(install.paths.manifest_path()))
    gdir = gimp[0].plugin_dir
    assert gdir.is_dir() and not gdir.is_symlink()
    assert not (gdir / "fbcnn_frontend").is_symlink() and (gdir / "fbcnn_frontend/client.py").is_file()
    assert os.access(gdir / "fbcnn_gimp.py", os.X_OK)
    assert install.main.main(["--uninstall"]) == 0
    assert snapshot(fake_home) == before
    assert snapshot(tmp_path / "src1") == before_checkout


def test_dev_copies_where_symbolic_links_cannot_be_made(fake_home, tmp_path, monkeypatch, capsys):
    """Windows without the symlink privilege: a clear line, then the plain copy."""
    monkeypatch.setattr(sys, "platform", "linux")
    (fake_home / ".local/share/krita").mkdir(parents=True)
    sources = fake_sources(tmp_path)
    before_checkout = snapshot(tmp_path / "src1")

    def refuse(self, target, target_is_directory=False):
        raise OSError(1314, "A required privilege is not held by the client")
    monkeypatch.setattr(Path, "symlink_to", refuse)
    krita = install.discovery.find_krita_targets(programs=[], flatpak_check=quiet_flatpak)
    plan = make_test_plan(fake_home, sources, [], krita)
    plan.dev = True
    manifest = install.manifest.Manifest(install.paths.manifest_path())
    notes = install.placing.install_krita(krita[0], plan, manifest)
    out = capsys.readouterr().out
    assert "cannot make symbolic links here" in out and "copying instead" in out
    kdir = krita[0].plugin_dir
    assert kdir.is_dir() and not kdir.is_symlink() and (kdir / "fbcnn_frontend/client.py").is_file()
    assert notes[0].endswith(f"files in {kdir.parent}")
    assert manifest.data["links"] == [] and str(kdir) in manifest.data["trees"]
    assert snapshot(tmp_path / "src1") == before_checkout


def test_dev_installs_the_project_editable(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "core").mkdir(parents=True)
    (repo / "fbcnn_editors.egg-info").mkdir()  # from before: not ours
    monkeypatch.setattr(install.worker_env, "REPO", repo)
    cmds = []

    def pip(cmd, env=None, cwd=None):
        cmds.append([str(c) for c in cmd])
        (repo / "build").mkdir()
        return 0
    monkeypatch.setattr(install.worker_env, "run_shown", pip)
    monkeypatch.setattr(install.worker_env, "can_build_in_place", lambda vpy, editable=False: editable)
    monkeypatch.setattr(install.worker_env, "installed_core", lambda vpy: (str(repo), None))
    manifest = install.manifest.Manifest(tmp_path / "m.json")
    assert install.worker_env.install_project(Path("/v/bin/python"), manifest, dev=True) == str(repo)
    assert cmds == [["/v/bin/python", "-m", "pip", "install", "--disable-pip-version-check",
                     "--no-cache-dir", "--no-build-isolation", "-e", str(repo)]]
    # What pip's build left in the checkout is removed on uninstall; what was there stays.
    assert manifest.data["trees"] == [str(repo / "build")]
    monkeypatch.setattr(install.worker_env, "installed_core", lambda vpy: (str(tmp_path / "else"), None))
    shutil.rmtree(repo / "build")
    with pytest.raises(SystemExit, match="not from this checkout"):
        install.worker_env.install_project(Path("/v/bin/python"), manifest, dev=True)


def test_dev_dry_run_names_the_links_and_the_editable_install(tmp_path):
    home = tmp_path / "home"
    (home / ".config/GIMP/3.0").mkdir(parents=True)
    p = run_installer(["--dry-run", "--dev", "--no-krita"], home)
    assert p.returncode == 0, p.stdout
    assert f"pip install -e {ROOT} (--dev: the worker runs this checkout's core)" in p.stdout
    assert f"{home}/.config/GIMP/3.0/plug-ins/fbcnn_gimp  (linked to the checkout)" in p.stdout
    assert "--dev" in run_installer(["--help"], home).stdout


# ------------------------------------------------------------------ the self-check and the venv's fbcnn command

def test_self_check_pieces():
    """install/self_check.py is a script, and importable: its sample is blocky, and a
    blocky picture scores higher than a smooth one."""
    from install import self_check
    px = self_check.sample()
    assert len(px) == self_check.W * self_check.H * 3
    smooth = bytes(v for y in range(self_check.H) for x in range(self_check.W)
                   for v in (40 + 2 * x, 60 + 3 * y, 200 - x - y))
    assert self_check.blockiness(px) > 1.0 > abs(self_check.blockiness(smooth))


@pytest.fixture
def placed_client(tmp_path, monkeypatch):
    """The front-end package placed as a plug-in has it, and a frontend.json that starts
    the worker from this checkout."""
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    frontend = install.placing.place_frontend(ROOT / "core" / "frontend", plugin)
    config = tmp_path / "frontend.json"
    config.write_text(json.dumps({"python": sys.executable, "core_path": str(ROOT)}))
    monkeypatch.setenv("FBCNN_FRONTEND_CONFIG", str(config))
    return frontend


def test_self_check_restores_the_sample_through_the_placed_client(placed_client, capsys):
    res = install.doctor.run_self_check(placed_client, sys.executable, timeout=300)
    assert res["ok"], res
    assert res["client"] == str(placed_client / "client.py")
    assert res["result"]["model"] == "compact" and res["result"]["qf_used"] == 20
    assert res["blockiness_after"] < res["blockiness_before"] and res["psnr_vs_input"] >= 25
    assert not list(placed_client.rglob("__pycache__"))  # -B: nothing left in the plug-in folder
    install.doctor.print_self_check(res)
    assert "  result  PASSED" in capsys.readouterr().out.splitlines()


def test_self_check_failures_say_why(placed_client, tmp_path, monkeypatch):
    monkeypatch.setenv("FBCNN_FRONTEND_CONFIG", str(tmp_path / "absent.json"))
    res = install.doctor.run_self_check(placed_client, sys.executable, timeout=60)
    assert res["ok"] is False and "not set up" in res["error"] and "absent.json" in res["error"]
    res = install.doctor.run_self_check(placed_client, str(tmp_path / "no-python"), timeout=60)
    assert res["ok"] is False and res["error"].startswith("self-check did not run")


@pytest.fixture(scope="module")
def linked_venv(tmp_path_factory):
    """A venv that imports this checkout's core and the test Python's packages through a
    .pth file: what the installer's `fbcnn` calls run in, without a pip install."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "v")], check=True)
    vpy = install.paths.venv_python(root / "v")
    import site
    install.worker_env.link_site(vpy, "\n".join([str(ROOT), *site.getsitepackages()]))
    return vpy


def test_venv_info_is_the_venvs_fbcnn_models_json(linked_venv, tmp_path, monkeypatch):
    import torch
    monkeypatch.setenv("FBCNN_MODEL_DIR", str(tmp_path / "models"))
    info = install.worker_env.venv_info(linked_venv)
    assert info["python"] == str(linked_venv) and info["core_path"] == str(ROOT)
    assert info["torch"] == torch.__version__ and info["cuda_build"] == torch.version.cuda
    assert info["model_dir"] == str(tmp_path / "models")
    assert info["models"]["compact"]["state"] == "bundled"
    assert info["models"]["fbcnn_color"] == {"state": "missing", "bundled": False,
                                             "path": str(tmp_path / "models" / "fbcnn_color.pth")}
    assert install.worker_env.installed_core(linked_venv) == (str(ROOT), None)
    # Before the project is installed, the venv's torch is read without core.
    have = install.worker_env.venv_torch(linked_venv)
    assert have["torch"] == torch.__version__ and have["torch_file"] == torch.__file__
    assert install.torch_choice.venv_torch_fits("cpu", have)[0]
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    path, why = install.worker_env.installed_core(install.paths.venv_python(bare))
    assert path is None and "No module named 'core'" in why
    assert "No module named core" in install.worker_env.venv_info(install.paths.venv_python(bare))["error"]


def test_download_models_runs_fbcnn_download_from_the_mirror(linked_venv, tmp_path, monkeypatch, capfd):
    """A file that fails its sha256 is refused: the problem is reported, nothing is kept."""
    import http.server
    import threading

    class Wrong(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"junk")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Wrong)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("FBCNN_MODEL_DIR", str(tmp_path / "models"))
    plan = make_test_plan(tmp_path, {}, [], [])
    plan.models, plan.url_base = ["fbcnn_gray"], f"http://127.0.0.1:{srv.server_address[1]}/m"
    manifest = install.manifest.Manifest(tmp_path / "m.json")
    try:
        info = install.worker_env.venv_info(linked_venv)
        problems = install.worker_env.download_models(linked_venv, plan, manifest, info)
    finally:
        srv.shutdown()
    out = capfd.readouterr()
    assert problems == ["model fbcnn_gray could not be downloaded (see above)"]
    assert f"-I -m core download fbcnn_gray --url-base {plan.url_base}" in out.out
    assert "sha256" in out.err and f"{plan.url_base}/fbcnn_gray.pth" in out.err
    assert not (tmp_path / "models" / "fbcnn_gray.pth").exists()
    assert str(tmp_path / "models") in manifest.data["dirs"]


# ------------------------------------------------------------------ what the installer may import

def test_the_installer_imports_only_the_standard_library():
    """It runs on a bare Python: no torch, numpy or core, at any level of any module."""
    for path in [ROOT / "installer.py", *sorted((ROOT / "install").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "install", (path.name, name)
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "import install.main, install.doctor, install.self_check\n"
            "install.paths.frontend_config_path()\n"
            "print(sorted(m for m in ('torch', 'numpy', 'core') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-I", "-c", code, str(ROOT)], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_installer_is_not_part_of_the_pip_distribution(tmp_path):
    tomllib = pytest.importorskip("tomllib")
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert cfg["tool"]["setuptools"]["packages"] == ["core", "core.frontend"]
    staged = install.worker_env.stage_project(tmp_path)
    assert (staged / "core" / "cli.py").is_file() and not (staged / "install").exists()


# ------------------------------------------------------------------ the real script: dry-run, Python 3.9

def run_installer(args, home, python=sys.executable, extra_env=None, timeout=300):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XDG_", "FBCNN_", "GIMP3_")) and k not in ("APPDATA", "LOCALAPPDATA")}
    env["HOME"] = str(home)
    env.update(extra_env or {})
    return subprocess.run([python, str(ROOT / "installer.py"), *args], env=env, cwd=str(home),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path):
    home = tmp_path / "home"
    (home / ".config/GIMP/3.0").mkdir(parents=True)
    (home / ".var/app/org.kde.krita/data/krita").mkdir(parents=True)
    (home / ".config/kritarc").parent.mkdir(parents=True, exist_ok=True)
    (home / ".config/kritarc").write_text("[General]\nx=1\n")
    before = snapshot(home)
    p = run_installer(["--dry-run", "--gimp-dir", str(home / "extra-profile"), "--models", "gray"], home)
    assert p.returncode == 0, p.stdout
    out = p.stdout
    assert "Dry run: nothing was changed." in out
    assert str(home / ".config/GIMP/3.0/plug-ins/fbcnn_gimp") in out
    assert str(home / "extra-profile/plug-ins/fbcnn_gimp") in out
    assert str(home / ".var/app/org.kde.krita/data/krita/pykrita/fbcnn_krita") in out
    assert str(home / ".var/app/org.kde.krita/config/kritarc") in out
    assert str(home / ".var/app/org.kde.krita/config/fbcnn/frontend.json") in out
    assert "flatpak override --user --talk-name=org.freedesktop.Flatpak org.kde.krita" in out
    assert "fbcnn_gray" in out and "torch" in out
    assert snapshot(home) == before
    assert not (home / "extra-profile").exists()


def test_source_is_python39_syntax():
    for path in [ROOT / "installer.py", *sorted((ROOT / "install").glob("*.py"))]:
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


PY39 = Path("/root/.pyenv/versions/3.9.18/bin/python3.9")


@pytest.mark.skipif(not PY39.exists(), reason="no Python 3.9 on this machine")
def test_runs_under_python39_without_torch(tmp_path):
    """Python 3.9 without torch: the plan says torch comes from the CPU index, not reuse."""
    home = tmp_path / "home"
    home.mkdir()
    p = run_installer(["--dry-run", "--no-gimp", "--no-krita", "--torch", "cpu"], home, python=str(PY39))
    assert p.returncode == 0, p.stdout
    assert "the base Python has no torch: pip installs torch from https://download.pytorch.org/whl/cpu" in p.stdout
    assert list(home.iterdir()) == []
    p = run_installer(["--help"], home, python=str(PY39))
    assert p.returncode == 0 and "--uninstall" in p.stdout


def test_flatpak_hosts_get_their_own_spawning_config(fake_home, tmp_path, monkeypatch):
    """Inside the sandbox the client reads ~/.var/app/APP/config/fbcnn/frontend.json and
    must start the worker with flatpak-spawn --host; the native config must not."""
    monkeypatch.setattr(sys, "platform", "linux")
    (fake_home / ".var/app/org.gimp.GIMP/config/GIMP/3.0").mkdir(parents=True)
    (fake_home / ".config/GIMP/3.0").mkdir(parents=True)
    args = install.main.parse_args(["--no-download", "--no-krita"])
    monkeypatch.setattr(install.discovery, "gimp_programs", lambda: [])
    plan = install.plan.make_plan(args, probes=FakeProbes(base=CPU_TORCH))
    assert [(t.kind, t.flatpak_app) for t in plan.gimp] == [("native", None), ("flatpak", "org.gimp.GIMP")]
    assert plan.configs == [(fake_home / ".config/fbcnn/frontend.json", False),
                            (fake_home / ".var/app/org.gimp.GIMP/config/fbcnn/frontend.json", True)]
    assert plan.flatpak_commands == [
        "flatpak override --user --talk-name=org.freedesktop.Flatpak org.gimp.GIMP"]
    plan.sources = fake_sources(tmp_path)
    plan.gimp_pin = "/usr/bin/python3"
    manifest = install.manifest.Manifest(install.paths.manifest_path())
    place_everything(plan, manifest)
    flat = json.loads((fake_home / ".var/app/org.gimp.GIMP/config/fbcnn/frontend.json").read_text())
    native = json.loads((fake_home / ".config/fbcnn/frontend.json").read_text())
    assert flat["flatpak_spawn"] is True and native["flatpak_spawn"] is False
    assert flat["python"] == native["python"]  # a host path: flatpak-spawn runs it on the host
    # The sandbox has its own Python with gi: no interpreter pin in the Flatpak profile.
    assert not (fake_home / ".var/app/org.gimp.GIMP/config/GIMP/3.0/interpreters").exists()
    assert (fake_home / ".config/GIMP/3.0/interpreters/python3.interp").is_file()


def test_summary_names_what_went_where(fake_home, monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "linux")
    plan = make_test_plan(fake_home, {}, [], [])
    plan.flatpak_commands = ["flatpak override --user --talk-name=org.freedesktop.Flatpak org.kde.krita"]
    plan.krita = [install.discovery.Target("krita", "native", fake_home / "k", kritarc=fake_home / "rc")]
    info = {"torch": "2.13.0+cpu", "cuda": False,
            "models": {"compact": {"state": "bundled", "path": "/x/fbcnn_compact.pth"},
                       "fbcnn_color": {"state": "missing", "path": "/m/fbcnn_color.pth"}}}
    check = {"ok": True, "hello": {"default_device": "cpu"}}
    install.main.print_summary(plan, {"installed": ["Krita  /k/pykrita/fbcnn_krita"], "problems": []},
                            info, check, None)
    out = capsys.readouterr().out
    assert "FBCNN installed" in out and "Krita  /k/pykrita/fbcnn_krita" in out
    assert "Device: CPU only (torch 2.13.0+cpu)" in out
    assert "compact            present, verified (bundled)" in out
    assert "fbcnn_color        not downloaded" in out
    assert "Self-check: passed" in out
    assert "flatpak override --user --talk-name=org.freedesktop.Flatpak org.kde.krita" in out
    assert "Open Krita -> Filter -> Remove JPEG Artifacts..." in out


def test_base_interpreter_of_a_venv_is_its_base(tmp_path):
    """Run from a venv, the venv the installer makes sits on the base Python: probe that one."""
    venv = tmp_path / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    # The tests may themselves run in a venv (tests/run.sh makes one): its base, then.
    ours = sys.executable if sys.prefix == sys.base_prefix else sys._base_executable
    base = install.worker_env.base_interpreter(str(vpy))
    assert Path(base).resolve() == Path(ours).resolve()
    assert install.worker_env.base_interpreter(sys.executable) == ours


def test_macos_app_bundles_are_found_with_their_versions(fake_home, monkeypatch):
    import plistlib
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("PATH", "/nonexistent")
    apps = fake_home / "Applications"
    for app, exe, version in (("GIMP.app", "gimp", "3.0.4"), ("krita.app", "krita", "5.2.9")):
        macos = apps / app / "Contents" / "MacOS"
        macos.mkdir(parents=True)
        (macos / exe).write_text("")
        with open(apps / app / "Contents" / "Info.plist", "wb") as f:
            plistlib.dump({"CFBundleShortVersionString": version}, f)
    gimp = install.discovery.gimp_programs()
    krita = install.discovery.krita_programs()
    assert gimp == [str(apps / "GIMP.app/Contents/MacOS/gimp")]
    assert krita == [str(apps / "krita.app/Contents/MacOS/krita")]
    assert install.discovery.program_version(gimp[0]) == "3.0.4"
    assert install.discovery.program_version(krita[0]) == "5.2.9"
    # GIMP 3 installed but never started, and no 2.10 profile: the profile is created.
    targets = install.discovery.find_gimp_targets(flatpak_check=quiet_flatpak)
    assert [(t.root, t.exists) for t in targets] == [
        (fake_home / "Library/Application Support/GIMP/3.0", False)]


def test_uninstall_dry_run_lists_and_changes_nothing(fake_home, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "linux")
    (fake_home / ".local/share/krita").mkdir(parents=True)
    krita = install.discovery.find_krita_targets(programs=[], flatpak_check=quiet_flatpak)
    manifest = install.manifest.Manifest(install.paths.manifest_path())
    install.manifest.make_dirs(manifest.path.parent, manifest)
    place_everything(make_test_plan(fake_home, fake_sources(tmp_path), [], krita), manifest)
    installed = snapshot(fake_home)
    assert install.main.main(["--uninstall", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove " + str(fake_home / ".local/share/krita/pykrita/fbcnn_krita") in out
    assert "would restore " + str(fake_home / ".config/kritarc") in out
    assert snapshot(fake_home) == installed


def test_check_reports_a_missing_install(fake_home, monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(install.discovery, "gimp_programs", lambda: [])
    monkeypatch.setattr(install.discovery, "krita_programs", lambda: [])
    before = snapshot(fake_home)
    assert install.doctor.check(install.main.parse_args(["--check"]), probes=FakeProbes()) == 1
    out = capsys.readouterr().out
    assert "frontend.json" in out and "Problems found:" in out and "again repairs" in out
    assert snapshot(fake_home) == before


def test_check_says_when_the_venvs_fbcnn_cannot_answer(fake_home, tmp_path, monkeypatch, capsys):
    """A venv whose core cannot answer `fbcnn models --json` (an install from before it):
    told to re-run the installer, not that torch is missing."""
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(install.discovery, "gimp_programs", lambda: [])
    monkeypatch.setattr(install.discovery, "krita_programs", lambda: [])
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "v")], check=True)
    vpy = install.paths.venv_python(tmp_path / "v")
    cfg = install.paths.frontend_config_path()
    cfg.parent.mkdir(parents=True)
    cfg.write_text(json.dumps({"python": str(vpy), "core_path": str(tmp_path)}))
    assert install.doctor.check(install.main.parse_args(["--check"]), probes=FakeProbes()) == 1
    out = capsys.readouterr().out
    assert f"`fbcnn models --json` does not run in the venv ({vpy}); re-run the installer" in out
    assert "torch does not import" not in out


def test_torch_install_command_per_choice(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    vpy = Path("/v/bin/python")
    cpu_venv = {"torch": "2.13.0+cpu", "cuda_build": None, "hip_build": None}
    assert install.torch_choice.venv_torch_fits("cpu", cpu_venv)[0]
    assert not install.torch_choice.venv_torch_fits("cuda", cpu_venv)[0]
    assert not install.torch_choice.venv_torch_fits("cpu", {})[0]
    assert install.torch_choice.venv_torch_fits("cuda", {"torch": "2.13.0+cu128", "cuda_build": "12.8"})[0]
    nv = (True, "12.8", "nvidia-smi sees a GPU")
    cuda = install.torch_choice.choose_torch("auto", None, "py", FakeProbes(nvidia=nv, base=CPU_TORCH))
    cmd = [str(c) for c in install.worker_env.torch_install_cmd(vpy, cuda, replacing=True)]
    assert cmd[:4] == [str(vpy), "-m", "pip", "install"]
    assert "torch>=2.0,<3" in cmd and "--no-cache-dir" in cmd
    assert cmd[cmd.index("--index-url") + 1] == "https://download.pytorch.org/whl/cu128"
    assert "--force-reinstall" in cmd and "--no-deps" not in cmd  # CUDA needs its nvidia-* deps
    monkeypatch.setattr(sys, "platform", "darwin")
    mps = install.torch_choice.choose_torch("auto", None, "py", FakeProbes(machine="arm64"))
    cmd = [str(c) for c in install.worker_env.torch_install_cmd(vpy, mps, replacing=False)]
    assert "--index-url" not in cmd and "--force-reinstall" not in cmd


@pytest.mark.parametrize("kind,platform", [("linux", "linux"), ("windows", "win32"),
                                           ("macos", "darwin")])
def test_installer_and_worker_agree_on_the_openvino_cache(monkeypatch, tmp_path, kind, platform):
    """Uninstall removes the worker's cache: both must name the same folder."""
    from core import openvino_runtime
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    monkeypatch.delenv("FBCNN_CACHE_DIR", raising=False)
    monkeypatch.setattr(install.paths, "os_kind", lambda: kind)
    monkeypatch.setattr(openvino_runtime.sys, "platform", platform)
    for xdg in (str(tmp_path / "xdg-cache"), "relative/ignored", None):
        if xdg is None:
            monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        else:
            monkeypatch.setenv("XDG_CACHE_HOME", xdg)
        monkeypatch.setattr(openvino_runtime.pathlib.Path, "home", lambda: tmp_path)
        assert install.paths.openvino_cache() == openvino_runtime.cache_dir(), (kind, xdg)
    monkeypatch.setenv("FBCNN_CACHE_DIR", str(tmp_path / "mine"))
    assert install.paths.openvino_cache() == openvino_runtime.cache_dir() == tmp_path / "mine" / "openvino"

#!/usr/bin/env python3
"""FBCNN for GIMP and Krita: one command from a fresh download to a working filter.

    python installer.py               install or upgrade (safe to run again)
    python installer.py --dry-run     print the plan, change nothing
    python installer.py --check       diagnose only
    python installer.py --uninstall   remove what the installer put in place

What an install does (see issue 6 and docs/contracts.md):
 1. a private virtual environment (per-user data dir, or --venv) with the right
    torch build (reusing a suitable torch that the base Python already has);
 2. this project installed into it (`pip install`, bundled compact model included);
 3. the official models asked for (--models), verified and resumable (core.weights);
 4. the GIMP 3 plug-in into every GIMP 3 profile found (+ --gimp-dir);
 5. the Krita plug-in into every pykrita folder found (+ --krita-dir), enabled in kritarc;
 6. frontend.json, which tells both plug-ins how to start the worker;
 7. Flatpak hosts: flatpak-spawn in their config, and the `flatpak override` to run once;
 8. a self-check through the very client file the plug-ins import.

Standard library only, any Python >= 3.9: this runs before anything else exists.
Everything it creates is written to a manifest, so --uninstall removes exactly that.
The installer is the package install/ beside this file (its modules: install/__init__.py).
`--dev` links the plug-ins to this checkout instead of copying them (edits are live).
"""
import os
import sys

if sys.version_info < (3, 9):  # pragma: no cover - the message is the whole point
    sys.exit("FBCNN's installer needs Python 3.9 or newer; this is " + sys.version.split()[0])
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # install/, even under python -I

from install.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

"""FBCNN's installer, as a package of standard-library modules (`python installer.py`
runs install.main). Nothing here imports torch, numpy or the project's `core`: the
installer runs on a bare Python before any of them exists.

    console       say/step, and running child programs (captured or shown)
    paths         the per-OS folders, the repo's sources, the venv's files
    manifest      what an install put in place, and the file operations that record it
    kritarc       Krita's Qt INI settings: enable the plug-in, restore the earlier value
    discovery     GIMP and Krita: programs, versions, profiles, install targets
    gimp_python   GIMP's python3 (the PATH pitfall) and its pin
    torch_choice  which torch build, from where, and whether a torch at hand is reused
    worker_env    the worker's Python: the venv, torch, the project, models
    placing       plug-ins, the front-end package and frontend.json into place
    self_check    a script the base Python runs: the worker through the plug-ins' client
    doctor        running the self-check, --check, what an install holds
    plan          the options turned into a plan, and its printout
    main          the command line: install, uninstall, check
"""

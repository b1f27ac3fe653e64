"""How a rule starts the built-in WASI runner: ``python -I -S wasmbinfmt/runners/wasi_start.py``.

The runner's Python must not read the program's environment (PYTHONHOME,
PYTHONPATH, PYTHONVERBOSE... belong to the program, and would break,
shadow or clutter the runner) and need not import ``site`` (most of a
Python start): so -I -S, and the directories it needs go on sys.path here:
our package's, found from where this file is, and the site-packages of the
venv the interpreter belongs to (without ``site``, sys.prefix is the base
Python's), or of the interpreter's own prefix. Run as a plain script (not
``-m``): under -I nothing else is on the path.
"""

import gc

# The runner imports thousands of objects, runs one module (no Python runs meanwhile but
# proc_exit) and leaves without teardown: collections would find nothing (~0.4 ms a start).
gc.disable()

import os  # noqa: E402
import sys  # noqa: E402

_prefix = os.path.dirname(os.path.dirname(sys.executable))
if not os.path.exists(os.path.join(_prefix, "pyvenv.cfg")):
    _prefix = sys.prefix
_version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
sys.path[:0] = [
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    os.path.join(_prefix, "lib", _version, "site-packages"),
    os.path.join(_prefix, "local", "lib", _version, "dist-packages"),  # Debian's pip
    os.path.join(_prefix, "lib", "python3", "dist-packages"),  # Debian's packages
]

from wasmbinfmt.runners.wasi import main  # noqa: E402 - the path first

main()

"""The compiled parts, optional: the inspection engine's (appliance/inspect/_fastpath.c) and
the splice of a diffed elements file (appliance/model/_splice.c).

Everything else is in pyproject.toml. ``pip install -e . --no-build-isolation`` builds the
extensions in place when a C compiler and Python's headers (gcc, python3-dev) are there; when
they are not, the install still succeeds and each runs its pure-Python twin.
``APPLIANCE_PURE_PYTHON=1`` leaves them out (the Debian package, architecture ``all``).
"""

import os

from setuptools import Extension, setup

FASTPATH = Extension(
    "appliance.inspect._fastpath",
    ["appliance/inspect/_fastpath.c"],
    extra_compile_args=["-O2", "-Wall", "-Wextra"],
    optional=True,  # a failed build is a warning: the Python twin runs instead
)
SPLICE = Extension(
    "appliance.model._splice",
    ["appliance/model/_splice.c"],
    extra_compile_args=["-O2", "-Wall", "-Wextra"],
    optional=True,  # a failed build is a warning: splice.py runs instead
)
PURE = os.environ.get("APPLIANCE_PURE_PYTHON") == "1"

setup(
    ext_modules=[] if PURE else [FASTPATH, SPLICE],
    exclude_package_data={
        "appliance.inspect": ["*.c", "*.so"],
        "appliance.model": ["*.c", "*.so"],
    },
)

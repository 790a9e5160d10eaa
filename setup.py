"""The compiled part of the inspection engine (appliance/inspect/_fastpath.c), optional.

Everything else is in pyproject.toml. ``pip install -e . --no-build-isolation`` builds the
extension in place when a C compiler and Python's headers (gcc, python3-dev) are there; when
they are not, the install still succeeds and the engine runs its pure-Python twin.
``APPLIANCE_PURE_PYTHON=1`` leaves it out (the Debian package, architecture ``all``).
"""

import os

from setuptools import Extension, setup

FASTPATH = Extension(
    "appliance.inspect._fastpath",
    ["appliance/inspect/_fastpath.c"],
    extra_compile_args=["-O2", "-Wall", "-Wextra"],
    optional=True,  # a failed build is a warning: the Python twin runs instead
)
PURE = os.environ.get("APPLIANCE_PURE_PYTHON") == "1"

setup(
    ext_modules=[] if PURE else [FASTPATH],
    exclude_package_data={"appliance.inspect": ["*.c", "*.so"]},
)

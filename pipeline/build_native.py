"""Compile the hot path (pipeline/native.py) in place with mypyc: `python -m pipeline.build_native`.

Make runs it after installing; it does nothing when the compiled modules are today's.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pipeline import native


def build() -> None:
    """Compile native.MODULES in place (nothing to do when the compiled ones are today's)."""
    modules = native.MODULES
    if native.built() == native.fingerprint() and all(native.extension(m).exists() for m in modules):
        print(f"ccpipe: compiled hot path up to date ({len(modules)} modules)")
        return
    import mypy.version  # noqa: PLC0415 - build-time dependencies (the dev extra)
    from mypyc.build import mypycify  # noqa: PLC0415
    from setuptools import Distribution  # noqa: PLC0415

    native.FINGERPRINT.unlink(missing_ok=True)
    for stale in native.PACKAGE.rglob("*.so"):  # every extension here is ours, and a module left
        stale.unlink()  # out of MODULES would still be found before its source
    os.chdir(native.ROOT)  # mypyc names modules by their paths from here
    print(f"ccpipe: compiling {len(modules)} modules with mypyc {mypy.version.__version__} (about 30 s)")
    paths = [str(native.source(module).relative_to(native.ROOT)) for module in modules]
    # (libraries without type information are Any here as in make lint, also where no
    # pyproject.toml is beside the sources, as in an installed package)
    extensions = mypycify(["--ignore-missing-imports", *paths], opt_level="3", group_name=native.GROUP)
    with tempfile.TemporaryDirectory(prefix="ccpipe-native-") as scratch:
        # A bare Distribution: setup() would read pyproject.toml, which is not a build recipe here.
        distribution = Distribution({"name": "ccpipe-native", "ext_modules": extensions})
        command = distribution.get_command_obj("build_ext")
        command.inplace = True
        command.build_temp = str(Path(scratch) / "temp")
        command.parallel = os.cpu_count() or 1
        distribution.run_command("build_ext")
    native.FINGERPRINT.write_text(native.fingerprint() + "\n")
    print(f"ccpipe: compiled hot path built ({len(modules)} modules)")


if __name__ == "__main__":
    build()

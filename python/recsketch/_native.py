"""Import of the compiled core, with an error that says what to do when it is missing."""

from __future__ import annotations

try:
    from . import _core
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "recsketch's native extension (recsketch._core) could not be imported. Build and "
        "install the package with `pip install .` from the source tree (importing from the "
        "source folder itself does not work)."
    ) from exc

__all__ = ["_core"]

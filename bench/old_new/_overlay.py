"""Import the previous build of recsketch instead of this worktree's when OLD_PKG is set.

OLD_PKG names a directory holding a built `recsketch` package (for example
`git worktree add /tmp/old <commit> && pip install --no-deps --no-build-isolation --target
/tmp/old-pkg /tmp/old`, then OLD_PKG=/tmp/old-pkg). The editable install's import hook is
removed so that the directory wins. Import this module before recsketch.
"""
import os
import sys

if os.environ.get("OLD_PKG"):
    sys.meta_path = [m for m in sys.meta_path if "Redirect" not in type(m).__name__]
    sys.path.insert(0, os.environ["OLD_PKG"])

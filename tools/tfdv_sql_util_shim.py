"""Stand-in for `tfx_bsl.arrow.sql_util`, which tfx-bsl 1.21 removed and TFDV 1.16 imports.

TFDV uses it only for SQL-based slicing, which finetower does not use; anything that calls it
raises. Installed into the environment by install.sh with a `.pth` line, so every Python
process that imports TFDV (Beam workers included) finds it. It steps aside when the real
module exists (a tfx-bsl that still ships it, or TFX 1.21's declared set on a newer glibc).
"""

import importlib.abc
import importlib.machinery
import importlib.util
import sys

_NAME = "tfx_bsl.arrow.sql_util"


class _RemovedSqlUtil:
    def __getattr__(self, attr):
        if attr.startswith("__"):  # introspection (inspect, pickling) probes these
            raise AttributeError(attr)
        raise NotImplementedError(
            f"{_NAME}.{attr}: SQL-based slicing is not available with tfx-bsl 1.21 "
            "(the module was removed; finetower supplies only this stand-in)"
        )


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != _NAME:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = (
                finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            )
            if spec is not None:
                return spec  # the real module exists: use it
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__getattr__ = _RemovedSqlUtil().__getattr__


if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())

"""The environment a job sets before it starts a private local Ray (it never imports Ray itself).

`prepare_ray(address) -> joining`: whether the job joins a running cluster (`address`, or RAY_ADDRESS as
`ray job submit` sets it); when it does not, the environment for the local one it starts: keep the cluster on 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) and ask for
token authentication explicitly (RAY_AUTH_MODE=token). Token auth is what Ray 2.60 picks for a new local
cluster anyway, but when it picks it by default it warns on every run; said explicitly, Ray creates the
token silently. Ray reads RAY_AUTH_MODE when it is imported, so this only takes effect before `import ray`
(afterwards Ray keeps its default and its warning). A joined cluster keeps its own auth settings.
"""
from __future__ import annotations

import os
import sys

__all__ = ["prepare_ray"]


def prepare_ray(address: str | None) -> bool:
    if address or os.environ.get("RAY_ADDRESS"):
        return True
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if "ray" not in sys.modules:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    return False

"""The Lua scripts of the lease, the status board and the job records (loaded with
``register_script``)."""

from __future__ import annotations

from importlib import resources


def load(name: str) -> str:
    """The text of ``tasks/lua/<name>.lua``."""
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")

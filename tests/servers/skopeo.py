"""Run ``skopeo`` against loopback registries and OCI layouts.

Every call passes ``--insecure-policy``, so no ``/etc/containers/policy.json`` is
needed, and turns TLS verification off for ``docker://`` references (the test
registries speak plain HTTP; without it skopeo tries HTTPS even on 127.0.0.1).
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from tests.servers.util import require_binary, run_tool

#: Seconds a skopeo command may take before it is killed.
DEFAULT_TIMEOUT = 300.0


def skopeo(
    *args: str, timeout: float = DEFAULT_TIMEOUT, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``skopeo --insecure-policy ARGS...`` and return its captured output.

    Raises:
        MissingToolError: skopeo is not installed (run scripts/test).
        ToolError: with ``check=True``, a non-zero exit (message shows stdout/stderr).
    """
    return run_tool(
        [require_binary("skopeo"), "--insecure-policy", *args], timeout=timeout, check=check
    )


def skopeo_copy(
    src: str,
    dst: str,
    *args: str,
    preserve_digests: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``skopeo copy`` from ``src`` to ``dst`` (e.g. ``oci:DIR:TAG`` ->
    ``docker://127.0.0.1:PORT/repo:tag``).

    Adds ``--src-tls-verify=false`` / ``--dest-tls-verify=false`` for ``docker://``
    ends and, by default, ``--preserve-digests`` (otherwise skopeo re-compresses
    uncompressed layers and every digest changes). ``args`` go before ``src``, e.g.
    ``"--format", "v2s2"`` or ``"--all"``.
    """
    flags = ["copy", "-q"]
    if src.startswith("docker://"):
        flags.append("--src-tls-verify=false")
    if dst.startswith("docker://"):
        flags.append("--dest-tls-verify=false")
    if preserve_digests:
        flags.append("--preserve-digests")
    return skopeo(*flags, *args, src, dst, timeout=timeout, check=check)


def skopeo_inspect(ref: str, *args: str, raw: bool = False, config: bool = False) -> Any:
    """``skopeo inspect`` ``ref`` and return the parsed JSON.

    ``raw=True`` returns the manifest itself, ``config=True`` the image config.
    """
    flags = ["inspect"]
    if ref.startswith("docker://"):
        flags.append("--tls-verify=false")
    if raw:
        flags.append("--raw")
    if config:
        flags.append("--config")
    return json.loads(skopeo(*flags, *args, ref, timeout=60.0).stdout)

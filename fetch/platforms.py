"""Platforms (``os/arch[/variant]``), their normalisation and matching, after containerd's
``platforms`` package.

* :func:`parse` reads ``linux/arm64/v8``, ``linux/amd64``, ``arm64`` or ``linux`` and
  normalises aliases (``x86_64`` → ``amd64``, ``aarch64`` → ``arm64``, ``armhf`` →
  ``arm/v7``, ``i386`` → ``386``);
* :func:`host` is the platform of this machine;
* a :class:`Matcher` accepts a platform and ranks it (lower is better); ``arm/v7``
  also runs ``v6`` and ``v5``, ``arm64`` also runs ``arm64/v8`` (the default variant);
* :func:`select_manifests` picks the manifests of an index: the best match per
  requested platform, or all of them.

Specifiers are checked: an unknown operating system or architecture (Go's ``GOOS`` and
``GOARCH`` names, and the aliases above), or a variant the architecture does not have
(``amd64`` v1-v4, ``arm`` v5-v8, ``arm64`` v8/v9), is :class:`errdefs.InvalidArgument`,
as is a malformed one; nothing matching is :class:`errdefs.NotFound`, naming the
platforms there are (:func:`select_manifests`, :func:`check_platform`).
"""

from __future__ import annotations

import json
import platform as _stdlib_platform
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ingestq import errdefs
from ingestq.store.values import Descriptor

_COMPONENT = re.compile(r"[A-Za-z0-9_-]+")  # fullmatch: ``$`` accepts a trailing newline
_KNOWN_OS = frozenset(
    {
        "aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios",
        "js", "linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "windows", "zos",
    }
)  # fmt: skip
_KNOWN_ARCH = frozenset(
    {
        "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "loong64", "mips",
        "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc", "ppc64",
        "ppc64le", "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64", "wasm",
    }
)  # fmt: skip
#: The variants of the architectures that have them (after normalisation).
_VARIANTS = {
    "amd64": frozenset({"", "v2", "v3", "v4"}),
    "arm": frozenset({"v5", "v6", "v7", "v8"}),
    "arm64": frozenset({"", "v9"}),
}


@dataclass(frozen=True, order=True)
class Platform:
    """A normalised platform. ``variant`` is ``""`` when there is none."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""

    def __str__(self) -> str:
        parts = [self.os, self.architecture]
        if self.variant:
            parts.append(self.variant)
        return "/".join(parts)

    def to_oci(self) -> dict[str, str]:
        """The OCI ``platform`` object."""
        out = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        return out

    @classmethod
    def from_oci(cls, obj: Mapping[str, object]) -> Platform:
        """Normalise an OCI ``platform`` object (missing fields are empty)."""
        return normalize(
            cls(
                os=str(obj.get("os", "") or ""),
                architecture=str(obj.get("architecture", "") or ""),
                variant=str(obj.get("variant", "") or ""),
                os_version=str(obj.get("os.version", "") or ""),
            )
        )


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch in ("i386",):
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant in ("", "v1") else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if variant in ("", "8", "v8") else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
        return "arm", variant
    return arch, variant


def normalize(p: Platform) -> Platform:
    """``p`` with the os lower-cased and architecture aliases resolved."""
    arch, variant = _normalize_arch(p.architecture, p.variant)
    os_name = p.os.lower()
    if os_name == "macos":
        os_name = "darwin"
    return Platform(os_name, arch, variant, p.os_version)


def host() -> Platform:
    """The platform of this machine (``linux/amd64`` on an x86-64 Linux host)."""
    os_name = {"linux": "linux", "darwin": "darwin", "win32": "windows"}.get(
        sys.platform, sys.platform
    )
    machine = _stdlib_platform.machine() or "amd64"
    variant = ""
    if machine.lower().startswith("armv"):
        variant = "v" + machine[4]
        machine = "arm"
    return normalize(Platform(os_name, machine, variant))


def _checked(specifier: str, p: Platform) -> Platform:
    """``p`` when its os, architecture and variant are known, else InvalidArgument."""
    if p.os not in _KNOWN_OS:
        known = ", ".join(sorted(_KNOWN_OS))
        raise errdefs.InvalidArgument(
            f"{specifier!r}: unknown operating system {p.os!r} (one of {known})"
        )
    if p.architecture not in _KNOWN_ARCH:
        raise errdefs.InvalidArgument(
            f"{specifier!r}: unknown architecture {p.architecture!r} "
            f"(e.g. amd64, arm64, arm/v7, 386, ppc64le, s390x, riscv64)"
        )
    variants = _VARIANTS.get(p.architecture)
    if variants is not None and p.variant not in variants:
        allowed = ", ".join(v for v in sorted(variants) if v) or "none"
        raise errdefs.InvalidArgument(
            f"{specifier!r}: unknown variant {p.variant!r} of {p.architecture} "
            f"(variants: {allowed})"
        )
    return p


def parse(specifier: str) -> Platform:
    """Parse ``os[/arch[/variant]]`` or a bare ``os`` or ``arch``.

    A lone known OS name keeps the host's architecture; a lone architecture gets the
    host's OS (containerd's rule). InvalidArgument for empty or malformed parts, and for
    an os, architecture or variant that is not known (module docstring).
    """
    if not specifier or not isinstance(specifier, str):
        raise errdefs.InvalidArgument("platform specifier must not be empty")
    parts = specifier.split("/")
    if len(parts) > 3 or not all(_COMPONENT.fullmatch(part) for part in parts):
        raise errdefs.InvalidArgument(
            f"{specifier!r}: platform specifier must be os/arch[/variant]"
        )
    here = host()
    if len(parts) == 1:
        word = parts[0].lower()
        if word in _KNOWN_OS:
            return _checked(specifier, normalize(Platform(word, here.architecture, here.variant)))
        if normalize(Platform(here.os, word)).architecture not in _KNOWN_ARCH:
            raise errdefs.InvalidArgument(
                f"{specifier!r}: unknown operating system or architecture"
            )
        return _checked(specifier, normalize(Platform(here.os, word)))
    if len(parts) == 2:
        return _checked(specifier, normalize(Platform(parts[0], parts[1])))
    return _checked(specifier, normalize(Platform(parts[0], parts[1], parts[2])))


_ARM_ORDER = ("v8", "v7", "v6", "v5")


class Matcher:
    """Accepts platforms compatible with ``target`` and ranks them (0 = exact).

    Rules: the os and architecture must equal the target's; for ``arm`` a lower
    variant is accepted (``v7`` runs ``v6``, ``v5``), ranked by distance; for other
    architectures a missing variant on either side matches any variant.
    """

    def __init__(self, target: Platform) -> None:
        self.target = normalize(target)

    def rank(self, candidate: Platform) -> int | None:
        """None when ``candidate`` cannot run here; otherwise lower is better."""
        c, t = normalize(candidate), self.target
        if c.os != t.os or c.architecture != t.architecture:
            return None
        if c.variant == t.variant:
            return 0
        if t.architecture == "arm" and c.variant in _ARM_ORDER and t.variant in _ARM_ORDER:
            distance = _ARM_ORDER.index(c.variant) - _ARM_ORDER.index(t.variant)
            return distance if distance > 0 else None
        if not c.variant or not t.variant:
            return 1
        return None

    def match(self, candidate: Platform) -> bool:
        """Whether ``candidate`` can run on the target."""
        return self.rank(candidate) is not None

    def __repr__(self) -> str:
        return f"Matcher({self.target})"


def descriptor_platform(entry: Mapping[str, object]) -> Platform | None:
    """The platform of an index entry (its ``platform`` object), or None."""
    raw = entry.get("platform")
    if not isinstance(raw, Mapping):
        return None
    return Platform.from_oci(raw)


def select_manifests(
    entries: Sequence[Mapping[str, object]],
    platforms: Iterable[Platform] = (),
    *,
    all_platforms: bool = False,
) -> list[tuple[Descriptor, Platform | None]]:
    """Choose the manifests of an index.

    Args:
        entries: the index's ``manifests`` array (OCI descriptor objects).
        platforms: the wanted platforms; empty means :func:`host`.
        all_platforms: take every entry, in index order.

    Returns the chosen (descriptor, platform) pairs in index order, each once: for
    every wanted platform the best-ranked matching entry (the first of equals).
    Entries without a platform match any platform but rank last; entries whose
    platform is ``unknown/unknown`` (attestations) never match.

    Raises:
        errdefs.NotFound: a wanted platform has no match.
        errdefs.InvalidArgument: an entry is not a valid descriptor.
    """
    parsed = [(Descriptor.from_oci(entry), descriptor_platform(entry)) for entry in entries]
    if all_platforms:
        return parsed
    wanted = list(platforms) or [host()]
    chosen: set[int] = set()
    for target in wanted:
        matcher = Matcher(target)
        best: tuple[int, int] | None = None
        for i, (_desc, plat) in enumerate(parsed):
            if plat is None:
                rank = 100
            elif plat.os == "unknown" or plat.architecture == "unknown":
                continue
            else:
                r = matcher.rank(plat)
                if r is None:
                    continue
                rank = r
            if best is None or rank < best[0]:
                best = (rank, i)
        if best is None:
            available = ", ".join(str(p) for _, p in parsed if p is not None) or "none"
            raise errdefs.NotFound(
                f"no match for platform {target} in manifest (available: {available})",
                {"platform": str(target), "available": available},
            )
        chosen.add(best[1])
    return [parsed[i] for i in sorted(chosen)]


def config_platform(data: bytes) -> Platform | None:
    """The platform an image config (JSON) declares in its ``os``, ``architecture`` and
    ``variant``, or None when it is not a JSON object declaring both."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, Mapping):
        return None
    if not isinstance(doc.get("os"), str) or not isinstance(doc.get("architecture"), str):
        return None
    if not doc["os"] or not doc["architecture"]:
        return None
    return Platform.from_oci(doc)


def check_platform(what: str, have: Platform, platforms: Iterable[Platform]) -> None:
    """NotFound unless ``have`` (the only platform of an image: its config's) matches one
    of ``platforms`` (none: nothing to check). The message names the platform it has."""
    wanted = list(platforms)
    if wanted and not any(Matcher(t).match(have) for t in wanted):
        asked = ", ".join(str(t) for t in wanted)
        raise errdefs.NotFound(
            f"no match for platform {asked} in {what} (available: {have})",
            {"platform": asked, "available": str(have)},
        )


__all__ = [
    "Matcher",
    "Platform",
    "check_platform",
    "config_platform",
    "descriptor_platform",
    "host",
    "normalize",
    "parse",
    "select_manifests",
]

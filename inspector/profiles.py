"""NPU profiles as the app uses them: shipped ones, the user's own files, and the measured host.

``host`` is measured once by ``inspector profile-host`` (or the GUI) and cached as TOML in
the user's config folder, so later runs reuse the figures instead of re-measuring.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.fileio import write_text
from engine.npu import HOST, NpuProfile, load_profile, load_profile_file, measure_host_profile


def host_profile_path() -> Path:
    """Where the measured host profile is cached ($XDG_CONFIG_HOME/deployment-inspector/host.toml)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "deployment-inspector" / "host.toml"


def measure_and_cache_host(seconds_budget: float = 3.0, path: str | os.PathLike[str] | None = None) -> tuple[NpuProfile, Path]:
    """Measure this machine, write the profile atomically; returns it and where it went."""
    profile = measure_host_profile(seconds_budget)
    target = Path(path) if path is not None else host_profile_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text(target, profile.to_toml())
    return profile, target


def resolve_profile(name_or_path: str) -> NpuProfile:
    """A shipped profile by name, a .toml path, or ``host`` (the cached measurement if any,
    otherwise measured now and cached)."""
    if name_or_path == HOST:
        cached = host_profile_path()
        if cached.is_file():
            return load_profile_file(cached)
        return measure_and_cache_host()[0]
    return load_profile(name_or_path)

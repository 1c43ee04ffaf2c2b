"""Device profiles: calibration snapshots of real devices, shipped as JSON next to this module."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from adapters.errors import InvalidRequestError
from schemas.profile import DeviceProfile

PROFILE_DIR = Path(__file__).with_name("profiles")


def available_profiles() -> list[str]:
    """Names of the bundled device profiles, sorted."""
    return sorted(path.stem for path in PROFILE_DIR.glob("*.json"))


def load_profile(name: str) -> DeviceProfile:
    """The profile called `name`; an unknown name is an invalid request naming the allowed ones."""
    allowed = available_profiles()
    if name not in allowed:
        raise InvalidRequestError(
            f"unknown noise profile {name!r}; available: {', '.join(allowed) or '(none)'}"
        )
    return _load(name)


@lru_cache(maxsize=16)
def _load(name: str) -> DeviceProfile:
    return DeviceProfile.model_validate_json((PROFILE_DIR / f"{name}.json").read_text())


def profile_calibration(profile: DeviceProfile | None) -> dict[str, str] | None:
    """The calibration snapshot a noisy simulator reports: which profile, from where, when."""
    if profile is None:
        return None
    return {
        "profile": profile.name,
        "source": profile.source,
        "calibrated_at": profile.calibrated_at,
    }

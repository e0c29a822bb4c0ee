"""Module families as data: one Profile per family of the seed manuals."""

from __future__ import annotations

from .base import STANDARD_ERRORS, Profile
from .families import BC25, BG95, BG96, GENERIC, PROFILES, RG500U

__all__ = [
    "BC25", "BG95", "BG96", "GENERIC", "MODEL_NAMES", "PROFILES", "RG500U", "STANDARD_ERRORS",
    "Profile", "UnknownModel", "UnsupportedConfig", "detect", "get_profile",
]

#: the family names modem.model accepts (besides "auto"), in PROFILES order
MODEL_NAMES: tuple[str, ...] = tuple(PROFILES)


class UnknownModel(Exception):
    """The module named itself with a model no profile covers."""


class UnsupportedConfig(Exception):
    """The configuration asks for something the module family cannot do; str() is one line."""


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UnknownModel(
            f"unknown model {name!r}: set modem.model to one of {', '.join(PROFILES)} or \"auto\""
        ) from None


def detect(identification: str) -> Profile:
    """Pick the profile whose model names appear in AT+CGMM / ATI output."""
    text = identification.upper()
    for profile in PROFILES.values():
        if any(model in text for model in profile.models):
            return profile
    raise UnknownModel(
        f"module identifies as {identification.strip()!r}, which no profile covers; supported "
        f"families: {', '.join(f'{p.name} ({p.title})' for p in PROFILES.values())}; "
        "set modem.model to the closest family to force one"
    )

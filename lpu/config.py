"""Hardware presets: the description of a machine (isa.hw.Hardware) from a preset or a user's file.

A preset holds only independent parameters, nested like the hardware, with units in the key names
(lpu/presets/*.toml, where every value carries its source); the schema, its validation and every
derived value live in isa/hw.py, the one place the compiler, the timing model and the emulator read.
"""
from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path

from isa.hw import Hardware
from isa.errors import HardwareError as ConfigError

PRESETS = ("groqchip1", "lp30")
DEFAULT_PRESET = "groqchip1"



def from_dict(data: dict) -> Hardware:
    return Hardware.from_dict(data)


def load(spec: str | None = None, chips: int | None = None) -> Hardware:
    """A preset name (groqchip1, lp30) or a path to a .toml/.json file; optionally use its first `chips`
    chips (None: all of the system's)."""
    spec = spec or DEFAULT_PRESET
    if spec in PRESETS:
        text = resources.files("lpu.presets").joinpath(f"{spec}.toml").read_text()
        data, where = tomllib.loads(text), f"preset {spec}"
    else:
        p = Path(spec)
        if not p.is_file():
            raise ConfigError(f"--hw {spec}: not a preset ({', '.join(PRESETS)}) and not a readable file")
        try:
            raw = p.read_text()
            data = json.loads(raw) if p.suffix.lower() == ".json" else tomllib.loads(raw)
        except (ValueError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--hw {spec}: cannot parse ({str(exc).splitlines()[0]})") from None
        where = str(p)
    try:
        cfg = from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if chips is not None:
        cfg = cfg.with_chips(chips)
    return cfg


__all__ = ["ConfigError", "DEFAULT_PRESET", "PRESETS", "from_dict", "load"]

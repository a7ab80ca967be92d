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


def _read(path: Path, flag: str) -> dict:
    try:
        raw = path.read_text()
        return json.loads(raw) if path.suffix.lower() == ".json" else tomllib.loads(raw)
    except (ValueError, tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{flag} {path}: cannot parse ({str(exc).splitlines()[0]})") from None


TOPOLOGY_KEYS = ("links", "classes")
LINK_FORM = "[chip, port, chip, port] or [chip, port, chip, port, class]"


def topology_system(data: dict, where: str) -> dict:
    """The `system` table of an explicit topology from a user's topology file: `links`, a list of
    [chip, port, chip, port] or [chip, port, chip, port, class] (class "local" if not given), and
    optionally `classes`, a list of tables {name, hop_latency_cycles, bytes_per_cycle} (a figure left out
    or 0 is the chip's c2c figure). ConfigError names the entry at fault."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table with the keys {', '.join(TOPOLOGY_KEYS)}")
    unknown = sorted(set(data) - set(TOPOLOGY_KEYS))
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]}: unknown key; valid keys: {', '.join(TOPOLOGY_KEYS)}")
    links = data.get("links")
    if not isinstance(links, list) or not links:
        raise ConfigError(f"{where}: links: expected a non-empty list of {LINK_FORM}")
    out = []
    for i, ln in enumerate(links):
        ok = isinstance(ln, list) and len(ln) in (4, 5) and all(
            isinstance(x, int) and not isinstance(x, bool) for x in ln[:4]) and (len(ln) == 4 or isinstance(ln[4], str))
        if not ok:
            raise ConfigError(f"{where}: links[{i}] = {ln!r}: expected {LINK_FORM}")
        out.append({"a": ln[0], "a_port": ln[1], "b": ln[2], "b_port": ln[3], "cls": ln[4] if len(ln) == 5 else "local"})
    classes = data.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, dict) for c in classes):
        raise ConfigError(f"{where}: classes: expected a list of tables {{name, hop_latency_cycles, bytes_per_cycle}}")
    names = [c.get("name") for c in classes]
    dup = sorted({n for n in names if names.count(n) > 1 and isinstance(n, str)})
    if dup:
        raise ConfigError(f"{where}: classes: {dup[0]!r} is listed twice")
    return {"links": out, "link_classes": classes}


def load(spec: str | None = None, chips: int | None = None, topology: str | None = None) -> Hardware:
    """A preset name (groqchip1, lp30) or a path to a .toml/.json file; optionally use its first `chips`
    chips (None: all of the system's). `topology`: a topology file (see `topology_system`) that replaces
    the system's wiring, the chip kept; the system is then as many chips as the file's links name."""
    spec = spec or DEFAULT_PRESET
    if spec in PRESETS:
        text = resources.files("lpu.presets").joinpath(f"{spec}.toml").read_text()
        data, where = tomllib.loads(text), f"preset {spec}"
    else:
        p = Path(spec)
        if not p.is_file():
            raise ConfigError(f"--hw {spec}: not a preset ({', '.join(PRESETS)}) and not a readable file")
        data, where = _read(p, "--hw"), str(p)
    if topology is not None:
        t = Path(topology)
        if not t.is_file():
            raise ConfigError(f"--topology {topology}: not a readable file")
        where = f"--topology {topology}"
        system = {k: v for k, v in dict(data.get("system", {})).items()
                  if k in ("links_per_chip_pair",)} | topology_system(_read(t, "--topology"), where)
        links = system["links"]
        system.update(topology="explicit", links_per_chip_pair=system.get("links_per_chip_pair", 1),
                      chips=1 + max(max(ln["a"], ln["b"]) for ln in links))
        data = dict(data, system=system)
    try:
        cfg = from_dict(data)
    except ConfigError as exc:
        msg = str(exc).replace("system.link_classes", "classes") if topology is not None else str(exc)
        raise ConfigError(f"{where}: {msg}") from None
    if chips is not None:
        cfg = cfg.with_chips(chips)
    return cfg


__all__ = ["ConfigError", "DEFAULT_PRESET", "PRESETS", "from_dict", "load"]

"""Hardware configuration: independent parameters from a preset or a user's file, validated on load.

A config holds only independent parameters, nested like the hardware, with units in the key names
(see lpu/presets/*.toml, where every value carries its source). Every derived quantity is computed
here, in `Derived`, and nowhere else. The compiler and the program header use `HwConfig.to_dict()`;
isa/timing.py reads the same dict, so the program file carries the exact machine it was built for.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field, fields
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import get_type_hints


class ConfigError(ValueError):
    """A hardware configuration that is missing, malformed or out of range."""


PRESETS = ("groqchip1", "lp30")
DEFAULT_PRESET = "groqchip1"
TOPOLOGIES = ("fully_connected",)


@dataclass(frozen=True, slots=True)
class System:
    chips: int
    topology: str
    links_per_chip_pair: int


@dataclass(frozen=True, slots=True)
class Sram:
    hemispheres: int
    slices_per_hemisphere: int
    banks_per_slice: int
    bank_bytes: int
    access_bytes: int
    read_latency_cycles: int
    write_latency_cycles: int


@dataclass(frozen=True, slots=True)
class Streams:
    hop_cycles: int


@dataclass(frozen=True, slots=True)
class Mxm:
    planes: int
    plane_rows: int
    plane_cols: int
    fp16_planes_per_unit: int
    fp16_tile_rows: int
    install_bytes_per_cycle: int
    iw_cycles: int
    latency_cycles: int
    emit_cycles: int
    acc_slots: int


@dataclass(frozen=True, slots=True)
class VxmLatency:
    copy: int
    add: int
    mul: int
    exp: int
    tanh: int
    rsqrt: int
    recip: int


@dataclass(frozen=True, slots=True)
class Vxm:
    alus: int
    latency_cycles: VxmLatency


@dataclass(frozen=True, slots=True)
class SxmLatency:
    rotate: int
    permute: int


@dataclass(frozen=True, slots=True)
class Sxm:
    units: int
    latency_cycles: SxmLatency


@dataclass(frozen=True, slots=True)
class Mem:
    queues: int


@dataclass(frozen=True, slots=True)
class C2c:
    links: int
    link_bytes_per_cycle: float
    hop_latency_cycles: int
    deskew_interval_cycles: int
    deskew_cycles: int


@dataclass(frozen=True, slots=True)
class Icu:
    sync_cycles: int
    nop_max_repeat: int


@dataclass(frozen=True, slots=True)
class Chip:
    vector_lanes: int
    sram: Sram
    streams: Streams
    mxm: Mxm
    vxm: Vxm
    sxm: Sxm
    mem: Mem
    c2c: C2c
    icu: Icu


@dataclass(frozen=True)
class HwConfig:
    name: str
    clock_hz: int
    system: System
    chip: Chip

    # ------------------------------------------------------------------ derived values, one place
    @cached_property
    def banks(self) -> int:
        s = self.chip.sram
        return s.hemispheres * s.slices_per_hemisphere * s.banks_per_slice

    @cached_property
    def sram_bytes_per_chip(self) -> int:
        return self.banks * self.chip.sram.bank_bytes

    @cached_property
    def mxm_units(self) -> int:
        """fp16 matrix units per chip (planes paired for fp16)."""
        m = self.chip.mxm
        return m.planes // m.fp16_planes_per_unit

    @cached_property
    def links_per_chip_used(self) -> int:
        return (self.system.chips - 1) * self.system.links_per_chip_pair

    def with_chips(self, chips: int) -> "HwConfig":
        if not 1 <= chips <= 8:
            raise ConfigError(f"--chips {chips}: a node has 1..8 chips")
        return dataclasses.replace(self, system=dataclasses.replace(self.system, chips=chips))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------ checks
    def validate(self) -> "HwConfig":
        def need(cond, msg):
            if not cond:
                raise ConfigError(f"hardware config {self.name!r}: {msg}")

        need(self.clock_hz > 0, "clock_hz must be positive")
        sysm, chip = self.system, self.chip
        need(1 <= sysm.chips <= 8, f"system.chips = {sysm.chips}; a node has 1..8 chips")
        need(sysm.topology in TOPOLOGIES, f"system.topology = {sysm.topology!r}; valid: {', '.join(TOPOLOGIES)}")
        need(sysm.links_per_chip_pair >= 1, "system.links_per_chip_pair must be >= 1")
        need(chip.vector_lanes == 320, f"chip.vector_lanes = {chip.vector_lanes}; the instruction set is built for 320")
        need(self.links_per_chip_used <= chip.c2c.links,
             f"{sysm.chips} chips fully connected with {sysm.links_per_chip_pair} link(s) per pair need "
             f"{self.links_per_chip_used} links per chip; chip.c2c.links = {chip.c2c.links}")
        need(chip.mxm.planes % chip.mxm.fp16_planes_per_unit == 0, "mxm.planes must be a multiple of fp16_planes_per_unit")
        need(1 <= chip.mxm.fp16_tile_rows <= chip.mxm.plane_rows, "mxm.fp16_tile_rows must be in 1..plane_rows")
        need(chip.mxm.plane_cols == chip.vector_lanes, "mxm.plane_cols must equal vector_lanes")
        need(self.banks <= 1 << 16, "too many banks for the instruction encoding")
        for path, value in _leaves(self.to_dict()):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and path != "clock_hz":
                need(value >= 0, f"{path} = {value} must not be negative")
        need(chip.c2c.link_bytes_per_cycle > 0, "c2c.link_bytes_per_cycle must be positive")
        need(chip.sram.access_bytes > 0 and chip.sram.bank_bytes > 0, "sram sizes must be positive")
        return self


def _leaves(d, prefix=""):
    for k, v in d.items():
        p = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _leaves(v, p + ".")
        else:
            yield p, v


def _build(cls, data, path: str):
    """Construct a (nested) dataclass from a dict, naming any missing, unknown or mistyped key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a table of keys, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{path + '.' if path else ''}{unknown[0]}: unknown key; valid keys here: {', '.join(names)}")
    kwargs = {}
    for name in names:
        key = f"{path}.{name}" if path else name
        if name not in data:
            raise ConfigError(f"{key}: missing")
        typ, val = hints[name], data[name]
        if dataclasses.is_dataclass(typ):
            kwargs[name] = _build(typ, val, key)
        elif typ is int:
            if isinstance(val, bool) or not isinstance(val, int):
                raise ConfigError(f"{key} = {val!r}: expected an integer")
            kwargs[name] = val
        elif typ is float:
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise ConfigError(f"{key} = {val!r}: expected a number")
            kwargs[name] = float(val)
        elif typ is str:
            if not isinstance(val, str):
                raise ConfigError(f"{key} = {val!r}: expected a string")
            kwargs[name] = val
        else:  # pragma: no cover - schema bug
            raise ConfigError(f"{key}: unsupported type {typ}")
    return cls(**kwargs)


def from_dict(data: dict) -> HwConfig:
    return _build(HwConfig, data, "").validate()


def load(spec: str | None = None, chips: int | None = None) -> HwConfig:
    """A preset name (groqchip1, lp30) or a path to a .toml/.json file; optionally override the chip count."""
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

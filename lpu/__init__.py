"""LPU machine: hardware presets, the emulator, the decode driver and the `lpu` command."""

# The one place the version is written: setup.cfg reads it (attr: lpu.__version__), `lpu --version` prints it.
__version__ = "0.1.0"

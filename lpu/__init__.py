"""LPU machine: hardware presets, the emulator, the decode driver and the `lpu` command."""

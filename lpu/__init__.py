"""LPU machine: hardware presets, the emulator, the decode driver and the `lpu` command; and the Python API
(lpu/api.py): `lpu.compile(model, chips=8, hw="groqchip1") -> Program`, `lpu.load(path)`."""

# The one place the version is written: setup.cfg reads it (attr: lpu.__version__), `lpu --version` prints it.
__version__ = "0.1.0"

__all__ = ["__version__", "compile", "load", "default_model", "Program", "Decoded"]


def __getattr__(name):  # the API is imported on first use: `import lpu` stays as light as the version needs
    if name in ("compile", "load", "default_model", "Program", "Decoded"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'lpu' has no attribute {name!r}")

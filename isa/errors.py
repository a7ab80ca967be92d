"""Errors raised by the instruction set and the program container."""


class IsaError(ValueError):
    """An instruction or field that the instruction set cannot represent."""


class ProgramError(ValueError):
    """A program file that is malformed, corrupt or inconsistent."""


class HardwareError(IsaError):
    """A hardware description that is missing a key, malformed or out of range."""

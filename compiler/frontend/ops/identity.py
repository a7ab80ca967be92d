"""Identity: the input itself (no equation)."""
from ._base import OpSpec, identity_kv


OP = OpSpec("Identity", lambda node, args: [args[0]], lambda ctx, node, vals: [vals[0]], kv=identity_kv, t_ok=True)

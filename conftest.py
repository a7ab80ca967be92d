"""Every compile in the tests and benchmarks runs the verifiers between the compiler's passes (compiler/verify.py),
whatever the default is."""
import os

os.environ["LPU_VERIFY"] = "1"

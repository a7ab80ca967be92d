"""The compiler's passes after import: decomposition, partitioning, SRAM placement, lowering to
instructions, scheduling and the lower bound. `compiler.driver` runs them in order."""

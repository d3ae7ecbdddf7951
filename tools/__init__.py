"""Tools behind one async, batched interface (see tools.base)."""

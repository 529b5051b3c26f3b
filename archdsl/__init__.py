"""archdsl: a declarative architecture language and hardware-aware NAS engine for modern ConvNets."""

"""archdsl.search: hardware-aware architecture search (stage 6)."""

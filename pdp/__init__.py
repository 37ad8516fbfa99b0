"""pdp: a policy decision point. YAML policies with CEL conditions, decided in microseconds."""

__version__ = "0.1.0"

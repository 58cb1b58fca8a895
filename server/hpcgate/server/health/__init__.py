"""Health checking: background probes per system, and the gate that uses them."""

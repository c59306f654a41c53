"""Builtin tracer drivers (circuit-tracer, sae, activation-diff) and transcoder training."""

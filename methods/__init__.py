"""Pruning methods: one file per method, each a class decorated with ``@register_method("name")``.

The registry (benchmark.core.registry.method_registry) finds them by reading source, so this package
imports nothing on purpose.
"""

"""Pruning methods: one file per method, each a class decorated with ``@register_method("name")``.

The registry (benchmark.registry.method_registry) finds them by reading source, so this package
imports nothing on purpose.
"""

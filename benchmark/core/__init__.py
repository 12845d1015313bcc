"""The model of a run: presets and their validation, the registries, datasets, models, masks,
result files and provenance. Imports nothing from the other subpackages of ``benchmark``."""

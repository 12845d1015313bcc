"""The evaluation protocol: PGD, AutoAttack (pyautoattack), the ready-for-evaluation model, batch
sizes. Builds on ``benchmark.core`` and ``benchmark.runtime``."""

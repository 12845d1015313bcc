"""From a preset to jobs before any of them runs: the cost estimate and its calibration, the
machine checks, the gamma sweep's choice. Builds on ``core``; never imports results or publishing."""

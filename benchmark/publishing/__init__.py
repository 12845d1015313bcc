"""What leaves the machine: ``make publish`` and its checks, the static site, submissions, model
and RobustBench exports. The top layer: imports results, planning, training and core."""

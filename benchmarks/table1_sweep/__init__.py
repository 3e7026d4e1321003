"""Table 1: methods x Dirichlet alpha x seeds (x dataset), each method tuned on a validation split.

Protocol (the same for every preset and method):

1. **Tuning** on the tuning seed (0): every method runs every value of its grid
   (``TUNING_GRIDS``; FedAvg has none). The value with the best *validation* accuracy is
   selected per (dataset, alpha, method); the validation split is held out from the
   training clients' data (run-config ``validation-fraction``), never the test set.
2. **Seeds**: the selected value runs on every seed of the preset (the tuning run is
   reused for seed 0). A seed changes partition, client sampling and initialization together.
3. **Report**: test accuracy mean +- std over seeds at the selected values, the paired
   difference to FedAvg (same seeds) with its paired t-test p-value, and, for comparison with
   the paper (which reports the best gamma on test), a "best on test" column from the tuning seed,
   and a plain verdict of FedSign against each baseline at every alpha.

"Final accuracy" is the mean of a run's last ``FINAL_WINDOW`` evaluations (eval-every rounds
apart), which damps the round-to-round swing of non-IID training. FedDyn is reported, as its
official code does, by the plain average of the round's participants (``participant_mean_*``
columns); its server model is in metrics.csv too.

Modules, one job each: ``grid`` (presets, methods and their grids, the cells of a sweep), ``sweep``
(running cells: locks, worker processes, time budget, archiving finished cells), ``analysis`` (reading
finished cells, selection on validation, paired statistics) and ``report`` (the tables, CSV, cells JSON
and curves PNG). ``benchmarks/table1.py`` is the command line.
"""

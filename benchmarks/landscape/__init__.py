"""The paper's landscape figures and claim verdicts, one module per job (CLI: ``benchmarks/landscape_figures.py``).

- :mod:`.common`: what the suites share: networks by key, training through ``train_local``, Fig. 7.
- :mod:`.cnn_suite`: the MNIST cnn / resnet20 figures (Figs. 3, 4, 5, 7, 8, 11, 29).
- :mod:`.bn_suite`: Figs. 3, 4, 5, 7, 8, 11 per network (two BN nets and their BN-free twins) at a given
  evaluation scale; the near-chance CIFAR-10 subset run.
- :mod:`.trained_suite`: the same figures on networks trained to convergence (cached weights, resumable).
- :mod:`.claims`: the claim rules and the CLAIMS.md / claims_table.md writer.
"""

"""Evaluation (layer 5): loading a trained run (:mod:`~acn.eval.load`), the codes of whole splits
(:mod:`~acn.eval.codes`), the paper's compression numbers (:mod:`~acn.eval.code_lengths`, with
the neighbour pools of :mod:`~acn.eval.pools`), the classification probes
(:mod:`~acn.eval.probe`), and ``acn eval``'s whole measurement (:mod:`~acn.eval.measure`)."""

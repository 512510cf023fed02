"""Experiments (layer 7): procedures that train, evaluate and report several models: the
paper's tables (:mod:`~acn.experiments.reproduce`), the digits demo built on them
(:mod:`~acn.experiments.demo`), and the benchmarks (:mod:`~acn.experiments.bench`)."""

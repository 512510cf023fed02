"""The code bank (layer 3): one stored code per training example with exact k-nearest-neighbour
search (:mod:`~acn.bank.codebank`; its exact distances and canonical order in
:mod:`~acn.bank.exact`), the candidate search back-ends and their certified error bounds
(:mod:`~acn.bank.search`, :mod:`~acn.bank.bounds`), how the bank is shared by the processes of a
group (:mod:`~acn.bank.placement`), and the greedy tour through a set of codes
(:mod:`~acn.bank.tour`, exact at scale through a k-NN graph: :mod:`~acn.bank.tourgraph`).
Knows no networks and no datasets."""

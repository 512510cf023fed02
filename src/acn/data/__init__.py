"""Data (layer 3): what a model must know about its data (:mod:`~acn.data.info`), the datasets
and the resumable order in which training visits them (:mod:`~acn.data.datasets`), the readers
of the standard on-disk formats (:mod:`~acn.data.formats`) and their checksummed downloads
(:mod:`~acn.data.download`). Knows no networks."""

"""Storage (layer 2): training checkpoints (:mod:`~acn.store.checkpoint`), shareable exported
folders (:mod:`~acn.store.exported`) and the Hugging Face Hub (:mod:`~acn.store.hub`). Bytes and
tensors, checked on load; never a model (rebuilding one is :class:`acn.model.ACN`'s job)."""

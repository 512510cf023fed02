"""Readers of the datasets' files as their publishers distribute them: what they share
(:mod:`~acn.data.formats.base`), MNIST (:mod:`~acn.data.formats.mnist`), CIFAR-10
(:mod:`~acn.data.formats.cifar`), ImageNet, CelebA and image folders
(:mod:`~acn.data.formats.images`, cached by :mod:`~acn.data.formats.cache`), and the name ->
reader table (:mod:`~acn.data.formats.registry`)."""

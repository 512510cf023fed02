"""The networks and distributions (layer 3): Gaussian and mixture log-densities
(:mod:`~acn.nn.distributions`), the pixel likelihoods (:mod:`~acn.nn.likelihoods`,
:mod:`~acn.nn.logistic`), the encoder, decoders and gated PixelCNN, the priors, the fitted
unconditional density over codes (:mod:`~acn.nn.density`), and the config names -> parts tables
(:mod:`~acn.nn.build`). ``nn.Module``\\ s and pure functions: no I/O."""

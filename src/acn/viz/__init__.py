"""Pictures and the report (layer 6): image grids and plots (:mod:`~acn.viz.grid`), the sampling
pictures of ``acn sample`` (:mod:`~acn.viz.samples`, modes in :mod:`~acn.viz.modes`), latent
maps (:mod:`~acn.viz.latent_maps`) and the HTML report (:mod:`~acn.viz.report`)."""

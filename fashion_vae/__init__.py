"""Library code for the Fashion-MNIST VAE pipeline.

Stage scripts in ``stages/`` stay thin: they load their section of ``params.yaml``
and call the functions here. Nothing in this package depends on DVC.
"""

"""The MLP VAE kind (Kingma & Welling 2014), unconditional or label-conditioned (Sohn et al. 2015): config.py (its
params section), model.py (network, loss, sampling, likelihood bounds), trainer.py. Kept light: genlab.registry
imports config.py alone to validate params.
"""

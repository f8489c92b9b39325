"""The MLP GAN kind (Goodfellow et al. 2014), unconditional or label-conditioned (Mirza & Osindero 2014, with a
projection discriminator, Miyato & Koyama 2018): config.py (its params section), model.py (networks, losses,
sampling), trainer.py (alternating steps). Kept light: genlab.registry imports config.py alone to validate params.
"""

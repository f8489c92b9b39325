"""A model kind written only to prove the plug-in seam (tests/test_plugin.py copies it into a scratch project's
src/genlab/models/): independent Gaussian pixels, N(mean, std^2) per pixel, fitted by maximum likelihood. A
deliberately poor generative model; what matters is that it trains, renders and evaluates with no edit anywhere
else."""

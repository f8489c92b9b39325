"""genlab: reproducible GAN and VAE on MNIST."""

__version__ = "0.1.0"

"""DiffHEG, the conditional diffusion generator of DHNS (method section 2).

- :class:`NoiseSchedule`: the DDPM math (``add_noise``, ``step``, ``step_to``, ``reverse_timesteps``),
  all tensors buffers;
- :class:`Denoiser`: the noise-prediction network ``eps_theta(x_t, t, c)``;
- :class:`DiffHEG`: both composed: the training loss and the reverse chain that yields the hardness levels.
"""

from dhns_search.diffusion.denoiser import Denoiser, sinusoidal_embedding
from dhns_search.diffusion.generator import DiffHEG
from dhns_search.diffusion.schedule import NOISE_ABAR, SCHEDULE_KINDS, NoiseSchedule

__all__ = ["NOISE_ABAR", "SCHEDULE_KINDS", "Denoiser", "DiffHEG", "NoiseSchedule", "sinusoidal_embedding"]

import jax
import numpy as np
import pytest

import sparseopt_adapters  # noqa: F401  (turns on float64)

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def rng():
    return np.random.default_rng(0)

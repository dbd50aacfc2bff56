from hypothesis import settings

# Torch's first call of an op can take ~1 s on a cold 2-core machine: no deadlines.
settings.register_profile("arca", deadline=None, max_examples=60)
settings.load_profile("arca")

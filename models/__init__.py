"""Model specs, the zoo, export and parity: the bottom layer every other folder may import."""

__version__ = "0.1.0"  # the one version number of twinserve (the gateway image has no package metadata)

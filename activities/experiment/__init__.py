"""The experiment's stages, in the order they run: admission (before anything starts),
preprocess, prevalidate, plan; after the provider, mitigate and postprocess."""

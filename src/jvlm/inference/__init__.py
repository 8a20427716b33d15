"""Generation: the engine (token ids in, token ids out), its requests, caches and kernels.

    from jvlm.inference import Engine, SamplingParams, build_request
    engine = Engine(model, processor, feature_cache=FeatureCache(), prefix_cache=PrefixCache())
    result = engine.generate(build_request(processor, "What is this?", ["photo.jpg"],
                                           params=SamplingParams(max_new_tokens=64),
                                           feature_cache=engine.feature_cache))
"""

from importlib import import_module

# Names resolve on first use, so that importing one light submodule (``reasoning``, ``request``)
# does not load the engine and torch with it.
_WHERE = {
    "Engine": "engine",
    "FeatureCache": "feature_cache",
    "PrefixCache": "feature_cache",
    "build_request": "prompt",
    "ImageInput": "request",
    "Request": "request",
    "Result": "request",
    "SamplingParams": "request",
    "TokenEvent": "request",
    "check_budget": "request",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f"jvlm.inference.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'jvlm.inference' has no attribute {name!r}")


__all__ = [
           "Engine",
           "FeatureCache",
           "ImageInput",
           "PrefixCache",
           "Request",
           "Result",
           "SamplingParams",
           "TokenEvent",
           "build_request",
           "check_budget",
]

"""Generation: the engine (token ids in, token ids out), its requests, caches and kernels.

    from jvlm.inference import Engine, SamplingParams, build_request
    engine = Engine(model, processor, feature_cache=FeatureCache(), prefix_cache=PrefixCache())
    result = engine.generate(build_request(processor, "What is this?", ["photo.jpg"],
                                           params=SamplingParams(max_new_tokens=64),
                                           feature_cache=engine.feature_cache))
"""

from jvlm.inference.engine import Engine
from jvlm.inference.feature_cache import FeatureCache, PrefixCache
from jvlm.inference.prompt import build_request
from jvlm.inference.request import (
           ImageInput,
           Request,
           Result,
           SamplingParams,
           TokenEvent,
           check_budget,
)

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

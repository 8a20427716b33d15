"""Image fetching moved to ``jvlm.media`` (one fetcher for the server, the CLI and the
library); these names stay importable from here for code written against the old path."""

from jvlm.media import (  # noqa: F401
    MediaError,
    MediaPolicy,
    Resolver,
    check_image_count,
    decode_data_uri,
    fetch_image_bytes,
    is_forbidden_address,
    sniff_image_format,
    validate_image_bytes,
)

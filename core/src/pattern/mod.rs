//! Channels and patterns: validation, matching, containment and the subscription index.

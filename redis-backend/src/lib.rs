//! Placeholder: the Redis backend lands with its issue.

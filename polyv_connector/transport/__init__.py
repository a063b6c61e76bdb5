"""HTTP transport: the pooled client, the response classifier, retry policy and rate limit."""

//! HTTP Cage: reverse proxy verifying RFC 9421 signed requests (ed25519, RFC 9530 content-digest), replay cache, rate limits, timeouts, signed audit receipts.

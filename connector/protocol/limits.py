"""Numbers the platform documents for the HTTP channel (spec and docs/protocol.md)."""

MAX_PAYLOAD_BYTES = 131_072
MAX_TOPIC_BYTES = 128
MAX_CLIENT_ID_CHARS = 64
TIMESTAMP_VALIDITY_MS = 15 * 60 * 1000
TOKEN_LIFETIME_SECONDS = 7 * 24 * 3600
DEVICE_MESSAGES_PER_SECOND = 30
ACCOUNT_REQUESTS_PER_SECOND = 10_000
AUTH_PATH = "/auth"
TOPIC_PATH_PREFIX = "/topic"
AUTH_CONTENT_TYPE = "application/json"
PUBLISH_CONTENT_TYPE = "application/octet-stream"

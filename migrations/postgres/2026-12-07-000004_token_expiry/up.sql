-- Tokens that end (issue 27): past expires_at a token is refused as a revoked one is.
ALTER TABLE tokens ADD COLUMN expires_at TIMESTAMP;

-- Keyword search over memories when a strong read is answered from Postgres.
CREATE INDEX memories_content_fts ON memories USING gin (to_tsvector('simple', content));

-- Which index follows each replication slot of this database: a slot is
-- consumed by one index only (two would each miss what the other was sent).
-- An index renews its claim while it runs; a claim not renewed for a minute
-- lapses, and another index may take the slot over.
CREATE TABLE crmsearch_slot_claims (
    slot_name text PRIMARY KEY,
    owner uuid NOT NULL,
    index_dir text NOT NULL,
    host text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now()
);

-- Tenant shards (docs/sharding.md). A deployment without shards has none of
-- these rows and streams publication `crmsearch`, every tenant. A sharded
-- one runs each crmsearch process with CRMSEARCH_SHARD; the process streams
-- the publication `crmsearch_shard_<name>`, whose row filter lists the
-- tenants of its shard, so Postgres itself sends each shard only its rows.

-- A shard, and the one character that begins the route tag of every tenant
-- created on it (nginx reads the tag from the key; see below).
CREATE TABLE crmsearch_shards (
    name       text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9]{0,15}$'),
    code       text NOT NULL UNIQUE CHECK (code ~ '^[0-9A-Za-z]$'),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Where each tenant lives: `shard` serves it (the routes point there);
-- `also_on` holds it too while it moves (the target before the switch,
-- the source after it, until the move ends). `empty`: placed in the
-- transaction that created the tenant, so it has no rows to load.
CREATE TABLE crmsearch_tenant_shards (
    tenant_id  uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    shard      text NOT NULL REFERENCES crmsearch_shards (name),
    also_on    text REFERENCES crmsearch_shards (name),
    empty      boolean NOT NULL DEFAULT false,
    changed_at timestamptz NOT NULL DEFAULT now(),
    CHECK (also_on IS NULL OR also_on <> shard)
);
CREATE INDEX crmsearch_tenant_shards_shard ON crmsearch_tenant_shards (shard);

-- Which index (by its slot) holds which tenant of its shard in full: written
-- by the index once it has a tenant's documents (a snapshot, or the
-- backfill of a tenant moving in); a move waits for every replica's row.
CREATE TABLE crmsearch_shard_ready (
    slot_name text NOT NULL,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    lsn       pg_lsn NOT NULL,
    ready_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_name, tenant_id)
);

-- the shard an index follows, for `crmsearch shard list` and moves
ALTER TABLE crmsearch_slot_claims ADD COLUMN shard text;

-- A tenant's route tag: five characters that begin the public part of each
-- key minted for it (`crm_<tag><3 random>_<secret>`), so that nginx can pick
-- the tenant's shard from the key alone. Unique; its first character is the
-- code of the shard the tenant was created on, or random without shards.
CREATE FUNCTION crmsearch_new_route_tag(first text) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
    tag text;
BEGIN
    LOOP
        tag := coalesce(first, substr(alphabet, 1 + floor(random() * 62)::int, 1));
        FOR i IN 1..4 LOOP
            tag := tag || substr(alphabet, 1 + floor(random() * 62)::int, 1);
        END LOOP;
        EXIT WHEN NOT EXISTS (SELECT 1 FROM tenants WHERE route_tag = tag);
    END LOOP;
    RETURN tag;
END $$;
ALTER TABLE tenants ADD COLUMN route_tag text UNIQUE CHECK (route_tag ~ '^[0-9A-Za-z]{5}$');
UPDATE tenants SET route_tag = crmsearch_new_route_tag(NULL);
ALTER TABLE tenants ALTER COLUMN route_tag SET NOT NULL,
    ALTER COLUMN route_tag SET DEFAULT crmsearch_new_route_tag(NULL);

-- A publication's row filter may only name columns of the replica identity
-- (for its updates and deletes): (tenant_id, id) instead of the key alone.
-- Deletes then carry the tenant too; nothing else in the WAL changes.
CREATE UNIQUE INDEX contacts_tenant_id_id ON contacts (tenant_id, id);
ALTER TABLE contacts REPLICA IDENTITY USING INDEX contacts_tenant_id_id;
CREATE UNIQUE INDEX memories_tenant_id_id ON memories (tenant_id, id);
ALTER TABLE memories REPLICA IDENTITY USING INDEX memories_tenant_id_id;
ALTER TABLE companies REPLICA IDENTITY USING INDEX companies_tenant_id_id_key;

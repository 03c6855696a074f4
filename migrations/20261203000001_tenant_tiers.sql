-- A tenant's tier names its rate-limit budgets (the limits themselves are
-- the servers' configuration). Changed by the master key
-- (`PATCH /v1/tenants/{id}`) or by SQL; either way the tenant is named on
-- `crmsearch_keys` so that servers forget the keys they trusted with the old
-- tier.
ALTER TABLE tenants ADD COLUMN tier text NOT NULL DEFAULT 'free'
    CHECK (tier IN ('free', 'basic', 'pro', 'enterprise'));

CREATE FUNCTION crmsearch_notify_tenant() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('crmsearch_keys', 'tenant:' || OLD.id::text);
    RETURN NULL;
END $$;

CREATE TRIGGER tenants_notify AFTER UPDATE OF tier ON tenants
    FOR EACH ROW WHEN (OLD.tier IS DISTINCT FROM NEW.tier)
    EXECUTE FUNCTION crmsearch_notify_tenant();

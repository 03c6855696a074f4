-- A key that is revoked, changed or deleted (by the API, psql or a cascade
-- from its tenant) is named on the channel `crmsearch_keys` when the change
-- commits: servers that trust keys they validated recently forget it at once.
CREATE FUNCTION crmsearch_notify_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('crmsearch_keys', OLD.prefix);
    RETURN NULL;
END $$;

CREATE TRIGGER api_keys_notify AFTER UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION crmsearch_notify_key();

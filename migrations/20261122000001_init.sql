-- crmsearch: the source of truth. The search index follows these tables by
-- logical replication (publication `crmsearch`).
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE tenants (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored as SHA-256 of the whole key; only the public prefix is
-- kept in clear so a key can be named (and revoked) without revealing it.
CREATE TABLE api_keys (
    prefix     text PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    role       text NOT NULL CHECK (role IN ('search', 'agent', 'write', 'admin')),
    key_hash   bytea NOT NULL CHECK (length(key_hash) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE FUNCTION crmsearch_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TABLE companies (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    external_id text,
    name        text NOT NULL,
    domain      text,
    industry    text,
    city        text,
    region      text,
    country     text,
    tags        text[] NOT NULL DEFAULT '{}',
    notes       text,
    custom      jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, external_id),
    UNIQUE (tenant_id, id)
);
CREATE TRIGGER companies_updated_at BEFORE UPDATE ON companies
    FOR EACH ROW EXECUTE FUNCTION crmsearch_touch_updated_at();

CREATE TABLE contacts (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    external_id       text,
    first_name        text,
    last_name         text,
    emails            text[] NOT NULL DEFAULT '{}',
    -- phones as entered, and beside them the normalised form of each
    -- (E.164 where parseable, else its digits), position for position.
    phones            text[] NOT NULL DEFAULT '{}',
    phones_normalized text[] NOT NULL DEFAULT '{}',
    title             text,
    company_id        uuid,
    -- derived from company_id by the triggers below; never written by clients
    company_name      text,
    city              text,
    region            text,
    country           text,
    lifecycle_stage   text,
    owner_id          text,
    tags              text[] NOT NULL DEFAULT '{}',
    notes             text,
    custom            jsonb NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, external_id),
    -- a contact can only point at a company of its own tenant
    FOREIGN KEY (tenant_id, company_id) REFERENCES companies (tenant_id, id)
        ON DELETE SET NULL (company_id)
);
CREATE INDEX contacts_company ON contacts (tenant_id, company_id) WHERE company_id IS NOT NULL;
CREATE INDEX contacts_tenant_created ON contacts (tenant_id, created_at, id);

-- company_name follows company_id, whoever writes the row (the API, psql,
-- another program), so the replication stream always carries it current.
CREATE FUNCTION crmsearch_contact_company_name() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.company_id IS NULL THEN
        NEW.company_name := NULL;
    ELSIF TG_OP = 'INSERT' OR NEW.company_id IS DISTINCT FROM OLD.company_id
          OR NEW.company_name IS DISTINCT FROM OLD.company_name THEN
        SELECT name INTO NEW.company_name FROM companies
         WHERE id = NEW.company_id AND tenant_id = NEW.tenant_id;
    END IF;
    NEW.updated_at := CASE WHEN TG_OP = 'INSERT' THEN NEW.updated_at ELSE now() END;
    RETURN NEW;
END $$;
CREATE TRIGGER contacts_company_name BEFORE INSERT OR UPDATE ON contacts
    FOR EACH ROW EXECUTE FUNCTION crmsearch_contact_company_name();

-- a rename fans out to the contacts that carry the name
CREATE FUNCTION crmsearch_company_renamed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE contacts SET company_name = NEW.name
     WHERE tenant_id = NEW.tenant_id AND company_id = NEW.id
       AND company_name IS DISTINCT FROM NEW.name;
    RETURN NULL;
END $$;
CREATE TRIGGER companies_renamed AFTER UPDATE OF name ON companies
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name)
    EXECUTE FUNCTION crmsearch_company_renamed();

CREATE TABLE memories (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_id    text NOT NULL,
    subject_id  text,
    session_id  text,
    kind        text NOT NULL CHECK (kind IN ('fact', 'preference', 'episode', 'summary')),
    content     text NOT NULL,
    importance  real NOT NULL DEFAULT 0.5 CHECK (importance BETWEEN 0 AND 1),
    embedding   vector(384),
    metadata    jsonb NOT NULL DEFAULT '{}',
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX memories_scope ON memories (tenant_id, agent_id, subject_id);
CREATE INDEX memories_embedding ON memories USING hnsw (embedding vector_cosine_ops);
CREATE TRIGGER memories_updated_at BEFORE UPDATE ON memories
    FOR EACH ROW EXECUTE FUNCTION crmsearch_touch_updated_at();

CREATE PUBLICATION crmsearch FOR TABLE companies, contacts, memories;

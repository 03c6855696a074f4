-- Bulk contacts name their company by name (CRM exports carry the name, not
-- our id): found case- and space-insensitively within the tenant.
CREATE INDEX companies_tenant_name ON companies (tenant_id, lower(btrim(name)));

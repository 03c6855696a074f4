-- A key may belong to one agent: it then reads and writes only that agent's memories.
ALTER TABLE api_keys ADD COLUMN agent_id text;

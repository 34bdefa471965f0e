-- vigil_reader: the role the dashboard and the REST API connect as. SELECT only, on what they
-- read; it can change nothing. Roles are per server, so an existing one is reused. Its
-- password is set by `vigil db migrate` from VIGIL_READER_PASSWORD.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vigil_reader') THEN
        CREATE ROLE vigil_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO vigil_reader', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO vigil_reader;
GRANT SELECT ON anomaly_events TO vigil_reader;
